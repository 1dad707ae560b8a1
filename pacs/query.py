"""Query and retrieve from a PACS over DIMSE (Study Root): C-FIND for studies and their series, C-GET (or C-MOVE) of
a study's radiograph series into a cache folder. Radiographs only (CR, DX), as the models read them: a study's CT or
ultrasound series stay on the PACS, and the retrieve says so."""

from __future__ import annotations

import os
import re
import ssl
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt

from pacs.dimse import DicomNetworkError, associate, serve
from pacs.nodes import DicomNode
from viewer.names import readable_person_name

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"  # … - MOVE
GET = "1.2.840.10008.5.1.4.1.2.2.3"   # … - GET
RETRIEVED = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
             DigitalXRayImageStorageForProcessing)
RADIOGRAPH_MODALITIES = ("CR", "DX")  # the series a retrieve brings: their images are of the classes above
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class RetrieveCancelled(Exception):
    """The user cancelled a retrieve; the images already received stay in the cache (`retrieved`)."""

    def __init__(self, retrieved: Retrieved) -> None:
        super().__init__(f"retrieve cancelled: {len(retrieved.files)} image(s) received")
        self.retrieved = retrieved


@dataclass(frozen=True)
class StudyQuery:
    """What the PACS search panel asks: each filter left empty matches anything (`*` wildcards allowed)."""

    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    date_from: date | None = None
    date_to: date | None = None
    modalities: tuple[str, ...] = ("CR", "DX")

    def __post_init__(self) -> None:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"study date range: {self.date_from} is after {self.date_to}")
        for text in (self.patient_name, self.patient_id, self.accession_number, *self.modalities):
            if "\\" in text or not text.isprintable():
                raise ValueError(f"search filter {text!r}: no backslashes or control characters")

    @property
    def date_range(self) -> str:
        """DICOM DA range matching: `from-to`, `from-`, `-to`, or empty for any date."""
        if not (self.date_from or self.date_to):
            return ""
        as_da = lambda day: day.strftime("%Y%m%d") if day else ""  # noqa: E731
        return f"{as_da(self.date_from)}-{as_da(self.date_to)}"


@dataclass(frozen=True)
class StudyMatch:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str          # YYYYMMDD as the PACS has it ("" when it has none)
    description: str
    accession_number: str
    modalities: tuple[str, ...]
    images: int | None       # NumberOfStudyRelatedInstances, when the PACS says


@dataclass(frozen=True)
class SeriesMatch:
    series_uid: str
    modality: str
    number: str
    description: str
    images: int | None


@dataclass
class Retrieved:
    files: list[Path] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "UID: why" for instances not kept
    skipped: list[str] = field(default_factory=list)  # the study's series left on the PACS: "CT series #2 (Thorax)"


def radiograph_series(series: Iterable[SeriesMatch], retrieved: Retrieved) -> list[SeriesMatch]:
    """The study's series to retrieve: its radiographs (and a series whose modality the PACS does not say); each
    other one is named in `retrieved.skipped`."""
    kept = []
    for one in series:
        named = (f"{one.modality or 'a'} series" + (f" #{one.number}" if one.number else "")
                 + (f" ({one.description})" if one.description else ""))
        if not (len(one.series_uid) <= 64 and _UID.match(one.series_uid)):  # asked for, it would match every series
            retrieved.skipped.append(f"{named}: the PACS gave no valid Series Instance UID")
        elif one.modality in RADIOGRAPH_MODALITIES or not one.modality:
            kept.append(one)
        else:
            retrieved.skipped.append(named)
    return kept


def expected_images(series: list[SeriesMatch]) -> int | None:
    """How many images the series hold, when the PACS said so for each."""
    counts = [one.images for one in series]
    return None if None in counts else sum(c for c in counts if c is not None)


def _text(ds: Dataset, keyword: str) -> str:
    with warnings.catch_warnings():  # a PACS's invalid value (a date "2024-13-45") is listed as it is, not warned of
        warnings.simplefilter("ignore")
        value = ds.get(keyword, "")
        return " ".join(str(value if value is not None else "").split())


def _count(ds: Dataset, keyword: str) -> int | None:
    try:
        return int(ds.get(keyword)) if ds.get(keyword) not in (None, "") else None
    except (TypeError, ValueError):
        return None


def study_match(found: Dataset) -> StudyMatch | None:
    """A PACS's answer about a study (C-FIND or QIDO-RS), or None without a usable Study Instance UID."""
    uid = _text(found, "StudyInstanceUID")
    if not _UID.match(uid):
        return None  # it could not be retrieved
    value = found.get("ModalitiesInStudy") or []
    modalities = tuple(str(m) for m in (value if isinstance(value, MultiValue) else [value]) if str(m))
    return StudyMatch(uid, readable_person_name(_text(found, "PatientName")), _text(found, "PatientID"),
                      _text(found, "StudyDate"), _text(found, "StudyDescription"), _text(found, "AccessionNumber"),
                      modalities, _count(found, "NumberOfStudyRelatedInstances"))


def series_match(found: Dataset) -> SeriesMatch:
    return SeriesMatch(_text(found, "SeriesInstanceUID"), _text(found, "Modality"), _text(found, "SeriesNumber"),
                       _text(found, "SeriesDescription"), _count(found, "NumberOfSeriesRelatedInstances"))


def newest_first(studies: Iterable[StudyMatch | None]) -> list[StudyMatch]:
    unique = {s.study_uid: s for s in studies if s is not None}  # (a study found under two modalities: once)
    return sorted(unique.values(), key=lambda s: s.study_date, reverse=True)


def by_number(series: Iterable[SeriesMatch]) -> list[SeriesMatch]:
    return sorted(series, key=lambda s: (len(s.number), s.number))


def cache_instance(folder: Path, sop_instance_uid: str, encoded: bytes) -> Path:
    """One retrieved instance into `folder` as `<SOP Instance UID>.dcm`, whole or not at all (written, then
    renamed). ValueError for a UID that is not one (it names the file), OSError from the disk."""
    if len(sop_instance_uid) > 64 or not _UID.match(sop_instance_uid):
        raise ValueError(f"{sop_instance_uid[:70]}: not a valid SOP Instance UID")
    path = folder / f"{sop_instance_uid}.dcm"
    partial = folder / f".{sop_instance_uid}.partial"
    try:
        partial.write_bytes(encoded)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _associate(node: DicomNode, calling_ae: str, timeout_s: float, get: bool = False, move: bool = False,
               handlers=None):
    ae = AE(ae_title=calling_ae)
    roles: list = []  # SCP/SCU role selections (pynetdicom's negotiation items)
    if get:  # C-GET: the PACS sends the images back on this association, so we take the storage SCP role
        ae.add_requested_context(GET)
        for sop_class in RETRIEVED:
            ae.add_requested_context(sop_class, ALL_TRANSFER_SYNTAXES)
            roles.append(build_role(sop_class, scp_role=True))
    elif move:
        ae.add_requested_context(MOVE)
    else:
        ae.add_requested_context(FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return associate(node, ae, timeout_s, ext_neg=roles or None, handlers=handlers)


def _find(node: DicomNode, calling_ae: str, identifier: Dataset, timeout_s: float) -> list[Dataset]:
    assoc = _associate(node, calling_ae, timeout_s)
    matches = []
    try:
        for status, found in assoc.send_c_find(identifier, FIND):
            if not status:
                raise DicomNetworkError(f"{node}: C-FIND got no response (association aborted or timed out: does "
                                        f"the PACS let {calling_ae} query it?)")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01) and found is not None:
                matches.append(found)
            elif code not in (0x0000, 0xFF00, 0xFF01):
                raise DicomNetworkError(f"{node}: C-FIND failed (status 0x{code:04X})")
    finally:
        if assoc.is_established:
            assoc.release()
    return matches


def find_studies(node: DicomNode, query: StudyQuery, calling_ae: str, timeout_s: float = 30.0) -> list[StudyMatch]:
    """The PACS's studies matching `query` (C-FIND, STUDY level), newest first."""
    identifier = Dataset()
    if not all(text.isascii() for text in (query.patient_name, query.patient_id, query.accession_number)):
        # else pydicom would send each character it cannot encode as "?", the one-character wildcard: a search for
        # 张* would match every patient
        identifier.SpecificCharacterSet = "ISO_IR 192"
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.PatientName = query.patient_name
    identifier.PatientID = query.patient_id
    identifier.AccessionNumber = query.accession_number
    identifier.StudyDate = query.date_range
    identifier.ModalitiesInStudy = "\\".join(query.modalities)
    for keyword in ("StudyInstanceUID", "StudyDescription", "StudyTime", "NumberOfStudyRelatedInstances"):
        setattr(identifier, keyword, "")
    return newest_first(study_match(found) for found in _find(node, calling_ae, identifier, timeout_s))


def find_series(node: DicomNode, study_uid: str, calling_ae: str, timeout_s: float = 30.0) -> list[SeriesMatch]:
    """The study's series (C-FIND, SERIES level), by series number."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = study_uid
    for keyword in ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
                    "NumberOfSeriesRelatedInstances"):
        setattr(identifier, keyword, "")
    return by_number(series_match(found) for found in _find(node, calling_ae, identifier, timeout_s))


def get_study(node: DicomNode, study_uid: str, cache: Path, calling_ae: str,
              cancel: threading.Event | None = None, progress: Callable[[int, int | None], None] | None = None,
              timeout_s: float = 60.0, move_port: int = 0) -> Retrieved:
    """Retrieve the study's radiograph series into `cache/<study UID>/<SOP Instance UID>.dcm` (each written whole,
    then renamed), series by series after a C-FIND of them: by C-GET on the same association, or with `move_port`
    by C-MOVE to `calling_ae`, received by a storage SCP on that port for the retrieve's length (the PACS must know
    this AE title at this host and port). The study's other series are named in `skipped`. `progress(received,
    total)` after each image. RetrieveCancelled when `cancel` is set (the images received stay); DicomNetworkError
    when the PACS cannot be reached or fails the retrieve."""
    if not _UID.match(study_uid):
        raise ValueError(f"not a Study Instance UID: {study_uid[:70]!r}")
    result = Retrieved()
    series = radiograph_series(find_series(node, study_uid, calling_ae, timeout_s), result)
    if not series:
        return result
    folder = cache / study_uid
    folder.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    total = expected_images(series)

    def stored(event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        try:
            path = cache_instance(folder, uid, event.encoded_dataset())
        except ValueError as exc:
            result.refused.append(str(exc))
            return 0xC000
        except OSError as exc:
            result.refused.append(f"{uid}: cannot write it into the cache ({exc.strerror or exc})")
            return 0xA700
        with lock:
            result.files.append(path)
        return 0x0000

    receiver = _receiver(calling_ae, move_port, node, stored) if move_port else None
    try:  # the receiver goes with the retrieve, however it ends
        if move_port:
            assoc = _associate(node, calling_ae, timeout_s, move=True)
        else:
            assoc = _associate(node, calling_ae, timeout_s, get=True, handlers=[(evt.EVT_C_STORE, stored)])
        try:
            for one in series:
                identifier = Dataset()
                identifier.QueryRetrieveLevel = "SERIES"
                identifier.StudyInstanceUID = study_uid
                identifier.SeriesInstanceUID = one.series_uid
                responses = (assoc.send_c_move(identifier, calling_ae, MOVE) if move_port
                             else assoc.send_c_get(identifier, GET))
                _follow(responses, node, assoc, result, cancel, progress, total, calling_ae if move_port else None)
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        if receiver is not None:
            receiver.shutdown()
    return result


def _follow(responses, node: DicomNode, assoc, result: Retrieved, cancel: threading.Event | None,
            progress: Callable[[int, int | None], None] | None, total: int | None, move_to: str | None) -> None:
    """One series' C-GET or C-MOVE responses: progress, cancel, and a one-line DicomNetworkError on failure."""
    how = "C-MOVE" if move_to else "C-GET"
    before = len(result.files)
    for status, _ in responses:
        if cancel is not None and cancel.is_set():
            assoc.abort()
            raise RetrieveCancelled(result)
        if not status:
            hint = f"; does the PACS know {move_to} as a destination?" if move_to else ""
            raise DicomNetworkError(f"{node}: {how} got no response (association aborted or timed out{hint})")
        code = int(status.Status)
        remaining = _count(status, "NumberOfRemainingSuboperations")
        if progress is not None:
            this_series = len(result.files) - before + remaining if remaining is not None else None
            progress(len(result.files), total if total is not None else
                     (before + this_series if this_series is not None else None))
        if code == 0xA801:
            raise DicomNetworkError(f"{node}: C-MOVE refused: the PACS does not know {move_to} as a "
                                    "destination (its administrator declares this AE title, host and port)")
        if code not in (0x0000, 0xFF00, 0xB000):
            failed = _count(status, "NumberOfFailedSuboperations")
            raise DicomNetworkError(f"{node}: {how} failed (status 0x{code:04X}"
                                    + (f", {failed} image(s) not sent" if failed else "") + ")")


def _receiver(ae_title: str, port: int, sender: DicomNode, stored: Callable):
    """A storage SCP for the radiographs a C-MOVE sends back, listening on `port` (all interfaces: the PACS
    connects to the address it has for this workstation), letting in the PACS's AE title only — over DICOM TLS
    when the PACS speaks it, its certificate checked against the PACS CA."""
    tls = None
    if sender.tls:
        try:
            tls = sender.tls_files.server()
        except ValueError:
            raise DicomNetworkError(f"{sender}: a C-MOVE over DICOM TLS comes back to this workstation's certificate: "
                                    "give it and its key (or retrieve by C-GET)") from None
        except (ssl.SSLError, OSError) as exc:
            raise DicomNetworkError(f"{sender}: the TLS files cannot be used ({getattr(exc, 'reason', None) or exc}: "
                                    "check the PACS CA, certificate and key)") from None
    ae = AE(ae_title=ae_title)
    ae.require_calling_aet = [sender.ae_title]
    for sop_class in RETRIEVED:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    try:
        return serve(ae, ("", port), [(evt.EVT_C_STORE, stored)], tls)
    except OSError as exc:
        raise DicomNetworkError(f"cannot receive a C-MOVE on port {port}: {exc.strerror or exc}") from None
