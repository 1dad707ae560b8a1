"""Every real file in ../shared/data/cxr gives the outcome its README expects."""

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut

from viewer.display import render_8bit
from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.radiograph import SpacingSource, WindowSource


def test_mono1_chest_without_preamble_or_file_meta(shared_cxr):
    r = load_radiograph(shared_cxr / "dicom/CR-MONO1-10-chest")
    assert (r.rows, r.columns, r.frames) == (440, 440, 1)
    assert r.photometric == "MONOCHROME1" and r.inverted
    assert r.bits_stored == 10
    assert r.transfer_syntax == pydicom.uid.ImplicitVRLittleEndian
    assert any("no File Meta" in note for note in r.notes)
    assert (r.window.center, r.window.width) == (550, 1024)
    assert r.window_source is WindowSource.DICOM_WINDOW
    # MONOCHROME1: the highest stored value is shown darkest.
    image = render_8bit(r)
    assert image[r.pixels == r.pixels.max()].mean() < image[r.pixels == r.pixels.min()].mean()


def test_dx_jpeg2000_lossless_with_spacing(shared_cxr):
    r = load_radiograph(shared_cxr / "dicom/DX_chest_966_fixed.dcm")
    assert (r.rows, r.columns) == (2128, 2000)
    assert r.transfer_syntax == pydicom.uid.JPEG2000Lossless
    assert r.inverted and r.bits_stored == 12
    assert r.pixel_spacing_mm == pytest.approx((0.16, 0.16))
    assert r.spacing_source is SpacingSource.PIXEL_SPACING
    assert r.value_range == (0, 4095)


def test_corrupt_jpeg2000_codestream_is_a_clear_error(shared_cxr):
    with pytest.raises(RadiographError, match="corrupt or truncated pixel data .*JPEG 2000") as info:
        load_radiograph(shared_cxr / "dicom/DX_chest_966_badCOMmarker.dcm")
    assert "\n" not in str(info.value)


def test_jpeg2000_lossy_cr_with_zero_spacing(shared_cxr):
    r = load_radiograph(shared_cxr / "dicom/RG1_J2KI.dcm")
    assert (r.rows, r.columns) == (1955, 1841)
    assert r.inverted
    # Pixel Spacing 0\0 is no calibration at all.
    assert r.pixel_spacing_mm is None and r.spacing_source is None
    assert any("Pixel Spacing" in note for note in r.notes)


def test_presentation_lut_inverse_with_mono1_is_one_inversion(shared_cxr):
    """DX (PS3.3 C.8.11.7) requires INVERSE with MONOCHROME1: both say "high values dark"."""
    r = load_radiograph(shared_cxr / "dicom/highdicom_dx_image_canine_thorax.dcm")
    assert r.photometric == "MONOCHROME1" and r.inverted
    assert r.pixel_spacing_mm == pytest.approx((1.2, 1.2012))
    image = render_8bit(r)
    assert image[r.pixels == 255].max() == 0


def test_jpeg_lossless_and_rle_decode_to_the_same_pixels(shared_cxr):
    jpll = load_radiograph(shared_cxr / "other/RG2_JPLL.dcm")
    rle = load_radiograph(shared_cxr / "other/RG2_RLE.dcm")
    assert jpll.transfer_syntax == pydicom.uid.JPEGLosslessSV1
    assert rle.transfer_syntax == pydicom.uid.RLELossless
    assert np.array_equal(jpll.pixels, rle.pixels)
    assert not jpll.inverted and jpll.pixel_spacing_mm == pytest.approx((0.2, 0.2))


def test_voi_lut_sequence_is_applied(shared_cxr):
    path = shared_cxr / "other/fodicom_GH133_MG_VOILUTSeq.dcm"
    r = load_radiograph(path)
    assert r.window_source is WindowSource.VOI_LUT_SEQUENCE and r.voi_lut is not None
    # Same grey levels as pydicom's own VOI LUT on the decoded pixels, rescaled to 8 bits.
    ds = pydicom.dcmread(path)
    reference = apply_voi_lut(ds.pixel_array, ds, prefer_lut=True).astype(np.float64)
    table = r.voi_lut.data
    reference = np.rint((reference - table.min()) / (table.max() - table.min()) * 255)
    assert np.array_equal(render_8bit(r), reference.astype(np.uint8))
    assert r.spacing_source in (SpacingSource.IMAGER_PIXEL_SPACING,
                                SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED)


def test_multiframe_loads_first_frame_and_counts_frames(shared_cxr):
    path = shared_cxr / "other/fodicom_HasFragmentSequence_XA_multiframe.dcm"
    r = load_radiograph(path)
    assert r.frames == 96 and r.pixels.shape == (512, 512)
    assert np.array_equal(r.pixels, pydicom.dcmread(path).pixel_array[0])


def test_structured_report_has_no_image(shared_cxr):
    with pytest.raises(RadiographError, match="no image in this file.*structured report"):
        load_radiograph(shared_cxr / "other/pydicom_test-SR.dcm")


def test_truncated_pixel_data_is_a_clear_error(shared_cxr):
    with pytest.raises(RadiographError, match="truncated"):
        load_radiograph(shared_cxr / "other/pydicom_MR_truncated.dcm")


def test_png_chest(shared_cxr):
    r = load_radiograph(shared_cxr / "raster/txv_nih_00027426_000_512px.png")
    assert (r.rows, r.columns, r.file_format) == (512, 512, "PNG")
    assert r.window_source is WindowSource.FULL_RANGE
    assert np.array_equal(render_8bit(r), r.pixels)  # an 8-bit PNG shows exactly as stored


def test_twelve_bit_jpeg_extended_opens_with_and_without_odd_scan_parameters(shared_cxr, tmp_path, capfd):
    """RG2_JPLY (NEMA WG04: a CR in 12-bit JPEG Extended) says its scan ends at coefficient 0 instead of 63,
    as some older CR systems wrote: pydicom's plugins refuse it, GDCM's own reader decodes it. The same file
    with the standard value decodes through pydicom. Both match the lossless copy of the image (RG2_JPLL),
    and no decoder's diagnostics reach the terminal."""
    lossless = load_radiograph(shared_cxr / "other/RG2_JPLL.dcm").pixels.astype(int)
    odd = shared_cxr / "other/RG2_JPLY.dcm"
    data = bytearray(odd.read_bytes())
    scan = data.find(b"\xff\xda")  # SOS: length, 1 component (2 bytes), then Ss, Se
    assert data[scan + 7:scan + 9] == b"\x00\x00"
    data[scan + 8] = 63
    standard = tmp_path / "RG2_JPLY_standard_scan.dcm"
    standard.write_bytes(bytes(data))
    for path in (odd, standard):
        r = load_radiograph(path)
        assert r.transfer_syntax == "1.2.840.10008.1.2.4.51" and r.pixels.shape == lossless.shape == (2140, 1760)
        difference = np.abs(r.pixels.astype(int) - lossless)
        assert difference.mean() < 0.01 * lossless.max(), path  # lossy: 3.8 of 893 here
        assert np.corrcoef(r.pixels.ravel(), lossless.ravel())[0, 1] > 0.999
        by_gdcm = "decoded by GDCM: pydicom's decoders refused this JPEG Extended variant" in r.notes
        assert by_gdcm == (path == odd), r.notes  # said on screen: another decoder than usual read it
    assert capfd.readouterr().err == ""  # GDCM printed "Unsupported JPEG data precision 12" before
