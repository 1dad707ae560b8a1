"""A DICOM node (a PACS, a modality, a viewer) as DIMSE addresses it: AE title, host and port, and whether it
speaks DICOM TLS (PS3.15 B.1) with which TLS files. The viewer takes those from its Settings; the command line
and a service from the environment:

    MEDEDGE_DICOM_CA                       the CA certificate (PEM) that signed the nodes' (else the system's)
    MEDEDGE_DICOM_CERT, MEDEDGE_DICOM_KEY  this workstation's certificate and key, for nodes that ask for one and
                                           for receiving a C-MOVE over DICOM TLS
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

from security.pem import check_pem_files

AE_TITLE_SYNTAX = "1-16 characters of printable ASCII, no backslash"


def checked_ae_title(title: str, what: str = "AE title") -> str:
    """`title` when DICOM allows it as an AE title (PS3.5 AE), else ValueError saying why."""
    if not 1 <= len(title.strip()) <= 16 or not title.isascii() or not title.isprintable() or "\\" in title:
        raise ValueError(f"{what} {title!r}: expected {AE_TITLE_SYNTAX}")
    return title.strip()


@dataclass(frozen=True)
class PacsTls:
    """PEM files for TLS with PACS nodes: the CA that signed their certificates (empty: the system's), and this
    workstation's certificate and key, for nodes that ask for one and for receiving a C-MOVE over DICOM TLS."""

    ca_file: str = ""
    certificate_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        if bool(self.certificate_file) != bool(self.key_file):
            raise ValueError("this workstation's certificate for the PACS needs its key, and the key its certificate")
        for what, path in (("PACS CA", self.ca_file), ("workstation certificate", self.certificate_file),
                           ("workstation key", self.key_file)):
            if path and not os.path.isfile(path):
                raise ValueError(f"{what} file not found: {path}")

    @classmethod
    def from_environment(cls, ca_variable: str = "MEDEDGE_DICOM_CA") -> PacsTls:
        """The command line's and a service's: MEDEDGE_DICOM_CA (or `ca_variable`), MEDEDGE_DICOM_CERT/KEY."""
        return cls(os.environ.get(ca_variable, ""), os.environ.get("MEDEDGE_DICOM_CERT", ""),
                   os.environ.get("MEDEDGE_DICOM_KEY", ""))

    def check(self) -> None:
        """ValueError unless the files are PEM, as TLS will read them: where a person names them (Settings' OK, the
        environment of the command line or a service), not each time settings are built."""
        check_pem_files(self.ca_file, self.certificate_file, self.key_file, "PACS")

    def client(self) -> ssl.SSLContext:
        """The context to reach a node: its CA, and this workstation's certificate when there is one."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file or None)
        if self.certificate_file:
            context.load_cert_chain(self.certificate_file, self.key_file)
        return context

    def server(self) -> ssl.SSLContext:
        """The context to be reached by a node (a C-MOVE's images sent back over DICOM TLS): this workstation's
        certificate, and the node's certificate required and checked against the CA."""
        if not self.certificate_file:
            raise ValueError("receiving over DICOM TLS needs this workstation's certificate and key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca_file or None)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(self.certificate_file, self.key_file)
        return context


@dataclass(frozen=True)
class DicomNode:
    ae_title: str
    host: str
    port: int
    tls: bool = False  # DICOM TLS: written `tls:AET@host:port`
    name: str = field(default="", compare=False)  # what people call it ("Main PACS"), when set
    tls_files: PacsTls = field(default_factory=PacsTls.from_environment, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", checked_ae_title(self.ae_title, "the node's AE title"))
        if not self.host.strip():
            raise ValueError("a DICOM node needs a host")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"DICOM port must lie in 1..65535, got {self.port}")

    @classmethod
    def parse(cls, text: str, tls_files: PacsTls | None = None) -> DicomNode:
        """`AET@host:port` (e.g. ORTHANC@pacs.example.org:4242), `tls:AET@host:port` for DICOM TLS; ValueError
        naming what is wrong. `tls_files`: None, the environment's."""
        text = text.strip()
        tls = text.lower().startswith("tls:")
        title, at, address = text[4 if tls else 0:].rpartition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon or not port.isdigit():
            raise ValueError(f"DICOM node {text!r}: expected AET@host:port, e.g. ORTHANC@pacs.example.org:4242 "
                             "(tls:AET@host:port for DICOM TLS)")
        return cls(title, host.strip("[]"), int(port), tls, tls_files=tls_files or PacsTls.from_environment())

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls:' if self.tls else ''}{self.ae_title}@{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.name} ({self.address})" if self.name else self.address
