"""A PACS node, whichever way it is reached: DIMSE (`AET@host:port`) or DICOMweb (`https://…`). The viewer and
the command line call these; each goes to pacs.dimse / pacs.query or to pacs.dicomweb."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pydicom.dataset import Dataset

from pacs import dicomweb, dimse, query
from pacs.dicomweb import DicomWebNode
from pacs.nodes import DicomNode, PacsTls
from pacs.query import Retrieved, SeriesMatch, StudyMatch, StudyQuery

PacsNode = DicomNode | DicomWebNode


def parse_node(text: str, tls_files: PacsTls | None = None) -> PacsNode:
    """`AET@host:port` or `tls:AET@host:port` (DIMSE), `https://host/path` (DICOMweb), each optionally named:
    `Main PACS = ORTHANC@pacs:4242`; ValueError saying what is wrong. `tls_files`: the viewer's (its Settings);
    None: the environment's."""
    name, equals, address = text.partition("=")
    if not equals or "@" in name or "://" in name:  # no name given (an `=` inside a URL is the URL's)
        name, address = "", text
    address = address.strip()
    node: PacsNode
    if address.lower().startswith(("http://", "https://")):
        node = DicomWebNode(address, tls_files=tls_files or PacsTls.from_environment("MEDEDGE_DICOMWEB_CA"))
    else:
        node = DicomNode.parse(address, tls_files)
    if tls_files is None and (node.url.startswith("https") if isinstance(node, DicomWebNode) else node.tls):
        node.tls_files.check()  # the environment's files, where this node uses them (Settings' are checked at OK)
    return replace(node, name=" ".join(name.split()))


def echo(node: PacsNode, calling_ae: str, timeout_s: float = 10.0) -> float:
    """C-ECHO, or a one-study QIDO-RS search: the round trip in ms."""
    if isinstance(node, DicomWebNode):
        return dicomweb.echo(node, timeout_s)
    return dimse.echo(node, calling_ae, timeout_s)


def find_studies(node: PacsNode, study_query: StudyQuery, calling_ae: str) -> list[StudyMatch]:
    if isinstance(node, DicomWebNode):
        return dicomweb.find_studies(node, study_query)
    return query.find_studies(node, study_query, calling_ae)


def find_series(node: PacsNode, study_uid: str, calling_ae: str) -> list[SeriesMatch]:
    if isinstance(node, DicomWebNode):
        return dicomweb.find_series(node, study_uid)
    return query.find_series(node, study_uid, calling_ae)


def get_study(node: PacsNode, study_uid: str, cache: Path, calling_ae: str, cancel: threading.Event | None = None,
              progress: Callable[[int, int | None], None] | None = None, move_port: int = 0) -> Retrieved:
    """C-GET (or with `move_port` C-MOVE to this workstation) or WADO-RS into `cache/<study UID>/`."""
    if isinstance(node, DicomWebNode):
        return dicomweb.get_study(node, study_uid, cache, cancel, progress)
    return query.get_study(node, study_uid, cache, calling_ae, cancel, progress, move_port=move_port)


def store(node: PacsNode, datasets: list[Dataset], calling_ae: str) -> None:
    """C-STORE or STOW-RS."""
    if isinstance(node, DicomWebNode):
        dicomweb.store(node, datasets)
    else:
        dimse.store(node, datasets, calling_ae)
