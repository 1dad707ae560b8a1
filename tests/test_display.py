"""Display pipeline: the lookup-table path equals pydicom's formula applied pixel by pixel."""

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from viewer.display import render_8bit
from viewer.radiograph import Radiograph, VoiFunction, VoiLut, Window, WindowSource

from dicom_factory import gradient

WINDOW = Window(2000, 1500)


def _radiograph(pixels, window=WINDOW, **kwargs) -> Radiograph:
    return Radiograph(path="mem", pixels=pixels, photometric="MONOCHROME2", bits_stored=12, window=window,
                      window_source=WindowSource.DICOM_WINDOW, **kwargs)


@pytest.mark.parametrize("function", list(VoiFunction))
def test_table_path_equals_direct_formula(function):
    pixels = gradient(50, 40, bits=12).astype(np.int32) - 500  # negative values exercise the offset
    window = Window(1200, 900)
    via_table = render_8bit(_radiograph(pixels, window, voi_function=function))
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 8, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1200, 900, function.value
    direct = np.rint(apply_windowing(pixels.astype(float), ds)).astype(np.uint8)
    assert np.abs(via_table.astype(int) - direct).max() <= 1
    as_float = render_8bit(_radiograph(pixels.astype(np.float32), window, voi_function=function))
    assert np.array_equal(via_table, as_float)


def test_invert_and_user_window_override():
    pixels = gradient(30, 30, bits=12)
    lut = VoiLut(first_mapped=0, data=np.arange(4096, dtype=np.uint16)[::-1].copy(), bits=12)
    r = _radiograph(pixels, voi_lut=lut)
    with_lut = render_8bit(r)
    assert with_lut[pixels == pixels.max()].max() < with_lut[pixels == pixels.min()].min()
    # A window chosen by the user replaces the file's VOI LUT.
    user = render_8bit(r, window=Window(2048, 4096))
    assert user[pixels == pixels.max()].min() > user[pixels == pixels.min()].max()
    assert np.array_equal(render_8bit(r, window=Window(2048, 4096), invert=True), 255 - user)


def test_radiograph_rejects_bad_values():
    with pytest.raises(ValueError, match="width must be positive"):
        Window(100, 0)
    with pytest.raises(ValueError, match="2-D"):
        _radiograph(np.zeros((2, 2, 2), np.uint16))
    with pytest.raises(ValueError, match="together"):
        _radiograph(np.zeros((2, 2), np.uint16), pixel_spacing_mm=(0.1, 0.1))


def test_a_nearly_flat_image_is_windowed_over_its_whole_range():
    """A blank page with a small drawing (99.6 % of it on two values): the percentiles would window it over those two
    and show the drawing black; a real image keeps its 0.5–99.5 percentile window."""
    from viewer.voi import robust_range

    page = np.full((100, 100), 243, np.uint8)
    page[:50] = 244
    page[10:12, 10:30] = np.arange(139, 179, dtype=np.uint8).reshape(2, 20)  # 40 pixels of drawing
    assert robust_range(page) == (139.0, 244.0)
    ramp = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    assert robust_range(ramp) == (1.0, 254.0)  # not 0..255: the 0.5 % at each end left out
