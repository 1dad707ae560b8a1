"""The reader's view of a radiograph as a DICOM Grayscale Softcopy Presentation State (GSPS), written with highdicom:
the window, the polarity, the rotation and mirroring, and the measurements (distance lines with their lengths, the
cardiothoracic ratio's two widths) as graphic annotations on the image. A PACS viewer that reads GSPS shows the
radiograph as it was read, measurements included; the image itself is not changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from inference.reports.structured_report import (
    StructuredReportError,
    carry_series_anatomy,
    copied_as_they_are,
    evidence_of,
    made_by_us,
    save_into,
)
from viewer.radiograph import VoiLut

SERIES_NUMBER = 992  # after the SR's (990) and the annotated image's (991)
SERIES_DESCRIPTION = "MedEdge reading"
Point = tuple[float, float]


@dataclass(frozen=True)
class Measurement:
    """A line on the image (image pixels, column then row) and what it measured ("106.7 mm", "CTR 0.47")."""

    start: Point
    end: Point
    text: str


@dataclass(frozen=True)
class Reading:
    """How the reader left the image: window, polarity as shown, orientation (the flips before the rotation, as
    the viewer applies them) and measurements."""

    window_center: float
    window_width: float
    shown_inverted: bool          # high values dark on screen (MONOCHROME1 as the file asks, or Invert)
    voi_function: str = "LINEAR"  # the window's VOI LUT Function as shown (LINEAR, LINEAR_EXACT, SIGMOID)
    voi_lut: VoiLut | None = None  # the file's VOI LUT when that is what is shown (the window then only its range)
    rotation: int = 0             # degrees clockwise, a multiple of 90
    flip_horizontal: bool = False
    flip_vertical: bool = False
    measurements: tuple[Measurement, ...] = field(default_factory=tuple)


def build_presentation_state(reading: Reading, source: Dataset | None, *,
                             sop_instance_uid: str | None = None) -> Dataset:
    """The GSPS of `reading` on the image whose header is `source`."""
    if source is None:
        raise StructuredReportError("a presentation state needs a DICOM source image")
    evidence = evidence_of(source)
    for keyword in ("Rows", "Columns"):
        if keyword not in evidence:
            raise StructuredReportError(f"the source image has no {keyword}")
    shape = hd.PresentationLUTShapeValues.INVERSE if reading.shown_inverted else hd.PresentationLUTShapeValues.IDENTITY
    try:
        with copied_as_they_are():
            layer = hd.pr.GraphicLayer(layer_name="MEASUREMENTS", order=1, description="the reader's measurements")
            annotations = _annotations(reading, evidence, layer)
            if reading.voi_lut is not None:  # the file's own table, as shown
                # a softcopy VOI LUT's entries are 8 or 16 bits: the file's (12 here and there) stretched to 16
                lut = reading.voi_lut
                entries = np.round(lut.data.astype(np.float64) * 65535 / (2 ** lut.bits - 1)).astype(np.uint16)
                voi = hd.pr.SoftcopyVOILUTTransformation(voi_luts=[hd.VOILUT(
                    first_mapped_value=lut.first_mapped, lut_data=entries, lut_explanation=lut.explanation or None)])
            else:
                voi = hd.pr.SoftcopyVOILUTTransformation(
                    window_center=float(reading.window_center), window_width=float(reading.window_width),
                    voi_lut_function=reading.voi_function)
            state = hd.pr.GrayscaleSoftcopyPresentationState(
                referenced_images=[evidence],
                series_instance_uid=generate_uid(),
                series_number=SERIES_NUMBER,
                sop_instance_uid=sop_instance_uid or generate_uid(),
                **made_by_us(),
                device_serial_number="",
                content_label="MEDEDGE_READING",
                content_description="window, orientation and measurements as read in MedEdge Viewer",
                graphic_annotations=annotations,
                graphic_layers=[layer] if annotations else None,
                voi_lut_transformations=[voi],
                presentation_lut_transformation=hd.PresentationLUTTransformation(presentation_lut_shape=shape))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom refused a value of the source
        raise StructuredReportError(f"cannot build the presentation state: {exc}") from exc
    state.SeriesDescription = SERIES_DESCRIPTION
    carry_series_anatomy(evidence, state)
    turned, flipped = dicom_orientation(reading.rotation, reading.flip_horizontal, reading.flip_vertical)
    state.ImageRotation = turned
    state.ImageHorizontalFlip = "Y" if flipped else "N"
    # the displayed area's corners are the image pixels that land at the screen's top left and bottom right
    top_left, bottom_right = _displayed_corners(int(evidence.Columns), int(evidence.Rows), flipped, turned)
    for area in state.DisplayedAreaSelectionSequence:
        area.DisplayedAreaTopLeftHandCorner, area.DisplayedAreaBottomRightHandCorner = top_left, bottom_right
    return state


def dicom_orientation(rotation: int, flip_horizontal: bool, flip_vertical: bool) -> tuple[int, bool]:
    """The viewer's flips-then-clockwise-rotation as DICOM's Spatial Transformation (PS3.3 C.10.6): a clockwise
    rotation, then a horizontal flip. A vertical flip is a horizontal one turned half round, and a flip before a
    turn is the flip after the turn the other way."""
    flipped = flip_horizontal != flip_vertical
    turned = (rotation + (180 if flip_vertical else 0)) % 360
    return ((360 - turned) % 360 if flipped else turned), flipped


def _displayed_corners(columns: int, rows: int, flipped: bool, turned: int) -> tuple[list[int], list[int]]:
    """The image's corner pixels (1-based column, row) shown at the top left and bottom right once it is turned
    `turned` degrees clockwise and then flipped horizontally (if so)."""
    def shown(x: int, y: int) -> tuple[int, int]:
        for _ in range(turned // 90):  # clockwise on a screen whose y points down
            x, y = -y, x
        return (-x if flipped else x), y

    corners = [(1, 1), (columns, 1), (1, rows), (columns, rows)]
    top_left = min(corners, key=lambda c: shown(*c))
    bottom_right = max(corners, key=lambda c: shown(*c))
    return list(top_left), list(bottom_right)


def _annotations(reading: Reading, evidence: Dataset, layer) -> list | None:
    """The measurements as POLYLINE graphics with their text at the middle, in image pixels (DICOM's PIXEL units
    put 0.0 at the first pixel's outer corner, as the viewer does); None without any."""
    graphics, texts = [], []
    for measurement in reading.measurements:
        ends = np.array([measurement.start, measurement.end], dtype=np.float32)
        graphics.append(hd.pr.GraphicObject(graphic_type=hd.pr.GraphicTypeValues.POLYLINE, graphic_data=ends,
                                            units=hd.pr.AnnotationUnitsValues.PIXEL))
        middle = ends.mean(axis=0)
        texts.append(hd.pr.TextObject(text_value=measurement.text[:64], units=hd.pr.AnnotationUnitsValues.PIXEL,
                                      anchor_point=(float(middle[0]), float(middle[1])), anchor_point_visible=False))
    if not graphics:
        return None
    return [hd.pr.GraphicAnnotation(referenced_images=[evidence], graphic_layer=layer, graphic_objects=graphics,
                                    text_objects=texts)]


def write_presentation_state(reading: Reading, source: Dataset | None, folder: str | os.PathLike[str]) -> Path:
    """Write the GSPS into `folder` as `<SOP Instance UID>.dcm` (no patient data in the name)."""
    return save_into(build_presentation_state(reading, source), folder)
