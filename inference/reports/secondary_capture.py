"""The annotated view as a DICOM Secondary Capture image, sent beside the SR for a PACS viewer that shows images
but not SR regions (most do).

The radiograph as displayed (its window, or the one the reader chose), the detector's boxes with their scores,
the classifier's most probable findings and a banner that says what the image is — AI output, and with demo
weights that it is not for diagnosis — burned into an RGB image written with highdicom. The image says so in
its header too: DERIVED\\SECONDARY, Burned In Annotation YES, a series of its own, the source image referenced.
No patient data is drawn (the header carries the patient and study, as the source's).
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from inference.config import MANUFACTURER
from inference.models.findings import Findings
from inference.reports.structured_report import (
    DEMO_MARK,
    SERIES_NUMBER,
    StructuredReportError,
    carry_series_anatomy,
    copied_as_they_are,
    evidence_of,
    package_version,
    save_into,
    series_uid,
)
from viewer.display import render_8bit
from viewer.loader import LOSSY_SYNTAXES
from viewer.radiograph import Radiograph, SpacingSource, Window

LONGEST_SIDE = 2048          # px: enough to read on a PACS monitor, a few MB per study instead of tens
SHOWN_FINDINGS = 5           # the classifier's most probable findings listed on the image
BOX_COLOUR = (255, 200, 0)   # RGB amber: visible on grey, not a colour a radiograph has
BANNER = "AI RESULT (MedEdge) - NOT A DIAGNOSIS"
# The source's patient and study attributes the SR carries (highdicom copies them there) and the SC must carry too:
# a PACS that refreshes a study from its latest instance would otherwise lose them (dcentvfy's warning).
STUDY_LEVEL = ("IssuerOfPatientID", "OtherPatientIDsSequence", "PatientAge", "PatientSize", "PatientWeight",
               "StudyDescription", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "ProcedureCodeSequence",
               "IssuerOfAccessionNumberSequence", "AdmittingDiagnosesDescription", "AdditionalPatientHistory")

SERIES_DESCRIPTION = "MedEdge AI annotated view"
FONT = cv2.FONT_HERSHEY_SIMPLEX  # ASCII only


@dataclass(frozen=True)
class View:
    """How the reader looks at the image: the boxes shown (score at or above `confidence`), the window and the
    inversion (the file's own when None)."""

    confidence: float = 0.0
    window: Window | None = None
    invert: bool | None = None


def render_annotated(radiograph: Radiograph, findings: Findings, view: View = View()) -> np.ndarray:
    """The annotated view as RGB [rows, columns, 3] uint8: a band with the banner and the most probable findings
    above the radiograph (its longest side at most `LONGEST_SIDE`) with the boxes `view` shows."""
    grey = render_8bit(radiograph, view.window, view.invert)
    scale = min(1.0, LONGEST_SIDE / max(grey.shape))
    if scale < 1.0:
        grey = cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    image = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    unit = max(grey.shape) / 1000  # text and lines follow the image's size
    thickness = max(1, round(2 * unit))
    text_scale = 0.6 * unit
    for detection in findings.detections:
        if detection.score < view.confidence:
            continue
        x1, y1, x2, y2 = (round(v * scale) for v in detection.box_xyxy)
        cv2.rectangle(image, (x1, y1), (x2, y2), BOX_COLOUR, thickness)
        _label(image, f"{detection.label} {detection.score:.2f}", (x1, y1), text_scale, thickness, BOX_COLOUR)
    lines = [BANNER] + ([DEMO_MARK] if findings.demo_weights else [])
    top = sorted(findings.probabilities.items(), key=lambda item: item[1], reverse=True)[:SHOWN_FINDINGS]
    if top:
        lines.append("  ".join(f"{name.replace('_', ' ')} {probability:.2f}" for name, probability in top))
    # the text goes into a band above the image: it never hides a part of the radiograph
    band = np.zeros((_text_height(lines, text_scale, thickness), image.shape[1], 3), np.uint8)
    y = 0
    for line in lines:
        y = _label(band, line, (round(8 * unit), y), text_scale, thickness,
                   (255, 80, 80) if line == DEMO_MARK else (255, 255, 255), below=True)
    return np.concatenate([band, image])


def _plate(text: str, scale: float, thickness: int) -> tuple[int, int, int, int]:
    """(width, height above the baseline, depth below it, padding) of `text` on its plate."""
    (width, height), depth = cv2.getTextSize(text, FONT, scale, thickness)
    return width, height, depth, max(2, thickness)


def _text_height(lines: list[str], scale: float, thickness: int) -> int:
    return sum(height + depth + 2 * pad for _, height, depth, pad in (_plate(line, scale, thickness)
                                                                     for line in lines))


def _label(image: np.ndarray, text: str, at: tuple[int, int], scale: float, thickness: int,
           colour: tuple[int, int, int], below: bool = False) -> int:
    """`text` on a black plate whose lower left is `at` (with `below`: its upper left), kept inside the image;
    returns the row under the plate."""
    text = text.encode("ascii", "replace").decode()  # Hershey fonts draw ASCII only (class names of other weights)
    width, height, depth, pad = _plate(text, scale, thickness)
    x, y = at
    top = y if below else max(0, y - height - depth - 2 * pad)
    cv2.rectangle(image, (x, top), (x + width + 2 * pad, top + height + depth + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (x + pad, top + pad + height), FONT, scale, colour, thickness, cv2.LINE_AA)
    return top + height + depth + 2 * pad


def build_secondary_capture(findings: Findings, radiograph: Radiograph, *, view: View = View(),
                            sop_instance_uid: str | None = None) -> Dataset:
    """The Secondary Capture image of `findings` on `radiograph` (a DICOM image: its header is the source)."""
    if radiograph.header is None:
        raise StructuredReportError("an annotated image for the PACS needs a DICOM source image")
    evidence = evidence_of(radiograph.header)
    pixels = render_annotated(radiograph, findings, view)
    scale = pixels.shape[1] / radiograph.pixels.shape[1]  # the band above adds rows only
    # Pixel Spacing means "at the patient": said only where the source's spacing is (its own Pixel Spacing, or the
    # detector's corrected by the magnification factor, marked GEOMETRY below); a detector-plane or scanned-film
    # spacing would be claimed as something it is not, so it stays out (the SC is a view, not for measuring)
    at_patient = radiograph.spacing_source in (SpacingSource.PIXEL_SPACING,
                                               SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED)
    spacing = (tuple(round(s / scale, 6) for s in radiograph.pixel_spacing_mm)
               if at_patient and radiograph.pixel_spacing_mm is not None else None)
    orientation = evidence.get("PatientOrientation")
    known = orientation is not None and len(orientation) == 2 and all(orientation)
    try:
        with copied_as_they_are():
            image = hd.sc.SCImage.from_ref_dataset(
                ref_dataset=evidence, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
                coordinate_system="PATIENT", series_instance_uid=series_uid(sop_instance_uid), series_number=SERIES_NUMBER + 1,
                sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=1, manufacturer=MANUFACTURER,
                pixel_spacing=spacing,  # type: ignore[arg-type]  # (highdicom types it int; PS3.3 says DS)
                patient_orientation=tuple(orientation) if known else ("A", "F"),
                transfer_syntax_uid="1.2.840.10008.1.2.1")
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom refused a value of the source
        raise StructuredReportError(f"cannot build the annotated image: {exc}") from exc
    if not known:  # highdicom asks for one; PS3.3 lets it be empty (Type 2) rather than made up
        image.PatientOrientation = []
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.BurnedInAnnotation = "YES"
    image.ConversionType = "WSD"  # made on a workstation
    image.SeriesDescription = SERIES_DESCRIPTION + (f" - {DEMO_MARK}" if findings.demo_weights else "")
    image.ImageComments = "AI output burned in over the source image" + (
        f"; {DEMO_MARK}" if findings.demo_weights else "")
    image.DerivationDescription = "MedEdge Viewer: detector boxes and classifier findings drawn on the source image"
    image.ManufacturerModelName = "MedEdge Viewer"
    image.SoftwareVersions = package_version()
    _carry_over(radiograph, image)
    if spacing is not None and radiograph.spacing_source is SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED:
        image.PixelSpacingCalibrationType = "GEOMETRY"
        image.PixelSpacingCalibrationDescription = "Imager Pixel Spacing / Estimated Magnification"  # (LO: 64)
    source = Dataset()
    source.ReferencedSOPClassUID = evidence.SOPClassUID
    source.ReferencedSOPInstanceUID = evidence.SOPInstanceUID
    image.SourceImageSequence = [source]
    return image


def _carry_over(radiograph: Radiograph, image: Dataset) -> None:
    """What the image must keep of its source beyond highdicom's copy: the study's other attributes, the body part
    (which answers General Series' Laterality condition: the chest is not a paired part), and the lossy compression
    the pixels went through once (PS3.3 C.7.6.1.1.5: once lossy, always said so)."""
    source = radiograph.header
    assert source is not None  # (a DICOM source: checked by the caller)
    for keyword in STUDY_LEVEL:
        if keyword in source and keyword not in image:
            image[keyword] = deepcopy(source[keyword])
    carry_series_anatomy(source, image)
    if radiograph.info.lossy:
        image.LossyImageCompression = "01"
        for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
            if keyword in source:
                image[keyword] = deepcopy(source[keyword])
        if "LossyImageCompressionMethod" not in image and radiograph.transfer_syntax in LOSSY_SYNTAXES:
            image.LossyImageCompressionMethod = LOSSY_SYNTAXES[radiograph.transfer_syntax]


def write_secondary_capture(findings: Findings, radiograph: Radiograph, folder: str | os.PathLike[str],
                            **options) -> Path:
    """Write the annotated image into `folder` as `<SOP Instance UID>.dcm` (no patient data in the name)."""
    return save_into(build_secondary_capture(findings, radiograph, **options), folder)
