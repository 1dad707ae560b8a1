"""A study's results out of the workstation: its DICOM SR written, and sent on to a DICOM node (the PACS). One
place for the command line (`infer --send`, `listen --send`) and the viewer (File → Send results to PACS)."""

from __future__ import annotations


def write_and_send(findings, header, folder, analyzer=None, destination=None, ae_title: str = "MEDEDGE",
                   sop_instance_uid: str | None = None) -> dict:
    """The study's DICOM SR (algorithms named after `analyzer`'s models, the default ones when None) written into
    `folder` (`header`: the image's DICOM header) and, when `destination` (a PACS node) is given, sent there by
    C-STORE as `ae_title` or by STOW-RS: {"sr": path, "sent": node}, or with "sr_error" / "send_error" saying
    why not."""
    from pydicom import dcmread

    from inference.reports.structured_report import StructuredReportError, algorithm_names, write_sr
    from pacs.dimse import DicomNetworkError
    from pacs.remote import store

    try:
        path = write_sr(findings, header, folder, model_names=algorithm_names(analyzer),
                        sop_instance_uid=sop_instance_uid)
    except (StructuredReportError, OSError) as exc:
        return {"sr_error": str(exc)}
    outcome = {"sr": str(path)}
    if destination is not None:
        try:
            store(destination, [dcmread(path)], ae_title)
        except (DicomNetworkError, OSError) as exc:
            return outcome | {"send_error": f"SR not sent: {exc}"}
        outcome["sent"] = str(destination)
    return outcome
