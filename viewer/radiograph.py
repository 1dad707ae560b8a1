"""The `Radiograph` value: what every other part of the product reads from a file."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the header is kept for the tag browser; pydicom is not needed to use a Radiograph
    from pydicom import Dataset


class WindowSource(str, enum.Enum):
    """Where the default display window came from."""

    DICOM_WINDOW = "dicom_window"            # Window Center / Window Width (first value)
    VOI_LUT_SEQUENCE = "voi_lut_sequence"    # the file's VOI LUT Sequence (first item)
    FULL_RANGE = "full_range"                # 8-bit raster: the file is already display-ready
    HISTOGRAM = "histogram"                  # no VOI in the file: 0.5–99.5 percentile
    HISTOGRAM_FALLBACK = "histogram_fallback"  # the file's VOI did not fit the pixel values


class SpacingSource(str, enum.Enum):
    """Which attribute the pixel spacing was taken from."""

    PIXEL_SPACING = "PixelSpacing"
    IMAGER_PIXEL_SPACING = "ImagerPixelSpacing"
    IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED = (
        "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor"
    )
    NOMINAL_SCANNED_PIXEL_SPACING = "NominalScannedPixelSpacing"


class VoiFunction(str, enum.Enum):
    """DICOM VOI LUT Function (0028,1056)."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class Window:
    """A display window in modality units (after the Modality LUT)."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.center) and math.isfinite(self.width)):
            raise ValueError(f"window must be finite, got center={self.center} width={self.width}")
        if self.width <= 0:
            raise ValueError(f"window width must be positive, got {self.width}")

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2

    @classmethod
    def full_range(cls, bits: int) -> Window:
        """The identity window for unsigned `bits`-bit data (0 black, 2**bits - 1 white)."""
        return cls(center=float(2 ** (bits - 1)), width=float(2**bits))

    @classmethod
    def from_range(cls, low: float, high: float) -> Window:
        """The window that maps [low, high] onto the full grey scale."""
        width = max(float(high) - float(low), 1.0)
        return cls(center=(float(low) + float(high)) / 2, width=width)


@dataclass(frozen=True)
class VoiLut:
    """One item of a VOI LUT Sequence: output = data[input - first_mapped] (clamped)."""

    first_mapped: int
    data: np.ndarray = field(repr=False)  # unsigned, one entry per input value
    bits: int  # bits per output entry (LUT Descriptor third value)
    explanation: str = ""

    def __post_init__(self) -> None:
        if self.data.ndim != 1 or self.data.size == 0:
            raise ValueError("VOI LUT data must be a non-empty 1-D array")
        if not 1 <= self.bits <= 16:
            raise ValueError(f"VOI LUT entries must have 1..16 bits, got {self.bits}")

    @property
    def input_window(self) -> Window:
        """The input range the LUT covers, as a window (for display and reports)."""
        return Window.from_range(self.first_mapped, self.first_mapped + self.data.size - 1)


@dataclass(frozen=True)
class StudyInfo:
    """What the study list shows. Text is already decoded (declared character set, bad bytes replaced)."""

    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    study_description: str = ""
    modality: str = ""
    view_position: str = ""
    laterality: str = ""
    body_part: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    series_number: str = ""
    series_description: str = ""
    sop_instance_uid: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_time: str = ""
    patient_orientation: str = ""  # Patient Orientation as written ("L\\F"): the rows' direction, the columns'
    lossy: bool = False            # Lossy Image Compression 01: the pixels were compressed with loss once


@dataclass(frozen=True, eq=False)
class Radiograph:
    """A grey-scale radiograph, ready for display and analysis.

    ``pixels`` are 2-D values after the Modality LUT (first frame of a
    multi-frame file; colour files are converted to luminance). How they are
    shown by default is fully described by ``window``/``voi_lut`` and
    ``inverted``: high values are bright unless ``inverted``.
    """

    path: str
    pixels: np.ndarray = field(repr=False)
    photometric: str                 # as declared by the file (raster: MONOCHROME2 or RGB)
    bits_stored: int
    window: Window                   # default window (for a VOI LUT: the range it covers)
    window_source: WindowSource
    voi_lut: VoiLut | None = None    # when set, the default display uses it instead of `window`
    voi_function: VoiFunction = VoiFunction.LINEAR
    inverted: bool = False           # MONOCHROME1 or Presentation LUT Shape INVERSE: high values dark
    pixel_spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing)
    spacing_source: SpacingSource | None = None
    frames: int = 1
    transfer_syntax: str | None = None  # DICOM transfer syntax UID; None for raster files
    # the file's other windows (Window Center/Width's further values, as its modality offers them: "SOFTER",
    # "HARDER"…), each named by its explanation; those that do not fit the pixel values are left out
    other_windows: tuple[tuple[str, Window], ...] = ()
    window_name: str = ""  # the default window's explanation, when the file names it ("NORMAL")
    file_format: str = "DICOM"       # DICOM, PNG, JPEG or TIFF
    info: StudyInfo = field(default_factory=StudyInfo)
    notes: tuple[str, ...] = ()      # things the loader had to work around, one line each
    header: Dataset | None = field(default=None, repr=False)  # DICOM header without pixel data

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2 or 0 in self.pixels.shape:
            raise ValueError(f"pixels must be a non-empty 2-D array, got shape {self.pixels.shape}")
        if (self.pixel_spacing_mm is None) != (self.spacing_source is None):
            raise ValueError("pixel_spacing_mm and spacing_source must be given together")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def columns(self) -> int:
        return int(self.pixels.shape[1])

    @cached_property
    def value_range(self) -> tuple[float, float]:
        """(min, max) of `pixels`, computed once (the display builds its LUT over this range)."""
        return float(self.pixels.min()), float(self.pixels.max())
