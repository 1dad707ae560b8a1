"""Choosing the VOI (value of interest) a radiograph is shown with. Pure numpy/pydicom, no Qt."""

from __future__ import annotations

import numpy as np
import pydicom  # noqa: F401  the package before its modules, see viewer/loader.py
from pydicom.pixels import apply_voi

from viewer.radiograph import VoiLut, Window

ROBUST_PERCENTILES = (0.5, 99.5)
_SAMPLE_PIXELS = 1 << 20          # percentiles from about a million pixels are exact enough and fast
MIN_DATA_SHARE_OF_WINDOW = 0.02   # data spanning < 2% of the window would show as ~5 grey levels
FEW_LEVELS = 4                    # 99 % of an image on fewer integer values than this: a page, not a radiograph


def robust_range(pixels: np.ndarray, ignore: tuple[float, float] | None = None) -> tuple[float, float]:
    """The 0.5–99.5 percentile range of `pixels`, from a regular subsample of large images.

    `ignore` is an inclusive value range left out (Pixel Padding: the background outside the
    collimated field would otherwise pull the window towards it).
    """
    return _percentile_range(_sample(pixels, ignore), ROBUST_PERCENTILES)


def preset_window(pixels: np.ndarray, percentiles: tuple[float, float], bright_is_high: bool) -> Window:
    """The window spanning these percentiles of the image's brightness as displayed (0 = darkest pixel): a preset
    for a projection radiograph, which has no Hounsfield scale, that follows each image's exposure and processing
    (fixed fractions of its range turned the lungs of a dense DX white)."""
    if not bright_is_high:
        percentiles = (100.0 - percentiles[1], 100.0 - percentiles[0])
    return Window.from_range(*_percentile_range(_sample(pixels), percentiles))


def _sample(pixels: np.ndarray, ignore: tuple[float, float] | None = None) -> np.ndarray:
    """The finite values of a regular subsample of `pixels` (about a million), without those in `ignore`."""
    step = max(1, int(np.sqrt(pixels.size / _SAMPLE_PIXELS)))
    sample = pixels[::step, ::step] if pixels.ndim == 2 else pixels.ravel()[::step]
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.ravel()
    if ignore is not None:
        kept = sample[(sample < ignore[0]) | (sample > ignore[1])]
        sample = kept if kept.size else sample
    return sample


def _percentile_range(sample: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    if sample.size == 0:
        return 0.0, 1.0
    low, high = (float(value) for value in np.percentile(sample, percentiles))
    if high <= low or (sample.dtype.kind in "iu" and high - low < FEW_LEVELS):
        # flat, or nearly (a blank page with a small drawing): the whole range, else the drawing shows black or white
        low, high = float(sample.min()), float(sample.max())
        if high <= low:
            high = low + 1.0
    return low, high


def window_misfit(window: Window, data_range: tuple[float, float]) -> str | None:
    """Why `window` cannot show data in `data_range`, or None when it fits."""
    low, high = data_range
    if window.high < low or window.low > high:
        return (f"it lies outside the pixel values ({window.low:g}..{window.high:g} vs "
                f"{low:g}..{high:g})")
    if (high - low) < MIN_DATA_SHARE_OF_WINDOW * window.width:
        return (f"the pixel values ({low:g}..{high:g}) fill under "
                f"{MIN_DATA_SHARE_OF_WINDOW:.0%} of its width {window.width:g}")
    return None


def voi_lut_from_dataset(ds, index: int = 0) -> VoiLut:
    """Item `index` of the VOI LUT Sequence, tabulated over its input range by pydicom's `apply_voi`."""

    item = ds.VOILUTSequence[index]
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536  # 0 means 2**16 (PS3.3 C.11.2.1.1)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1 and first_mapped >= 32768:
        first_mapped -= 65536  # US-encoded descriptor of a signed image
    domain = np.arange(first_mapped, first_mapped + entries, dtype=np.int32)
    table = np.asarray(apply_voi(domain, ds, index=index))
    explanation = str(item.get("LUTExplanation", "") or "")
    return VoiLut(first_mapped=first_mapped, data=table, bits=bits, explanation=explanation)
