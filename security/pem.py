"""TLS files as a person names them (Settings, the command line): read now as the TLS library will read them, so a
file that is not what its field asks is refused with the reason at once rather than at the first connection."""

from __future__ import annotations

import ssl
from os import PathLike

Path_ = str | PathLike[str] | None


def check_pem_files(ca: Path_, certificate: Path_, key: Path_, peer: str) -> None:
    """ValueError unless each file given (existing) is what its field asks: the CA one or more PEM certificates, this
    workstation's certificate a PEM certificate and the key its private key. `peer` ("edge", "PACS") names whose
    connection they are for in the reason."""
    try:
        if ca:
            ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, ValueError):
        raise ValueError(f"the CA file for the {peer} is not a PEM certificate: {ca}") from None
    try:
        if certificate and key:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(certificate), str(key))
    except (ssl.SSLError, ValueError):
        raise ValueError(f"this workstation's certificate and key for the {peer} are not a PEM certificate and its "
                         f"private key: {certificate}, {key}") from None
