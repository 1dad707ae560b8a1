"""TLS files as a person names them (Settings, the command line): read now as the TLS library will read them, so a
file that is not what its field asks is refused with the reason at once rather than at the first connection —
and a certificate out of its validity dates too, which the other side would refuse with a vaguer reason."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from os import PathLike

Path_ = str | PathLike[str] | None
EXPIRY_WARNING = timedelta(days=30)
_NO_PROMPT = b""  # an encrypted key is refused, not asked for on the terminal (nobody may be there to answer)


def check_pem_files(ca: Path_, certificate: Path_, key: Path_, peer: str) -> None:
    """ValueError unless each file given (existing) is what its field asks: the CA one or more PEM certificates, this
    workstation's certificate a PEM certificate in its validity dates and the key its private key. `peer` ("edge",
    "PACS") names whose connection they are for in the reason."""
    try:
        if ca:
            ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, ValueError):
        raise ValueError(f"the CA file for the {peer} is not a PEM certificate: {ca}") from None
    if certificate and key:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(str(certificate), str(key), password=_NO_PROMPT)
        except (ssl.SSLError, ValueError):
            raise ValueError(f"this workstation's certificate and key for the {peer} are not a PEM certificate and "
                             f"its private key (not encrypted): {certificate}, {key}") from None
        in_date(certificate, f"this workstation's certificate for the {peer}")


def check_server_files(certificate: Path_, key: Path_, client_ca: Path_, what: str) -> list[str]:
    """ValueError unless a server's certificate and key (`what` names the options they came from) are a PEM
    certificate in its validity dates and its private key, and the CA for its clients (mutual TLS) PEM; the
    warnings to log (a certificate that expires within 30 days)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(certificate), str(key),
                                                                            password=_NO_PROMPT)
    except (ssl.SSLError, ValueError):
        raise ValueError(f"{what}: not a PEM certificate and its key (not encrypted): {certificate}, {key}") from None
    except OSError as exc:  # (not there, not readable)
        raise ValueError(f"{what}: {exc.strerror or exc}: {certificate}, {key}") from None
    if client_ca:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        except (ssl.SSLError, ValueError, OSError):
            raise ValueError(f"the CA for the clients' certificates is not a PEM certificate: {client_ca}") from None
    return in_date(certificate, "the server's certificate")


def in_date(certificate: Path_, what: str) -> list[str]:
    """ValueError when the (first) certificate in the file has expired or is not valid yet; a warning when it
    expires within 30 days."""
    from cryptography import x509

    try:
        with open(str(certificate), "rb") as stream:
            first = x509.load_pem_x509_certificates(stream.read())[0]
    except (ValueError, IndexError):  # what OpenSSL took, cryptography's stricter reader may not
        raise ValueError(f"{what}: its validity dates cannot be read: {certificate}") from None
    now = datetime.now(UTC)
    until, since = first.not_valid_after_utc, first.not_valid_before_utc
    if until < now:
        raise ValueError(f"{what} expired on {until:%Y-%m-%d}: {certificate}")
    if since > now:
        raise ValueError(f"{what} is not valid before {since:%Y-%m-%d %H:%M} UTC: {certificate}")
    return [f"{what} expires on {until:%Y-%m-%d}: renew it"] if until - now < EXPIRY_WARNING else []
