"""Issue 7, bad input: a generated corpus of malformed files, each refused with one clear line within 5 s.

Every case is built here (pydicom, raw bytes, zlib/struct): truncations at many offsets, wrong
lengths and VRs, huge Rows/Columns, pixel data shorter or longer than declared, encodings no
plugin decodes, non-image SOP classes, empty files, PNG decompression bombs, non-UTF-8 text,
paths with spaces and unicode, folders, links and random bytes. Inputs that are in fact valid
(odd text, extra pixel bytes) are split out and must load. The huge cases run in a subprocess
that measures peak resident memory: they must be refused before anything big is allocated.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.radiograph import Radiograph

from conftest import ROOT
from dicom_factory import dataset, gradient, write

SECONDS_PER_CASE = 5.0      # the bound
MAX_RSS_GROWTH_MB = 300     # far below the 1 GiB a decode may use: refused before allocating

Builder = Callable[[Path], Path]
CORPUS: dict[str, tuple[Builder, str]] = {}   # case id -> (builder, what the message must say)
HUGE: list[str] = []                          # cases whose memory is measured in a subprocess


def case(name: str, says: str, *, huge: bool = False) -> Callable[[Builder], Builder]:
    """Register a builder that writes one malformed input under a folder and returns its path."""
    def register(builder: Builder) -> Builder:
        assert name not in CORPUS, name
        CORPUS[name] = (builder, says)
        if huge:
            HUGE.append(name)
        return builder
    return register


# ------------------------------------------------------------ byte-level helpers

def _base(**attributes) -> Dataset:
    return dataset(gradient(64, 48, bits=12), bits_stored=12, **attributes)


def _bytes(ds: Dataset) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


VALID = _bytes(_base())
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def _elements(data: bytes) -> dict[tuple[int, int], tuple[int, int, int]]:
    """Explicit VR LE walk of a flat file: (group, element) -> (offset, header length, value length)."""
    found = {}
    offset = 132
    while offset + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        vr = data[offset + 4:offset + 6]
        if vr in _LONG_VRS:
            header, length = 12, struct.unpack_from("<I", data, offset + 8)[0]
        else:
            header, length = 8, struct.unpack_from("<H", data, offset + 6)[0]
        found[(group, element)] = (offset, header, length)
        if length == 0xFFFFFFFF:
            break
        offset += header + length
    return found


ELEMENTS = _elements(VALID)
META_END = max(o + h + n for (g, _), (o, h, n) in ELEMENTS.items() if g == 0x0002)
PIXEL_AT, PIXEL_HEADER, PIXEL_LENGTH = ELEMENTS[(0x7FE0, 0x0010)]
NAME_AT, _, NAME_LENGTH = ELEMENTS[(0x0010, 0x0010)]
ROWS_AT = ELEMENTS[(0x0028, 0x0010)][0]


def _short(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value) if length is None else length) + value


def _long(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    return (struct.pack("<HH", group, element) + vr + b"\0\0"
            + struct.pack("<I", len(value) if length is None else length) + value)


def _replace(data: bytes, tag: tuple[int, int], new: bytes) -> bytes:
    offset, header, length = _elements(data)[tag]
    return data[:offset] + new + data[offset + header + length:]


def _write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zeros_stream(total: int, *, raw: bool) -> bytes:
    """A real deflate bomb: `total` zero bytes in a few kB, built by repeating one fully flushed block.

    After Z_FULL_FLUSH a deflate block refers to nothing before it, so copies of it concatenate.
    """
    block = 1 << 24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(b"\0" * block) + compressor.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(total, block)
    tail = compressor.compress(b"\0" * rest) + compressor.flush()
    body = piece * count + tail
    if raw:
        return body
    adler = 1
    for _ in range(count):
        adler = zlib.adler32(b"\0" * block, adler)
    adler = zlib.adler32(b"\0" * rest, adler)
    return b"\x78\xda" + body + struct.pack(">I", adler)


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes, *, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + extra
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def _png_bomb(width: int, height: int, bit_depth: int, colour_type: int, palette: bool = False) -> bytes:
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    row = 1 + width * channels * bit_depth // 8
    extra = _png_chunk(b"PLTE", b"\0\0\0") if palette else b""
    return _png(width, height, bit_depth, colour_type, _zeros_stream(row * height, raw=False), extra=extra)


def _without_image(ds: Dataset) -> Dataset:
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        del ds[keyword]
    return ds


# ------------------------------------------------------------ truncations of a valid DICOM file

TRUNCATIONS = {
    "preamble-1": (1, "not an image file"),
    "preamble-64": (64, "not a readable DICOM file"),
    "preamble-128": (128, "not a readable DICOM file"),
    "inside-DICM": (130, "not a readable DICOM file"),
    "after-DICM": (132, "DICOM"),
    "meta-element-header": (136, "DICOM"),
    "meta-transfer-syntax-value": (ELEMENTS[(0x0002, 0x0010)][0] + 12, "DICOM"),
    "end-of-file-meta": (META_END, "no image|DICOM"),
    "dataset-element-header": (META_END + 5, "DICOM"),
    "inside-patient-name": (NAME_AT + 10, "truncated .*DICOM file"),
    "pixel-element-header": (PIXEL_AT + 6, "truncated .*no pixel data"),
    "pixel-length-field": (PIXEL_AT + 10, "truncated DICOM file"),
    "pixel-value-empty": (PIXEL_AT + PIXEL_HEADER, "pixel data"),
    "pixel-value-1-byte": (PIXEL_AT + PIXEL_HEADER + 1, "pixel data"),
    "pixel-value-half": (PIXEL_AT + PIXEL_HEADER + PIXEL_LENGTH // 2, "pixel data"),
    "pixel-value-minus-2": (len(VALID) - 2, "pixel data"),
    "pixel-value-minus-1": (len(VALID) - 1, "pixel data"),
}

for _label, (_at, _says) in TRUNCATIONS.items():
    case(f"truncated-{_label}@{_at}", _says)(
        lambda folder, at=_at: _write(folder, "cut.dcm", VALID[:at]))


@case("truncated-bare-dicom-mid-header", "truncated or corrupt DICOM file")
def _(folder):
    path = write(_base(), folder / "bare", file_meta=False)
    return _write(folder, "bare-cut", path.read_bytes()[:90])


@case("truncated-rle-inside-offset-table", "pixel data|DICOM")
def _(folder):
    data = _bytes(_compressed(RLELossless))
    at = data.rfind(b"\xfe\xff\x00\xe0") + 6  # inside the first item header (Basic Offset Table)
    return _write(folder, "rle.dcm", data[:at])


@case("truncated-rle-inside-fragment", "truncated")
def _(folder):
    data = _bytes(_compressed(RLELossless))
    return _write(folder, "rle.dcm", data[: len(data) - 400])


@case("truncated-jpeg2000-half", "truncated")
def _(folder):
    data = _bytes(_compressed(JPEG2000Lossless))
    pixel = data.rfind(b"\xe0\x7f\x10\x00")
    return _write(folder, "j2k.dcm", data[: pixel + (len(data) - pixel) // 2])


@case("truncated-deflated-dataset", "DICOM")
def _(folder):
    ds = _base()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = _bytes(ds)
    return _write(folder, "deflated.dcm", data[: META_END + (len(data) - META_END) // 2])


def _compressed(syntax: str) -> Dataset:
    ds = _base()
    ds.compress(syntax)
    return ds


# ------------------------------------------------------------ wrong lengths and VRs

@case("length-field-beyond-end-of-file", "truncated or corrupt DICOM file")
def _(folder):
    return _write(folder, "len.dcm", VALID[:NAME_AT + 6] + struct.pack("<H", 0xFFF0) + VALID[NAME_AT + 8:])


@case("undefined-length-on-text-element", "DICOM")
def _(folder):
    return _write(folder, "undef.dcm", _replace(VALID, (0x0010, 0x0010), _long(0x0010, 0x0010, b"UN", b"", 0xFFFFFFFF)))


@case("rows-with-3-byte-length", "Rows cannot be read")
def _(folder):
    return _write(folder, "rows3.dcm", _replace(VALID, (0x0028, 0x0010), _short(0x0028, 0x0010, b"US", b"\x40\x00\x00")))


@case("rows-empty", "Rows is missing or empty")
def _(folder):
    return _write(folder, "rows0.dcm", _replace(VALID, (0x0028, 0x0010), _short(0x0028, 0x0010, b"US", b"")))


@case("rows-as-text-vr", "Rows is not a number \\('sixty-four'\\)")
def _(folder):
    return _write(folder, "rowsLO.dcm", _replace(VALID, (0x0028, 0x0010), _short(0x0028, 0x0010, b"LO", b"sixty-four")))


@case("rows-unknown-vr", "Rows cannot be read")
def _(folder):
    return _write(folder, "rowsZZ.dcm", _replace(VALID, (0x0028, 0x0010), _short(0x0028, 0x0010, b"ZZ", b"\x40\x00")))


@case("native-pixel-data-undefined-length", "pixel data|DICOM")
def _(folder):
    return _write(folder, "undef-pixels.dcm", VALID[:PIXEL_AT + 8] + b"\xff\xff\xff\xff" + VALID[PIXEL_AT + 12:])


@case("sequence-with-garbage-items", "DICOM")
def _(folder):
    garbage = b"\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"\x01\x02" * 4 + b"\x12\x34\x56\x78" * 6
    element = _long(0x0008, 0x1140, b"SQ", garbage, 0xFFFFFFFF)
    return _write(folder, "seq.dcm", VALID[:NAME_AT] + element + VALID[NAME_AT:])


@case("header-only-pixel-data-removed", "^header only: the image data was removed")
def _(folder):
    return _write(folder, "header-only.dcm", VALID[:PIXEL_AT])


@case("pixel-data-element-empty", "^header only: the image data was removed")
def _(folder):
    return _write(folder, "empty-pixels.dcm", VALID[:PIXEL_AT] + _long(0x7FE0, 0x0010, b"OW", b""))


@case("sequences-nested-5000-deep", "^damaged DICOM header: sequences nested too deeply to read$")
def _(folder):
    opened = (_long(0x0040, 0xA730, b"SQ", b"", 0xFFFFFFFF) + b"\xfe\xff\x00\xe0\xff\xff\xff\xff") * 5000
    closed = (b"\xfe\xff\x0d\xe0\0\0\0\0" + b"\xfe\xff\xdd\xe0\0\0\0\0") * 5000
    return _write(folder, "deep.dcm", VALID[:PIXEL_AT] + opened + closed + VALID[PIXEL_AT:])


@case("file-ends-inside-a-sequence-item", "^truncated or damaged DICOM file: it ends inside a sequence item$")
def _(folder):
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + _short(0x0008, 0x1150, b"UI", b"1.2.3\0")
    return _write(folder, "ends-in-item.dcm",
                  VALID[:NAME_AT] + _long(0x0008, 0x1140, b"SQ", b"", 0xFFFFFFFF) + item + b"\xfe\xff")


@case("bits-allocated-12", "Bits Allocated")
def _(folder):
    return write(_base(BitsAllocated=12), folder / "ba12.dcm")


@case("samples-per-pixel-4", "Samples per Pixel")
def _(folder):
    return write(_base(SamplesPerPixel=4), folder / "spp4.dcm")


@case("bits-stored-above-bits-allocated", "image header invalid: Bits Stored 20 with Bits Allocated 16")
def _(folder):
    return write(_base(BitsStored=20, HighBit=19), folder / "bs20.dcm")


@case("rows-zero", "no pixels")
def _(folder):
    return write(_base(Rows=0), folder / "rows-zero.dcm")


@case("number-of-frames-negative", "Number of Frames")
def _(folder):
    return write(_base(NumberOfFrames=-3), folder / "frames-negative.dcm")


@case("number-of-frames-two-billion", "truncated pixel data")
def _(folder):
    return write(_base(NumberOfFrames=2_000_000_000), folder / "frames-huge.dcm")


@case("photometric-unknown", "unsupported Photometric Interpretation .XYZ.")
def _(folder):
    return write(_base(PhotometricInterpretation="XYZ"), folder / "xyz.dcm")


@case("rescale-slope-not-a-number", "RescaleSlope is not a number")
def _(folder):
    data = _bytes(_base(RescaleSlope="2", RescaleIntercept="0"))
    return _write(folder, "slope.dcm", _replace(data, (0x0028, 0x1053), _short(0x0028, 0x1053, b"DS", b"steep ")))


# ------------------------------------------------------------ huge Rows/Columns, decode over 1 GiB

@case("rows-columns-65535-bits-32", "more than 20000 per side", huge=True)
def _(folder):
    ds = _base(BitsAllocated=32, BitsStored=32, HighBit=31)
    ds.Rows = ds.Columns = 65535
    return write(ds, folder / "huge.dcm")


@case("decode-1.5-gib-at-20000-per-side", "GiB; more than 1 GiB is refused", huge=True)
def _(folder):
    ds = _base(BitsAllocated=32, BitsStored=32, HighBit=31)
    ds.Rows = ds.Columns = 20000
    return write(ds, folder / "big.dcm")


@case("float-pixel-data-2-gib", "GiB; more than 1 GiB is refused", huge=True)
def _(folder):
    ds = _base()
    del ds.PixelData
    ds.Rows = ds.Columns = 16384
    ds.BitsAllocated = 64
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.DoubleFloatPixelData = b"\0" * 64
    return write(ds, folder / "float.dcm")


@case("deflate-bomb-2-gib-dataset", "GiB", huge=True)
def _(folder):
    """A Deflated Explicit VR data set of 2 MB that inflates to 2 GiB: pydicom would inflate it whole."""
    meta = _bytes(_deflated_meta())
    head = meta[:max(o + h + n for (o, h, n) in _elements(meta).values())]  # File Meta only
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    element = _long(0x0009, 0x1010, b"UN", b"", 0x7FFFFFF0)  # a private element, 2 GiB of zeros
    prefix = compressor.compress(element) + compressor.flush(zlib.Z_FULL_FLUSH)
    return _write(folder, "bomb.dcm", head + prefix + _zeros_stream(0x7FFFFFF0, raw=True))


def _deflated_meta() -> Dataset:
    ds = Dataset()
    ds.file_meta = _base().file_meta
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


@case("png-bomb-65535-square", "more than 20000 per side", huge=True)
def _(folder):
    """IHDR says 65535 × 65535; the IDAT is a real deflate stream of 64 MiB of zeros in a few kB."""
    row = 1 + 65535
    return _write(folder, "bomb.png", _png(65535, 65535, 8, 0, _zeros_stream(row * 1024, raw=False)))


@case("png-bomb-over-pillow-limit-16-bit-rgba", "GiB; more than 1 GiB is refused", huge=True)
def _(folder):
    return _write(folder, "bomb16.png", _png_bomb(20000, 14000, 16, 6))


@case("png-bomb-16-bit-rgb", "GiB; more than 1 GiB is refused", huge=True)
def _(folder):
    """Pillow calls a 16-bit RGB PNG mode "RGB" (3 bytes a pixel); OpenCV decodes it to 6."""
    return _write(folder, "bomb-rgb16.png", _png_bomb(20000, 10000, 16, 2))


@case("png-bomb-palette", "GiB; more than 1 GiB is refused", huge=True)
def _(folder):
    """A palette PNG is one byte a pixel on disk, three once OpenCV expands it to BGR."""
    return _write(folder, "bomb-palette.png", _png_bomb(20000, 19000, 8, 3, palette=True))


# ------------------------------------------------------------ pixel data shorter than declared

@case("pixel-data-short-by-2-bytes", "truncated pixel data")
def _(folder):
    ds = _base()
    ds.PixelData = ds.PixelData[:-2]
    return write(ds, folder / "short2.dcm")


@case("pixel-data-short-by-1-byte", "truncated pixel data: 6143 of 6144 bytes")
def _(folder):
    """An odd length field (pydicom would pad the value when writing it, so the bytes are patched)."""
    return _write(folder, "short1.dcm", VALID[:PIXEL_AT + 8] + struct.pack("<I", PIXEL_LENGTH - 1) + VALID[PIXEL_AT + 12:-1])


@case("pixel-data-short-by-a-lot", "truncated pixel data: 16 of 6144 bytes")
def _(folder):
    ds = _base()
    ds.PixelData = ds.PixelData[:16]
    return write(ds, folder / "short-lot.dcm")


@case("pixel-data-declared-larger-frames", "truncated pixel data")
def _(folder):
    ds = _base()
    ds.Rows = 4096  # the 6144 bytes stored hold only 64 rows
    return write(ds, folder / "rows-larger.dcm")


@case("encapsulated-pixel-data-under-native-syntax", "pixel data")
def _(folder):
    ds = _compressed(RLELossless)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return write(ds, folder / "encaps-native.dcm")


@case("native-pixel-data-under-rle-syntax", "pixel data")
def _(folder):
    ds = _base()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([ds.PixelData])
    return write(ds, folder / "native-as-rle.dcm")


@case("rle-segment-count-too-large", "pixel data")
def _(folder):
    ds = _base()
    ds.file_meta.TransferSyntaxUID = RLELossless
    header = struct.pack("<16I", 15, *([64] * 15))  # 15 segments declared, none present
    ds.PixelData = encapsulate([header])
    return write(ds, folder / "rle-segments.dcm")


# ------------------------------------------------------------ encodings no plugin decodes

@case("private-transfer-syntax", "unknown transfer syntax 1.2.826.0.1.3680043.9999.1")
def _(folder):
    ds = _base()
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9999.1"
    ds.PixelData = encapsulate([b"\x00" * 64])
    path = folder / "private.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return path


@case("mpeg4-transfer-syntax", "no decoder")
def _(folder):
    ds = _base()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.102"
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb0" + b"\x00" * 60])
    return write(ds, folder / "mpeg4.dcm")


@case("hevc-transfer-syntax", "no decoder")
def _(folder):
    ds = _base()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.107"
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + b"\x00" * 60])
    return write(ds, folder / "hevc.dcm")


@case("jpip-referenced-no-pixel-data", "no image in this file: its pixels are on a JPIP server")
def _(folder):
    ds = _without_image(_base())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.94"
    ds.PixelDataProviderURL = "http://pacs.invalid/jpip"
    return write(ds, folder / "jpip.dcm")


# ------------------------------------------------------------ non-image SOP classes

NON_IMAGES = {
    "comprehensive-sr": ("SR", "1.2.840.10008.5.1.4.1.1.88.33", "structured report"),
    "grayscale-presentation-state": ("PR", "1.2.840.10008.5.1.4.1.1.11.1", "presentation state"),
    "rt-plan": ("RTPLAN", "1.2.840.10008.5.1.4.1.1.481.5", "RT plan"),
    "encapsulated-pdf": ("DOC", "1.2.840.10008.5.1.4.1.1.104.1", "encapsulated document"),
    "rt-structure-set": ("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3", "RT structure set"),
    "ecg-waveform": ("ECG", "1.2.840.10008.5.1.4.1.1.9.1.1", "without pixel data"),
}

for _label, (_modality, _sop, _says) in NON_IMAGES.items():
    @case(f"non-image-{_label}", f"no image in this file: it is .*{_says}")
    def _(folder, modality=_modality, sop=_sop):
        ds = _without_image(_base(modality=modality, sop_class=sop))
        if modality == "DOC":
            ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
            ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
        return write(ds, folder / "object.dcm")


@case("non-image-sr-with-non-utf8-text", "structured report")
def _(folder):
    ds = _without_image(_base(modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.11"))
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.add(pydicom.DataElement(0x00081030, "LO", b"Befund \xff\xfe\xfd"))
    return write(ds, folder / "sr.dcm")


# ------------------------------------------------------------ empty and nearly empty

@case("empty-dcm", "empty file")
def _(folder):
    return _write(folder, "empty.dcm", b"")


@case("empty-png", "empty file")
def _(folder):
    return _write(folder, "empty.png", b"")


@case("png-signature-only", "PNG")
def _(folder):
    return _write(folder, "signature.png", b"\x89PNG\r\n\x1a\n")


@case("preamble-and-dicm-only-zeros-after", "DICOM")
def _(folder):
    return _write(folder, "zeros.dcm", b"\0" * 128 + b"DICM" + b"\0" * 4)


@case("one-mib-of-zeros", "not a readable DICOM file")
def _(folder):
    return _write(folder, "zeros.bin", b"\0" * (1 << 20))


@case("file-meta-only", "nothing could be read after the File Meta")
def _(folder):
    return _write(folder, "meta-only.dcm", VALID[:META_END])


# ------------------------------------------------------------ raster damage

@case("png-bad-crc", "PNG")
def _(folder):
    data = bytearray(_png(4, 4, 8, 0, zlib.compress(b"\0\0\0\0\0" * 4)))
    data[29] ^= 0xFF  # the IHDR CRC
    return _write(folder, "crc.png", bytes(data))


@case("png-idat-not-zlib", "PNG")
def _(folder):
    return _write(folder, "idat.png", _png(4, 4, 8, 0, b"not zlib at all"))


@case("jpeg-sof-65535-square", "more than 20000 per side|JPEG", huge=True)
def _(folder):
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 65535, 65535, 1) + b"\x01\x11\x00"
    return _write(folder, "huge.jpg", b"\xff\xd8" + sof + b"\xff\xd9")


@case("tiff-65535-square", "more than 20000 per side|TIFF", huge=True)
def _(folder):
    entries = [(256, 4, 1, 65535), (257, 4, 1, 65535), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 65535), (279, 4, 1, 65535 * 65535)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return _write(folder, "huge.tif", b"II*\x00" + struct.pack("<I", 8) + ifd)


# ------------------------------------------------------------ random and non-UTF-8 bytes

def _random(seed: int, size: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@case("random-4-kib", "not an image file|DICOM")
def _(folder):
    return _write(folder, "random.bin", _random(1, 4096))


@case("random-after-dicom-preamble", "not a readable DICOM file|corrupt DICOM")
def _(folder):
    return _write(folder, "random.dcm", b"\0" * 128 + b"DICM" + _random(2, 4096))


@case("random-after-png-signature", "PNG")
def _(folder):
    return _write(folder, "random.png", b"\x89PNG\r\n\x1a\n" + _random(3, 4096))


@case("random-after-jpeg-marker", "JPEG")
def _(folder):
    return _write(folder, "random.jpg", b"\xff\xd8\xff" + _random(4, 4096))


@case("random-after-tiff-header", "TIFF")
def _(folder):
    return _write(folder, "random.tif", b"II*\x00" + _random(5, 4096))


@case("random-after-bare-dicom-group", "DICOM|no image|image header")
def _(folder):
    return _write(folder, "random-bare", b"\x08\x00\x05\x00" + _random(6, 4096))


@case("text-file-latin1-not-utf8", "not an image file")
def _(folder):
    return _write(folder, "Befund.txt", "Röntgen Thorax: o.B. - Prüfung".encode("latin-1"))


# ------------------------------------------------------------ paths: spaces, unicode, folders, links

@case("corrupt-file-under-unicode-path-with-spaces", "truncated pixel data")
def _(folder):
    where = folder / "Thorax Studien ü 胸部"
    where.mkdir()
    ds = _base()
    ds.PixelData = ds.PixelData[:100]
    return write(ds, where / "Röntgen PA (kaputt).dcm")


@case("non-utf8-file-name", "empty file")
def _(folder):
    path = Path(os.fsdecode(bytes(folder) + b"/r\xf6ntgen \xff.dcm"))
    path.write_bytes(b"")
    return path


@case("folder-with-unicode-name", "is a folder")
def _(folder):
    where = folder / "Studie 胸部.dcm"
    where.mkdir()
    return where


@case("missing-file", "no such file")
def _(folder):
    return folder / "nicht da.dcm"


@case("dangling-symlink", "broken or looping symbolic link")
def _(folder):
    link = folder / "link.dcm"
    link.symlink_to(folder / "gone.dcm")
    return link


@case("symlink-loop", "broken or looping symbolic link")
def _(folder):
    (folder / "a.dcm").symlink_to(folder / "b.dcm")
    (folder / "b.dcm").symlink_to(folder / "a.dcm")
    return folder / "a.dcm"


@case("named-pipe", "not a regular file")
def _(folder):
    path = folder / "pipe.dcm"
    os.mkfifo(path)
    return path


# ------------------------------------------------------------ the tests


def test_corpus_is_large_and_covers_every_category():
    assert len(CORPUS) >= 50
    for word in ("truncated", "length", "rows", "65535", "pixel-data-short", "transfer-syntax", "non-image",
                 "empty", "png-bomb", "non-utf8", "unicode", "random", "symlink", "folder"):
        assert any(word in name for name in CORPUS), word


def _assert_clear(message: str, says: str, name: str) -> None:
    import re

    assert message and "\n" not in message and message == message.strip(), (name, message)
    assert len(message) <= 240, (name, message)
    for sign in ("Traceback", "object at 0x", "Error(", "<class", "File \"", "NoneType", "object is not",
                 "has no len()", "has no attribute", "recursion depth", "No tag to read", "index out of range",
                 "invalid literal", "unpack", "could not convert", "embedded null", "Error -", "cannot identify",
                 "pylibjpeg:", "pydicom:", "gdcm:", "must be in the range", "/tmp/"):
        assert sign not in message, (name, message)  # Python's or a library's words (and paths), not the file's
    assert not re.search(r"\w…", message), (name, message)  # never cut inside a word
    assert re.search(says, message), f"{name}: {message!r} does not say {says!r}"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_input_is_refused_clearly_and_quickly(tmp_path, name):
    builder, says = CORPUS[name]
    path = builder(tmp_path)
    started = time.monotonic()
    with pytest.raises(RadiographError) as refused:
        load_radiograph(path)
    elapsed = time.monotonic() - started
    _assert_clear(str(refused.value), says, name)
    assert refused.value.path == str(path)
    assert elapsed < SECONDS_PER_CASE, f"{name} took {elapsed:.1f} s"


# ------------------------------------------------------------ odd but valid: these load


def _raw_text(tag: int, vr: str, raw: bytes, charset: str | None) -> bytes:
    """A valid file whose element `tag` holds `raw` bytes as stored (pydicom would decode them on assignment)."""
    ds = _base()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.add(pydicom.DataElement(tag, vr, "1"))
    group, element = divmod(tag, 0x10000)
    return _replace(_bytes(ds), (group, element), _short(group, element, vr.encode(), raw + b" " * (len(raw) % 2)))


LENIENT = {
    "invalid-utf8-description-declared-utf8": (0x00081030, "LO", b"Thorax \xc3\x28 PA", "ISO_IR 192"),
    "latin1-institution-no-charset": (0x00080080, "LO", "Klinik Zürich".encode("latin-1"), None),
    "bogus-charset-name": (0x00100010, "PN", b"M\xfcller^J\xf6rg", "ISO_IR 9999"),
    "iso2022-broken-escape": (0x00100010, "PN", b"Yamada\x1b$B\xff\xff^Taro", "ISO 2022 IR 87"),
    "gb18030-invalid-bytes": (0x00100010, "PN", b"\x81\x30\xff\xff^X", "GB18030"),
    "window-center-garbage-bytes": (0x00281050, "DS", b"\xff\xfe", None),
    "pixel-spacing-garbage-bytes": (0x00280030, "DS", b"0.1\\\xff", None),
    "uid-with-high-bytes": (0x0020000D, "UI", b"1.2.\xe9\xe8.3", None),
}


@pytest.mark.parametrize("name", sorted(LENIENT))
def test_bad_text_still_loads_with_text_decoded_leniently(tmp_path, name):
    tag, vr, raw, charset = LENIENT[name]
    path = tmp_path / f"{name} ü.dcm"
    path.write_bytes(_raw_text(tag, vr, raw, charset))
    started = time.monotonic()
    r = load_radiograph(path)
    assert time.monotonic() - started < SECONDS_PER_CASE
    assert isinstance(r, Radiograph) and r.pixels.shape == (64, 48)
    for value in (r.info.patient_name, r.info.study_description, r.info.study_instance_uid):
        assert isinstance(value, str) and value.isprintable()


def _group_length_too_large(folder: Path) -> Path:
    offset = ELEMENTS[(0x0002, 0x0000)][0]
    return _write(folder, "meta.dcm", VALID[:offset + 8] + struct.pack("<I", 0x7FFFFFF0) + VALID[offset + 12:])


ODD_BUT_VALID = {
    "file-meta-group-length-too-large": _group_length_too_large,  # pydicom reads group 2 by its tags
    "number-of-frames-zero": lambda folder: write(_base(NumberOfFrames=0), folder / "frames0.dcm"),
    # only the first frame is shown: a count that cannot be read is taken as one (GDCM reads such files too)
    "number-of-frames-not-a-number": lambda folder: _write(folder, "framesX.dcm", _replace(
        _bytes(_base(NumberOfFrames=2)), (0x0028, 0x0008), _short(0x0028, 0x0008, b"IS", b"lots"))),
}


def test_a_modality_lut_that_cannot_be_applied_is_left_out_with_a_note(tmp_path):
    ds = _base()
    item = Dataset()  # an item whose LUT Descriptor and LUT Data are empty: pydicom cannot apply it
    item.add_new(0x00283002, "US", None)
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "OW", None)
    ds.ModalityLUTSequence = [item]
    r = load_radiograph(write(ds, tmp_path / "lut.dcm"))
    assert np.array_equal(r.pixels, gradient(64, 48, bits=12))
    assert "Modality LUT Sequence empty or malformed: not applied (stored values shown)" in r.notes


def test_big_endian_without_file_meta_loads(tmp_path):
    """The retired Explicit VR Big Endian, written without preamble or File Meta (old archives)."""
    bare = _base()
    del bare.file_meta
    bare.PixelData = gradient(64, 48, bits=12).astype(">u2").tobytes()  # pydicom writes OW bytes as given
    bare.save_as(tmp_path / "big-endian", implicit_vr=False, little_endian=False, enforce_file_format=False)
    r = load_radiograph(tmp_path / "big-endian")
    assert np.array_equal(r.pixels, gradient(64, 48, bits=12))
    assert "no File Meta: read as Explicit VR Big Endian" in r.notes


def test_one_bit_segmentation_loads(tmp_path):
    from pydicom.pixels import pack_bits

    mask = (gradient(64, 48, bits=8) > 128).astype(np.uint8)
    ds = dataset(mask, modality="SEG", sop_class="1.2.840.10008.5.1.4.1.1.66.4")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    ds.PixelData = pack_bits(mask)
    r = load_radiograph(write(ds, tmp_path / "seg.dcm"))
    assert np.array_equal(r.pixels, mask)


def test_pydicom_warnings_become_short_notes_never_cut_inside_a_word(tmp_path):
    import re

    uid = "1.2.826.0.1.3680043.8.498." + "1234567890abcdef" * 3  # letters: not a valid UID
    r = load_radiograph(_write(tmp_path, "uid.dcm", _bytes(_base(StudyInstanceUID=uid))))
    assert r.notes, "pydicom warns about the invalid UID"
    for note in r.notes:
        assert len(note) <= 122 and "Please see" not in note and "http" not in note, note
        assert not re.search(r"\w…\w", note) and not re.search(r"[^' ]…$", note), note


@pytest.mark.parametrize("name", sorted(ODD_BUT_VALID))
def test_odd_but_readable_header_loads(tmp_path, name):
    r = load_radiograph(ODD_BUT_VALID[name](tmp_path))
    assert np.array_equal(r.pixels, gradient(64, 48, bits=12))
    if name == "number-of-frames-not-a-number":
        assert "Number of Frames unreadable: read as one frame (the first is shown)" in r.notes


@pytest.mark.parametrize("extra", [1, 2, 1 << 20], ids=["long-by-1-byte", "long-by-2-bytes", "long-by-1-mib"])
def test_pixel_data_longer_than_declared_loads(tmp_path, extra):
    pixels = gradient(64, 48, bits=12)
    ds = dataset(pixels, bits_stored=12)
    ds.PixelData = ds.PixelData + b"\x01" * extra
    r = load_radiograph(write(ds, tmp_path / "long.dcm"))
    assert np.array_equal(r.pixels, pixels)


# ------------------------------------------------------------ memory: refused before allocating


def _sparse_cine(folder: Path) -> Path:
    """250 000 frames of 64 × 48 (1.5 GB of Pixel Data) in a sparse file: valid, but only frame 1 is needed."""
    ds = _base(NumberOfFrames=250_000)
    ds.PixelData = b""
    data = _bytes(ds)
    at = _elements(data)[(0x7FE0, 0x0010)][0]
    frame = gradient(64, 48, bits=12).tobytes()
    path = folder / "cine.dcm"
    with open(path, "wb") as stream:
        stream.write(data[:at + 8] + struct.pack("<I", len(frame) * 250_000) + frame)
        stream.truncate(at + 12 + len(frame) * 250_000)
    return path

_MEASURE = """
import json, resource, sys
from viewer.errors import RadiographError
from viewer.loader import load_radiograph
import cv2, pydicom, PIL.Image, numpy, pydicom.pixels  # imported before the baseline
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        load_radiograph(path)
        outcome = "loaded"
    except RadiographError as exc:
        outcome = str(exc)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    print(json.dumps({"path": path, "outcome": outcome, "grown_mb": grown}), flush=True)
"""


@pytest.mark.timeout(120)
def test_huge_inputs_are_refused_before_allocating(tmp_path):
    paths = []
    for name in HUGE:
        folder = tmp_path / name
        folder.mkdir()
        paths.append(str(CORPUS[name][0](folder)))
    paths.append(str(_sparse_cine(tmp_path)))
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))\n"  # a safety net
    done = subprocess.run([sys.executable, "-c", limit + _MEASURE, *paths], capture_output=True, text=True,
                          timeout=110, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in results] == paths
    for name, result in zip([*HUGE, "sparse-cine-1.5-gb"], results, strict=True):
        assert (result["outcome"] == "loaded") == (name == "sparse-cine-1.5-gb"), (name, result["outcome"])
        assert result["grown_mb"] < MAX_RSS_GROWTH_MB, f"{name}: resident memory grew {result['grown_mb']:.0f} MB"


# ------------------------------------------------------------ the inspector on corpus files


def test_inspect_on_corpus_files_exits_2_one_line_each_no_traceback(tmp_path):
    names = [f"truncated-pixel-value-half@{TRUNCATIONS['pixel-value-half'][0]}", "rows-columns-65535-bits-32",
             "private-transfer-syntax", "non-image-comprehensive-sr", "png-bomb-65535-square",
             "corrupt-file-under-unicode-path-with-spaces", "random-4-kib"]
    paths = []
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        paths.append(str(CORPUS[name][0](folder)))
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", *paths],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.strip() == "", done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths)
    for path, line in zip(paths, lines, strict=True):
        record = json.loads(line)
        assert record == {"path": path, "ok": False, "error": record["error"]}
        _assert_clear(record["error"], CORPUS[names[paths.index(path)]][1], path)
