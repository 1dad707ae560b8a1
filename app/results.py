"""A study's results out of the workstation: its DICOM SR written — and, when asked, the annotated view as a
Secondary Capture image — and sent on to a DICOM node (the PACS). One place for the command line
(`infer --send`, `listen --send`) and the viewer (File → Send results to PACS)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path


def write_and_send(findings, header, folder, analyzer=None, destination=None, ae_title: str = "MEDEDGE",
                   sop_instance_uid: str | None = None, image_of=None, view=None) -> dict:
    """The study's DICOM SR (algorithms named after `analyzer`'s models, the default ones when None) written into
    `folder` (`header`: the image's DICOM header) and, when `destination` (a PACS node) is given, sent there by
    C-STORE as `ae_title` or by STOW-RS: {"sr": path, "sent": node}, or with "sr_error" / "send_error" saying
    why not. With `image_of` (the analysed `Radiograph`) the annotated view (`view`: a `View`, the default
    one when None) is written and sent beside the SR: "image", or "image_error" saying why not."""
    from inference.reports.secondary_capture import View, write_secondary_capture
    from inference.reports.structured_report import StructuredReportError, algorithm_names, write_sr

    try:
        path = write_sr(findings, header, folder, model_names=algorithm_names(analyzer),
                        sop_instance_uid=sop_instance_uid)
    except (StructuredReportError, OSError) as exc:
        return {"sr_error": str(exc)}
    outcome: dict = {"sr": str(path)}
    written = [path]
    if image_of is not None:
        try:
            image = write_secondary_capture(findings, image_of, folder, view=view or View(),
                                            sop_instance_uid=_image_uid(sop_instance_uid))
        except (StructuredReportError, OSError) as exc:
            outcome["image_error"] = f"annotated image not written: {exc}"
        else:
            outcome["image"] = str(image)
            written.append(image)
    if destination is not None:
        outcome |= _send(written, destination, ae_title)
    return outcome


def write_and_send_reading(reading, header, folder, destination, ae_title: str = "MEDEDGE") -> dict:
    """The reader's view as a presentation state (GSPS: `reading`, a `Reading`, on the image whose DICOM header is
    `header`) written into `folder` and stored on `destination`: {"gsps": path, "sent": node}, or "gsps_error" /
    "send_error" saying why not."""
    from inference.reports.presentation_state import write_presentation_state
    from inference.reports.structured_report import StructuredReportError

    try:
        path = write_presentation_state(reading, header, folder)
    except (StructuredReportError, OSError) as exc:
        return {"gsps_error": str(exc)}
    return {"gsps": str(path)} | _send([path], destination, ae_title, what="presentation state")


def _send(written: list, destination, ae_title: str, what: str = "") -> dict:
    """{"sent": node} once the files are stored on `destination`, else {"send_error": why not}."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from pacs.dimse import DicomNetworkError
    from pacs.remote import store

    try:
        store(destination, [dcmread(p) for p in written], ae_title)
    except (DicomNetworkError, OSError, InvalidDicomError) as exc:
        what = what or ("SR and annotated image" if len(written) > 1 else "SR")
        return {"send_error": f"{what} not sent: {exc}"}
    return {"sent": str(destination)}


def send_again(records: Iterable[dict], folder: Path, destination, ae_title: str = "MEDEDGE") -> Iterator[dict]:
    """Results written before but not sent to `destination` (it was down, or was named only now): their SR and
    annotated image read back from `folder` (where their paths are relative to) and sent; each record as it is
    now, "sent" or "send_error" again (without "send_error" once sent). The first that fails ends the round: the
    node is down still, and each try would wait for its timeout."""
    for record in records:
        written = [folder / record[kind] for kind in ("sr", "image") if record.get(kind)]
        outcome = _send(written, destination, ae_title)
        yield {key: value for key, value in record.items() if key not in ("send_error", "sent")} | outcome
        if "send_error" in outcome:
            return


def _image_uid(sr_uid: str | None) -> str | None:
    """The image's UID follows the SR's when that is fixed (a study analysed again rewrites the same pair)."""
    if sr_uid is None:
        return None
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[sr_uid, "mededge annotated view"])
