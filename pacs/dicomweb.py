"""A PACS over DICOMweb (dicomweb-client): QIDO-RS to search, WADO-RS to retrieve into the cache, STOW-RS to store
the results. HTTPS beyond this machine; HTTP basic auth or a bearer token from the system's keyring
(pacs.credentials); the CA to trust from the Settings (the viewer) or, on the command line and in a service, from
MEDEDGE_DICOMWEB_CA.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit
from urllib.request import getproxies

import requests
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite

from pacs.credentials import sign_in_for
from pacs.dimse import DicomNetworkError
from pacs.nodes import PacsTls
from pacs.query import (
    RetrieveCancelled,
    Retrieved,
    SeriesMatch,
    StudyMatch,
    StudyQuery,
    by_number,
    cache_instance,
    expected_images,
    newest_first,
    radiograph_series,
    series_match,
    study_match,
)

STUDY_FIELDS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "StudyDescription", "AccessionNumber",
                "ModalitiesInStudy", "NumberOfStudyRelatedInstances")
SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
AS_STORED = (("application/dicom", "*"),)  # WADO-RS: each instance in the transfer syntax the PACS has it in


@dataclass(frozen=True)
class DicomWebNode:
    url: str  # the service's base URL, e.g. https://pacs.example.org/dicom-web
    name: str = field(default="", compare=False)  # what people call it, when set
    tls_files: PacsTls = field(default_factory=lambda: PacsTls.from_environment("MEDEDGE_DICOMWEB_CA"),
                                compare=False, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"DICOMweb URL {self.url!r}: expected https://host[:port]/path")
        if parts.username or parts.password:
            raise ValueError("DICOMweb URL: no credentials in it (they go into the keyring: Settings → PACS "
                             "sign-in, never into the settings file)")
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_NAMES:
            raise ValueError(f"DICOMweb URL {self.url!r}: patient data beyond this machine goes over https only")
        object.__setattr__(self, "url", self.url.rstrip("/"))

    def __str__(self) -> str:
        return f"{self.name} ({self.url})" if self.name else self.url


def _session(node: DicomWebNode) -> requests.Session:
    session = requests.Session()
    sign_in = sign_in_for(node.url)
    if sign_in.token:
        session.headers["Authorization"] = f"Bearer {sign_in.token}"
    elif sign_in.user:
        session.auth = (sign_in.user, sign_in.password)
    if node.tls_files.ca_file:
        # requests lets REQUESTS_CA_BUNDLE (set system-wide on many machines) override a session's own CA: the
        # environment is not trusted for that, only for the proxies it names
        session.trust_env = False
        session.proxies = getproxies()
        session.verify = node.tls_files.ca_file
    return session


def _client(node: DicomWebNode, timeout_s: float):
    from dicomweb_client.api import DICOMwebClient  # (imported when a DICOMweb node is used)

    return DICOMwebClient(node.url, session=_session(node), timeout=timeout_s)


def _failure(node: DicomWebNode, exc: Exception) -> DicomNetworkError:
    """One line for what went wrong talking to `node`."""
    if isinstance(exc, requests.exceptions.SSLError):
        reason = "TLS: the server's certificate is not trusted (give its CA as the PACS CA)"
    elif isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        reason = "no answer (is the server running, and the URL right?)"
    elif isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        reason = {401: f"not authorised (check the sign-in: {sign_in_for(node.url).kind})",
                  403: "forbidden for these credentials", 404: "no DICOMweb service at this URL"}.get(
            code, f"the server answered HTTP {code}")
    else:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    return DicomNetworkError(f"{node}: {reason}")


def _qido(node: DicomWebNode, path: str, parameters: Mapping[str, object], timeout_s: float) -> list[Dataset]:
    """A QIDO-RS search. Asked here rather than through dicomweb-client, which percent-encodes `*` and `^`:
    Orthanc (1.10) does not decode them, and `GALLO*` then matched nothing."""
    query = urlencode(parameters, doseq=True, safe="*^,")
    try:
        reply = _session(node).get(f"{node.url}/{path}", params=query, timeout=timeout_s,
                               headers={"Accept": "application/dicom+json"})
        reply.raise_for_status()
        found = reply.json() if reply.status_code != 204 and reply.content else []
    except Exception as exc:  # requests raises many types
        raise _failure(node, exc) from None
    return [Dataset.from_json(item) for item in found]


def echo(node: DicomWebNode, timeout_s: float = 10.0) -> float:
    """A QIDO-RS search for one study: the round trip in ms."""
    started = time.perf_counter()
    _qido(node, "studies", {"limit": 1}, timeout_s)
    return (time.perf_counter() - started) * 1e3


def find_studies(node: DicomWebNode, query: StudyQuery, timeout_s: float = 30.0) -> list[StudyMatch]:
    """QIDO-RS: the studies matching `query` (one search per modality asked), newest first."""
    filters: dict[str, object] = {"PatientName": query.patient_name, "PatientID": query.patient_id,
               "AccessionNumber": query.accession_number, "StudyDate": query.date_range}
    filters = {key: value for key, value in filters.items() if value} | {"includefield": list(STUDY_FIELDS)}
    found = []
    for modality in query.modalities or ("",):
        found += _qido(node, "studies", filters | ({"ModalitiesInStudy": modality} if modality else {}), timeout_s)
    return newest_first(study_match(study) for study in found)


def find_series(node: DicomWebNode, study_uid: str, timeout_s: float = 30.0) -> list[SeriesMatch]:
    found = _qido(node, f"studies/{study_uid}/series", {"includefield": list(SERIES_FIELDS)}, timeout_s)
    return by_number(series_match(series) for series in found)


def get_study(node: DicomWebNode, study_uid: str, cache: Path, cancel: threading.Event | None = None,
              progress: Callable[[int, int | None], None] | None = None, timeout_s: float = 60.0) -> Retrieved:
    """WADO-RS: the study's radiograph series, streamed into `cache/<study UID>/` in the transfer syntax the PACS
    holds them in (asked as it is: a PACS that would have to transcode a JPEG 2000 may fail); as
    `pacs.query.get_study`."""
    result = Retrieved()
    client = _client(node, timeout_s)
    try:
        series = radiograph_series(find_series(node, study_uid, timeout_s), result)
        total = expected_images(series)
        if series:
            folder = cache / study_uid
            folder.mkdir(parents=True, exist_ok=True)
        for one in series:
            for dataset in client.iter_series(study_uid, one.series_uid, media_types=AS_STORED):
                if cancel is not None and cancel.is_set():
                    raise RetrieveCancelled(result)
                uid = str(dataset.get("SOPInstanceUID", ""))
                try:
                    result.files.append(cache_instance(folder, uid, _encoded(dataset)))
                except ValueError as exc:
                    result.refused.append(str(exc))
                if progress is not None:
                    progress(len(result.files), total)
    except requests.exceptions.RequestException as exc:  # (an OSError too: told apart first)
        raise _failure(node, exc) from None
    except (RetrieveCancelled, DicomNetworkError, OSError):
        raise
    except Exception as exc:  # dicomweb-client's own, e.g. a malformed multipart reply
        raise _failure(node, exc) from None
    return result


def _encoded(dataset: Dataset) -> bytes:
    """A retrieved instance as a DICOM file (preamble and file meta, in its own transfer syntax)."""
    out = DicomBytesIO()
    dcmwrite(out, dataset, enforce_file_format=True)
    return out.getvalue()


def store(node: DicomWebNode, datasets: list[Dataset], timeout_s: float = 30.0) -> None:
    """STOW-RS; DicomNetworkError when the server keeps none or refuses some (its Failed SOP Sequence)."""
    if not datasets:
        return
    try:
        response = _client(node, timeout_s).store_instances(datasets)
    except Exception as exc:
        raise _failure(node, exc) from None
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        first = failed[0]
        raise DicomNetworkError(f"{node}: STOW-RS refused {first.get('ReferencedSOPInstanceUID', '?')} "
                                f"(failure reason 0x{int(first.get('FailureReason', 0)):04X})")
