"""A DICOM node (a PACS, a modality, a viewer) as DIMSE addresses it: AE title, host and port."""

from __future__ import annotations

from dataclasses import dataclass

AE_TITLE_SYNTAX = "1-16 characters of printable ASCII, no backslash"


def checked_ae_title(title: str, what: str = "AE title") -> str:
    """`title` when DICOM allows it as an AE title (PS3.5 AE), else ValueError saying why."""
    if not 1 <= len(title.strip()) <= 16 or not title.isascii() or not title.isprintable() or "\\" in title:
        raise ValueError(f"{what} {title!r}: expected {AE_TITLE_SYNTAX}")
    return title.strip()


@dataclass(frozen=True)
class DicomNode:
    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", checked_ae_title(self.ae_title, "the node's AE title"))
        if not self.host.strip():
            raise ValueError("a DICOM node needs a host")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"DICOM port must lie in 1..65535, got {self.port}")

    @classmethod
    def parse(cls, text: str) -> DicomNode:
        """`AET@host:port` (e.g. ORTHANC@pacs.example.org:4242); ValueError naming what is wrong."""
        title, at, address = text.strip().rpartition("@")
        host, colon, port = address.rpartition(":")
        if not at or not colon or not port.isdigit():
            raise ValueError(f"DICOM node {text!r}: expected AET@host:port, e.g. ORTHANC@pacs.example.org:4242")
        return cls(title, host.strip("[]"), int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"
