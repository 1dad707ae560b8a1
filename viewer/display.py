"""Display pipeline: modality values → VOI (window or VOI LUT) → presentation (invert) → 8-bit grey.

The standard's formulas are pydicom's (`apply_windowing`, `apply_voi`); they are evaluated once over the
image's integer value range and applied as a lookup table, which keeps a 3000² 16-bit image well
under the interactive budget.
"""

from __future__ import annotations

import numpy as np
import pydicom  # noqa: F401  the package before its modules, see viewer/loader.py
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from viewer.radiograph import Radiograph, VoiFunction, VoiLut, Window

_MAX_TABLE = 1 << 20  # integer images with a wider value range are windowed directly


def grey_levels(values: np.ndarray, window: Window, function: VoiFunction = VoiFunction.LINEAR,
                voi_lut: VoiLut | None = None) -> np.ndarray:
    """Map modality values to display levels in [0, 1] (0 = black before any inversion)."""
    if voi_lut is not None:
        table = voi_lut.data.astype(np.float64)
        index = np.clip(np.asarray(values, dtype=np.int64) - voi_lut.first_mapped, 0, table.size - 1)
        low, high = float(table.min()), float(table.max())
        return (table[index] - low) / max(high - low, 1.0)
    # A minimal VOI LUT module: pydicom maps onto 0..2**BitsStored-1 of an unsigned image.
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 16
    voi.PixelRepresentation = 0
    voi.WindowCenter = float(window.center)
    voi.WindowWidth = max(float(window.width), 1.0)  # pydicom (and the standard) need width >= 1
    voi.VOILUTFunction = function.value
    levels = apply_windowing(np.asarray(values, dtype=np.float64), voi)
    return levels / 65535.0


def render_8bit(radiograph: Radiograph, window: Window | None = None, invert: bool | None = None,
                function: VoiFunction | None = None) -> np.ndarray:
    """The display-ready 8-bit image: the file's default VOI and inversion unless overridden.

    Passing a `window` replaces the file's VOI LUT as well (the user took over the window).
    """
    voi_lut = radiograph.voi_lut if window is None else None
    window = radiograph.window if window is None else window
    function = radiograph.voi_function if function is None else function
    invert = radiograph.inverted if invert is None else invert
    pixels = radiograph.pixels

    low, high = radiograph.value_range
    if pixels.dtype.kind in "ui" and high - low < _MAX_TABLE:
        domain = np.arange(int(low), int(high) + 1)
        table = _to_uint8(grey_levels(domain, window, function, voi_lut), invert)
        index = pixels if low == 0 and pixels.dtype.kind == "u" else np.subtract(pixels, int(low), dtype=np.int32)
        return table[index]
    return _to_uint8(grey_levels(pixels, window, function, voi_lut), invert)


def _to_uint8(levels: np.ndarray, invert: bool) -> np.ndarray:
    out = np.rint(np.clip(levels, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.subtract(255, out, dtype=np.uint8) if invert else out
