"""The loader on DICOM and raster files generated here: every case the issue lists."""

from __future__ import annotations

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from viewer.display import render_8bit
from viewer.errors import RadiographError
from viewer.loader import MAX_DIMENSION, load_radiograph
from viewer.radiograph import SpacingSource, Window, WindowSource

from dicom_factory import dataset, gdcm_transcode, gradient, write


@pytest.fixture
def image12() -> np.ndarray:
    return gradient(64, 48, bits=12)


# ------------------------------------------------------------ transfer syntaxes

NATIVE = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]


@pytest.mark.parametrize("syntax", NATIVE, ids=lambda uid: uid.name)
def test_native_transfer_syntaxes(tmp_path, image12, syntax):
    ds = dataset(image12, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax == ExplicitVRBigEndian:  # pydicom writes Pixel Data bytes as given
        ds.PixelData = image12.astype(">u2").tobytes()
    path = tmp_path / "native.dcm"
    ds.save_as(path, enforce_file_format=True, little_endian=syntax != ExplicitVRBigEndian,
               implicit_vr=syntax == ImplicitVRLittleEndian)
    r = load_radiograph(path)
    assert r.transfer_syntax == syntax
    assert np.array_equal(r.pixels, image12)


@pytest.mark.parametrize(
    "syntax, kwargs",
    [(RLELossless, {}), (JPEGLSLossless, {}), (JPEG2000Lossless, {})],
    ids=lambda v: getattr(v, "name", ""),
)
def test_lossless_codecs_pydicom_encodes(tmp_path, image12, syntax, kwargs):
    ds = dataset(image12, bits_stored=12)
    ds.compress(syntax, **kwargs)
    r = load_radiograph(write(ds, tmp_path / "c.dcm"))
    assert r.transfer_syntax == syntax
    assert np.array_equal(r.pixels, image12)


@pytest.mark.parametrize(
    "syntax, kwargs, tolerance",
    [(JPEGLSNearLossless, {"jls_error": 3}, 3), (JPEG2000, {"j2k_psnr": [60]}, 40)],
    ids=["jpeg-ls-near-lossless", "jpeg2000-lossy"],
)
def test_lossy_codecs_pydicom_encodes(tmp_path, image12, syntax, kwargs, tolerance):
    ds = dataset(image12, bits_stored=12)
    ds.compress(syntax, **kwargs)
    r = load_radiograph(write(ds, tmp_path / "c.dcm"))
    assert r.transfer_syntax == syntax
    assert np.abs(r.pixels.astype(int) - image12).max() <= tolerance


@pytest.mark.parametrize(
    "syntax, bits, tolerance",
    [(JPEGLosslessSV1, 12, 0), (JPEGBaseline8Bit, 8, 4), (JPEGExtended12Bit, 8, 4)],
    ids=["jpeg-lossless-sv1", "jpeg-baseline", "jpeg-extended"],
)
def test_jpeg_processes_gdcm_encodes(tmp_path, syntax, bits, tolerance):
    pixels = gradient(64, 48, bits=bits)
    source = write(dataset(pixels, bits_stored=bits), tmp_path / "plain.dcm")
    r = load_radiograph(gdcm_transcode(source, tmp_path / "jpeg.dcm", syntax))
    assert r.transfer_syntax == syntax
    assert np.abs(r.pixels.astype(int) - pixels).max() <= tolerance


def test_sixteen_bit_precision_jpeg_extended_opens_and_a_damaged_one_says_what_to_ask_for(tmp_path, capfd):
    """GDCM writes 12-bit images as JPEG Extended with 16-bit precision, which pydicom's plugins refuse: GDCM's
    own reader opens it. With its compressed data destroyed neither can: one line that names the encoding
    and what to ask the sender for, no decoder's text, and nothing printed to the terminal."""
    pixels = gradient(64, 48, bits=12)
    source = write(dataset(pixels, bits_stored=12), tmp_path / "plain.dcm")
    path = gdcm_transcode(source, tmp_path / "jpeg.dcm", JPEGExtended12Bit)
    r = load_radiograph(path)
    assert r.transfer_syntax == JPEGExtended12Bit
    assert np.abs(r.pixels.astype(int) - pixels).mean() < 0.01 * 4095
    data = bytearray(path.read_bytes())
    start = data.find(b"\xff\xd8") + 2
    data[start:len(data) - 16] = bytes(len(data) - 16 - start)  # everything after the JPEG's first marker
    damaged = tmp_path / "damaged.dcm"
    damaged.write_bytes(bytes(data))
    with pytest.raises(RadiographError) as refusal:
        load_radiograph(damaged)
    assert str(refusal.value) == ("pixel data not decodable: JPEG Extended (Process 2 and 4) 12-bit (corrupt, or a "
                                  "variant no installed decoder reads) — ask for an uncompressed or lossless export")
    assert capfd.readouterr().err == ""


def test_encoding_without_installed_plugin_names_what_to_install(tmp_path, image12, monkeypatch):
    """Pretend no JPEG-LS plugin is installed: the error names the package (pydicom's own list)."""
    from pydicom.pixels import get_decoder

    ds = dataset(image12, bits_stored=12)
    ds.compress(JPEGLSLossless)
    path = write(ds, tmp_path / "jls.dcm")
    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    monkeypatch.setattr(type(decoder), "missing_dependencies",
                        property(lambda self: ["pyjpegls - requires pyjpegls"]))
    with pytest.raises(RadiographError, match=r"no installed plugin supports it \(install pyjpegls\)"):
        load_radiograph(path)


def test_encoding_pydicom_cannot_decode_at_all(tmp_path, image12):
    ds = dataset(image12, bits_stored=12)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    with pytest.raises(RadiographError, match="MPEG2.*no decoder"):
        load_radiograph(write(ds, tmp_path / "mpeg.dcm"))


def test_file_without_preamble_or_file_meta(tmp_path, image12):
    path = write(dataset(image12, bits_stored=12), tmp_path / "bare", file_meta=False)
    assert path.read_bytes()[128:132] != b"DICM"
    r = load_radiograph(path)
    assert r.transfer_syntax == ImplicitVRLittleEndian
    assert np.array_equal(r.pixels, image12)


# ------------------------------------------------------------ photometric, VOI, modality LUT


def test_monochrome1_high_values_dark(tmp_path, image12):
    r = load_radiograph(write(dataset(image12, bits_stored=12, photometric="MONOCHROME1"), tmp_path / "m1.dcm"))
    assert r.inverted
    image = render_8bit(r)
    assert image[image12 == image12.max()].max() < image[image12 == image12.min()].min()


def test_presentation_lut_inverse_on_monochrome2_inverts(tmp_path, image12):
    ds = dataset(image12, bits_stored=12, PresentationLUTShape="INVERSE")
    r = load_radiograph(write(ds, tmp_path / "inv.dcm"))
    assert r.inverted
    plain = load_radiograph(write(dataset(image12, bits_stored=12), tmp_path / "plain.dcm"))
    assert np.array_equal(render_8bit(r), 255 - render_8bit(plain))


def test_window_first_value_of_multi_valued(tmp_path, image12):
    ds = dataset(image12, bits_stored=12, WindowCenter=[2000, 1000], WindowWidth=[3000, 500])
    r = load_radiograph(write(ds, tmp_path / "w.dcm"))
    assert r.window == Window(2000, 3000) and r.window_source is WindowSource.DICOM_WINDOW


def test_window_matches_pydicom_windowing(tmp_path, image12):
    ds = dataset(image12, bits_stored=12, WindowCenter=1800, WindowWidth=1200, VOILUTFunction="SIGMOID")
    r = load_radiograph(write(ds, tmp_path / "w.dcm"))
    expected = apply_windowing(image12.astype(float), ds)  # 0..4095 for a 12-bit image
    assert np.abs(render_8bit(r).astype(float) - expected / 4095 * 255).max() <= 0.5 + 1e-9


def test_window_outside_the_data_falls_back_to_histogram(tmp_path, image12):
    ds = dataset(image12, bits_stored=12, WindowCenter=40000, WindowWidth=400)
    r = load_radiograph(write(ds, tmp_path / "w.dcm"))
    assert r.window_source is WindowSource.HISTOGRAM_FALLBACK
    assert any("40000/400 not used" in note for note in r.notes)
    low, high = np.percentile(image12, (0.5, 99.5))
    assert r.window.low == pytest.approx(low, abs=1) and r.window.high == pytest.approx(high, abs=1)


def test_pixel_padding_is_left_out_of_the_histogram_window(tmp_path, image12):
    padded = image12.copy()
    padded[:, :20] = 0  # a wide padded border outside the collimation
    ds = dataset(padded, bits_stored=12, PixelPaddingValue=0)
    r = load_radiograph(write(ds, tmp_path / "pad.dcm"))
    inside = image12[:, 20:]
    assert r.window.low == pytest.approx(np.percentile(inside, 0.5), abs=2)
    unpadded = load_radiograph(write(dataset(padded, bits_stored=12), tmp_path / "nopad.dcm"))
    assert unpadded.window.low == 0  # without the attribute the border sets the lower end


def test_header_is_kept_without_pixel_data(tmp_path, image12):
    r = load_radiograph(write(dataset(image12, bits_stored=12, ViewPosition="AP"), tmp_path / "h.dcm"))
    assert r.header is not None and "PixelData" not in r.header
    assert r.header.ViewPosition == "AP" and r.header.Rows == 64


def test_no_window_uses_histogram(tmp_path, image12):
    r = load_radiograph(write(dataset(image12, bits_stored=12), tmp_path / "w.dcm"))
    assert r.window_source is WindowSource.HISTOGRAM


def test_voi_lut_sequence(tmp_path, image12):
    lut_item = Dataset()
    lut_item.LUTDescriptor = [4096, 0, 8]
    lut_item.LUTData = list(np.linspace(0, 255, 4096).astype(np.uint16)[::-1])  # an inverting LUT
    lut_item["LUTData"].VR = "US"
    ds = dataset(image12, bits_stored=12, VOILUTSequence=[lut_item])
    r = load_radiograph(write(ds, tmp_path / "voi.dcm"))
    assert r.window_source is WindowSource.VOI_LUT_SEQUENCE
    image = render_8bit(r)
    assert image[image12 == image12.max()].max() < image[image12 == image12.min()].min()


def test_rescale_slope_intercept_integer_and_fractional(tmp_path, image12):
    ds = dataset(image12, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024)
    r = load_radiograph(write(ds, tmp_path / "int.dcm"))
    assert r.pixels.dtype.kind == "i"
    assert np.array_equal(r.pixels, image12.astype(int) - 1024)
    ds = dataset(image12, bits_stored=12, RescaleSlope=0.5, RescaleIntercept=10.25)
    r = load_radiograph(write(ds, tmp_path / "frac.dcm"))
    assert r.pixels.dtype == np.float32
    assert np.allclose(r.pixels, image12 * 0.5 + 10.25)


def test_modality_lut_sequence(tmp_path, image12):
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    item.LUTData = list((np.arange(4096) * 2).astype(np.uint16))
    item["LUTData"].VR = "US"
    ds = dataset(image12, bits_stored=12, ModalityLUTSequence=[item])
    r = load_radiograph(write(ds, tmp_path / "mlut.dcm"))
    assert np.array_equal(r.pixels, image12.astype(int) * 2)


def test_signed_pixels(tmp_path):
    pixels = (gradient(32, 32, bits=12).astype(np.int16) - 2048)
    r = load_radiograph(write(dataset(pixels, bits_stored=12, signed=True), tmp_path / "s.dcm"))
    assert np.array_equal(r.pixels, pixels)
    assert r.value_range[0] < 0


def test_colour_dicom_is_read_as_luminance(tmp_path):
    grey = gradient(32, 40, bits=8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    r = load_radiograph(write(dataset(rgb, photometric="RGB"), tmp_path / "rgb.dcm"))
    assert r.pixels.shape == (32, 40)
    assert np.abs(r.pixels.astype(int) - grey).max() <= 1


def test_native_multiframe_first_frame(tmp_path):
    frames = np.stack([gradient(16, 20, bits=12, seed=i) for i in range(3)])
    ds = dataset(frames.reshape(-1, 20), bits_stored=12)
    ds.Rows, ds.NumberOfFrames = 16, 3
    r = load_radiograph(write(ds, tmp_path / "mf.dcm"))
    assert r.frames == 3 and np.array_equal(r.pixels, frames[0])


# ------------------------------------------------------------ spacing


@pytest.mark.parametrize(
    "attributes, spacing, source",
    [
        ({"PixelSpacing": [0.2, 0.25]}, (0.2, 0.25), SpacingSource.PIXEL_SPACING),
        ({"ImagerPixelSpacing": [0.15, 0.15]}, (0.15, 0.15), SpacingSource.IMAGER_PIXEL_SPACING),
        ({"ImagerPixelSpacing": [0.15, 0.15], "EstimatedRadiographicMagnificationFactor": 1.2},
         (0.125, 0.125), SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED),
        # Pixel Spacing equal to Imager Pixel Spacing, uncalibrated: still the detector plane.
        ({"PixelSpacing": [0.15, 0.15], "ImagerPixelSpacing": [0.15, 0.15],
          "EstimatedRadiographicMagnificationFactor": 1.25},
         (0.12, 0.12), SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED),
        # Calibrated Pixel Spacing wins over the detector's.
        ({"PixelSpacing": [0.14, 0.14], "ImagerPixelSpacing": [0.15, 0.15],
          "EstimatedRadiographicMagnificationFactor": 1.25, "PixelSpacingCalibrationType": "GEOMETRY"},
         (0.14, 0.14), SpacingSource.PIXEL_SPACING),
        ({"NominalScannedPixelSpacing": [0.1, 0.1]}, (0.1, 0.1), SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING),
        ({"PixelSpacing": [0, 0]}, None, None),
        ({}, None, None),
    ],
    ids=["pixel", "imager", "imager-magnification", "equal-uncalibrated", "calibrated", "nominal", "zero", "none"],
)
def test_spacing_sources(tmp_path, image12, attributes, spacing, source):
    r = load_radiograph(write(dataset(image12, bits_stored=12, **attributes), tmp_path / "sp.dcm"))
    assert r.spacing_source is source
    if spacing is None:
        assert r.pixel_spacing_mm is None
    else:
        assert r.pixel_spacing_mm == pytest.approx(spacing)


# ------------------------------------------------------------ text and metadata


def _with_raw_name(ds: Dataset, charset: str | None, raw: bytes) -> Dataset:
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.add(pydicom.DataElement(0x00100010, "PN", raw))
    return ds


@pytest.mark.parametrize(
    "charset, raw, expected",
    [
        ("ISO_IR 100", "Müller^Jörg".encode("latin-1"), "Müller^Jörg"),
        ("ISO_IR 192", "Çelik^Ayşe".encode(), "Çelik^Ayşe"),
        ("GB18030", "王^小明".encode("gb18030"), "王^小明"),
        ("ISO_IR 192", b"Bad\xff\xfeName", "Bad"),        # invalid UTF-8: replaced, not fatal
        ("ISO_IR 999", b"Unknown^Charset", "Unknown^Charset"),  # unknown character set name
        (None, "Zoë".encode("latin-1"), "Zo"),           # no charset declared, non-ASCII bytes
    ],
    ids=["latin1", "utf8", "gb18030", "invalid-utf8", "unknown-charset", "undeclared"],
)
def test_patient_name_decoding_never_fails(tmp_path, image12, charset, raw, expected):
    ds = _with_raw_name(dataset(image12, bits_stored=12, ViewPosition="PA", ImageLaterality="L",
                                StudyDescription="CHEST PA"), charset, raw)
    r = load_radiograph(write(ds, tmp_path / "name.dcm"))
    assert r.info.patient_name.startswith(expected)
    assert r.info.view_position == "PA" and r.info.laterality == "L"
    assert r.info.study_description == "CHEST PA" and r.info.patient_id == "TEST-0001"


# ------------------------------------------------------------ refusals


def test_empty_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(RadiographError, match="empty file"):
        load_radiograph(tmp_path / "empty.dcm")


def test_directory(tmp_path):
    with pytest.raises(RadiographError, match="folder"):
        load_radiograph(tmp_path)


def test_text_file(tmp_path):
    (tmp_path / "notes.txt").write_text("patient notes, not an image\n")
    with pytest.raises(RadiographError, match="not an image file"):
        load_radiograph(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    "modality, sop_class, says",
    [("PR", "1.2.840.10008.5.1.4.1.1.11.1", "presentation state"),
     ("KO", "1.2.840.10008.5.1.4.1.1.88.59", "key object selection")],
)
def test_non_image_objects(tmp_path, modality, sop_class, says):
    ds = dataset(np.zeros((2, 2), np.uint8), modality=modality, sop_class=sop_class)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        del ds[keyword]
    with pytest.raises(RadiographError, match=f"no image in this file: it is a {says}"):
        load_radiograph(write(ds, tmp_path / "obj.dcm"))


def test_huge_dimensions_refused_before_decoding(tmp_path):
    ds = dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = ds.Columns = MAX_DIMENSION + 1  # the 8 bytes of pixel data are never looked at
    with pytest.raises(RadiographError, match="more than 20000 per side"):
        load_radiograph(write(ds, tmp_path / "huge.dcm"))


def test_decode_over_one_gib_refused(tmp_path):
    ds = dataset(np.zeros((2, 2), np.uint16))
    ds.Rows = ds.Columns = 19000
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    with pytest.raises(RadiographError, match="GiB; more than 1 GiB is refused"):
        load_radiograph(write(ds, tmp_path / "big.dcm"))


def test_pixel_data_shorter_than_declared(tmp_path, image12):
    ds = dataset(image12, bits_stored=12)
    ds.PixelData = ds.PixelData[:-100]
    with pytest.raises(RadiographError, match="truncated pixel data: 6044 of 6144 bytes"):
        load_radiograph(write(ds, tmp_path / "short.dcm"))


def test_pixel_data_longer_than_declared_loads_with_a_note(tmp_path, image12):
    ds = dataset(image12, bits_stored=12)
    ds.PixelData = ds.PixelData + b"\x00" * 64
    r = load_radiograph(write(ds, tmp_path / "long.dcm"))
    assert np.array_equal(r.pixels, image12)
    assert r.notes  # pydicom's warning about the excess is kept


def test_unicode_path_with_spaces(tmp_path, image12):
    folder = tmp_path / "Thorax Studien ü 胸部"
    folder.mkdir()
    r = load_radiograph(write(dataset(image12, bits_stored=12), folder / "Röntgen PA.dcm"))
    assert r.rows == 64


# ------------------------------------------------------------ raster


@pytest.mark.parametrize("extension", [".png", ".tif"])
@pytest.mark.parametrize("bits", [8, 16])
def test_raster_8_and_16_bits(tmp_path, extension, bits):
    pixels = gradient(40, 30, bits=12 if bits == 16 else 8)
    path = tmp_path / f"image{extension}"
    assert cv2.imwrite(str(path), pixels)
    r = load_radiograph(path)
    assert np.array_equal(r.pixels, pixels)
    assert r.bits_stored == bits and r.transfer_syntax is None
    assert r.window_source is (WindowSource.FULL_RANGE if bits == 8 else WindowSource.HISTOGRAM)


def test_a_float_tiff_is_read_as_its_values_and_reported_as_32_bits(tmp_path):
    """A TIFF of 32-bit floats (what image processing writes): its values as they are, windowed over them, and
    inspect's bits_stored says 32, not the 16 of an integer image."""
    pixels = (gradient(40, 30, bits=12).astype(np.float32) / 4095.0) * 3.5 - 1.0
    path = tmp_path / "processed.tif"
    assert cv2.imwrite(str(path), pixels)
    r = load_radiograph(path)
    assert r.pixels.dtype == np.float32 and np.array_equal(r.pixels, pixels)
    assert r.bits_stored == 32 and r.window_source is WindowSource.HISTOGRAM
    assert -1.0 <= r.window.center - r.window.width / 2 < r.window.center + r.window.width / 2 <= 2.5


def test_jpeg_and_colour_raster(tmp_path):
    grey = gradient(40, 30, bits=8)
    path = tmp_path / "colour.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    r = load_radiograph(path)
    assert r.file_format == "JPEG" and r.photometric == "RGB" and r.pixels.ndim == 2
    assert np.abs(r.pixels.astype(int) - grey).max() <= 6


def test_truncated_png_and_jpeg(tmp_path):
    grey = gradient(64, 64, bits=8)
    for extension in (".png", ".jpg"):
        ok, encoded = cv2.imencode(extension, grey)
        path = tmp_path / f"cut{extension}"
        path.write_bytes(encoded.tobytes()[: len(encoded) // 2])
        with pytest.raises(RadiographError, match="truncated"):
            load_radiograph(path)


def test_png_decompression_bomb_refused_before_decoding(tmp_path):
    """A 30000 × 30000 PNG of zeros compresses to a few hundred kB; it must not be decoded."""
    import struct
    import zlib

    width = height = 30000
    row = b"\x00" + b"\x00" * width
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    path = tmp_path / "bomb.png"
    path.write_bytes(png)
    with pytest.raises(RadiographError, match="more than 20000 per side"):
        load_radiograph(path)
