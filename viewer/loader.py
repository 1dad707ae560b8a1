"""Read a file into a `Radiograph`: DICOM (any transfer syntax the installed plugins decode) or PNG/JPEG/TIFF.

Every failure becomes a `RadiographError` with one line a person can act on; nothing else escapes.
"""

from __future__ import annotations

import math
import os
import re
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

# The whole decoding stack is imported with this module, before any loader thread runs: opening several files at
# once on a cold start had each worker thread import pydicom on first use, and concurrent first imports of a
# package that imports itself in a circle give one thread a half-initialised module ("cannot import name
# 'Dataset' from partially initialized module 'pydicom.dataset'"). `import pydicom` comes first, so a thread
# that gets here while another is importing waits for the whole package.
import cv2
import numpy as np
import pydicom
import pydicom.pixels  # registers every decoder plugin, importing its backend (pylibjpeg, GDCM …)
from PIL import Image
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_preamble
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from viewer import voi
from viewer.errors import RadiographError
from viewer.radiograph import (
    Radiograph,
    SpacingSource,
    StudyInfo,
    VoiFunction,
    Window,
    WindowSource,
)

Image.init()  # Pillow's format plugins, otherwise imported by whichever thread opens the first PNG/TIFF

MAX_DIMENSION = 20_000          # rows or columns beyond this are refused
MAX_DECODE_BYTES = 1 << 30      # one decoded frame beyond 1 GiB is refused before decoding
DEFER_SIZE = "1 MB"             # pixel data is read from disk only once the header has been checked

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
# Groups a DICOM data set without preamble usually starts with (little endian).
_DICOM_FIRST_GROUPS = {0x0000, 0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}

# pydicom's message for native pixel data shorter than Rows × Columns × … declares.
_SHORT_PIXEL_DATA = re.compile(r"less than expected \((?P<have>\d+) vs (?P<need>\d+) bytes\)")

# What a data set without an image is, for the error message.
_PHOTOMETRICS = {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
                 "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT"}  # those pydicom converts
_NON_IMAGE_MODALITIES = {
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection document",
    "DOC": "an encapsulated document",
    "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan",
    "SEG": "a segmentation",
    "REG": "a registration",
}


def load_radiograph(path: str | os.PathLike[str]) -> Radiograph:
    """Load the first frame of `path` as a `Radiograph`, or raise `RadiographError`."""
    file = Path(path)
    where = str(file)
    try:
        if file.is_dir():
            raise RadiographError("is a folder, not a file", where)
        if not file.exists():
            broken = file.is_symlink()  # exists() follows links: a dangling or looping one is not "missing"
            raise RadiographError("broken or looping symbolic link" if broken else "no such file", where)
        if not file.is_file():  # opening a named pipe would wait forever for a writer
            raise RadiographError("not a regular file (a pipe, socket or device)", where)
        size = file.stat().st_size
        if size == 0:
            raise RadiographError("empty file (0 bytes)", where)
        with open(file, "rb") as stream:
            head = stream.read(132)
    except RadiographError:
        raise
    except OSError as exc:
        raise RadiographError(f"cannot be read: {exc.strerror or exc}", where) from exc

    # DICM first: a DICOM preamble may itself be a TIFF header (dual-format files).
    if head[128:132] == b"DICM":
        return _load_dicom_file(file, has_preamble=True)
    if head.startswith(_PNG_MAGIC):
        return _load_raster(file, "PNG")
    if head.startswith(_JPEG_MAGIC):
        return _load_raster(file, "JPEG")
    if head[:4] in _TIFF_MAGICS:
        return _load_raster(file, "TIFF")
    if _looks_like_bare_dicom(head):
        return _load_dicom_file(file, has_preamble=False)
    raise RadiographError("not an image file: neither DICOM nor PNG, JPEG or TIFF", where)


def _looks_like_bare_dicom(head: bytes) -> bool:
    """A data set written without preamble and File Meta starts with an even, low group number: little endian,
    or big endian with an explicit VR (the retired Explicit VR Big Endian; pydicom tells the two apart)."""
    if len(head) < 8:
        return False
    if int.from_bytes(head[0:2], "little") in _DICOM_FIRST_GROUPS:
        return True
    vr = head[4:6]
    return int.from_bytes(head[0:2], "big") in _DICOM_FIRST_GROUPS and vr.isalpha() and vr.isupper()


def _load_dicom_file(file: Path, has_preamble: bool) -> Radiograph:
    try:
        return _load_dicom(file, has_preamble)
    except RecursionError as exc:  # sequences nested thousands deep: pydicom reads them recursively
        raise RadiographError("damaged DICOM header: sequences nested too deeply to read", str(file)) from exc


# ---------------------------------------------------------------- DICOM


def _load_dicom(file: Path, has_preamble: bool) -> Radiograph:

    where = str(file)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if has_preamble:
            _check_deflated_size(file, where)
        try:
            ds = pydicom.dcmread(file, force=not has_preamble, defer_size=DEFER_SIZE)
        except InvalidDicomError as exc:  # pydicom's words name its checks; what a reader needs is which part
            raise RadiographError("not a readable DICOM file: its File Meta header is damaged" if has_preamble
                                  else "not a readable DICOM file", where) from exc
        except (EOFError, struct.error) as exc:  # the file ends inside an element header or value
            raise RadiographError("truncated DICOM file: it ends inside a data element", where) from exc
        except RecursionError:
            raise
        except OSError as exc:
            if exc.errno is None:  # pydicom's own: "No tag to read at file position …" inside a sequence
                raise RadiographError("truncated or damaged DICOM file: it ends inside a sequence item",
                                      where) from exc
            raise RadiographError(f"cannot be read: {exc.strerror or exc}", where) from exc
        except zlib.error as exc:
            raise RadiographError("truncated or corrupt DICOM file: its deflated data set cannot be inflated",
                                  where) from exc
        except Exception as exc:  # pydicom raises many types on damaged headers, in Python's words
            raise RadiographError("truncated or corrupt DICOM header", where) from exc
        if len(ds) == 0 and has_preamble:
            raise RadiographError("truncated or corrupt DICOM file: nothing could be read after the File Meta", where)
        if len(ds) == 0:
            raise RadiographError("not an image file: no DICOM elements could be read", where)

        transfer_syntax = _ensure_transfer_syntax(ds, notes)
        frames = _check_image_header(ds, where, notes)
        pixels = _decode_first_frame(ds, transfer_syntax, where, notes)
        pixels = _to_grey_modality_values(pixels, ds, where, notes)
        radiograph = _dicom_radiograph(ds, file, pixels, frames, transfer_syntax, notes)
    pydicom_notes = _warning_notes(caught)
    if pydicom_notes:
        radiograph = _with_notes(radiograph, pydicom_notes)
    return radiograph


def _check_deflated_size(file: Path, where: str) -> None:
    """pydicom inflates a Deflated data set whole, in memory: count its size in chunks first (bombs).

    Anything unreadable here is left for pydicom to report.
    """

    with open(file, "rb") as stream:
        try:
            read_preamble(stream, False)
            meta = read_dataset(stream, False, True, stop_when=lambda tag, vr, length: tag.group != 0x0002)
            if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                return
        except Exception:
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflated = 0
        while not inflater.eof and (chunk := stream.read(1 << 20)):
            while chunk:
                try:
                    inflated += len(inflater.decompress(chunk, 1 << 24))
                except zlib.error:
                    return
                chunk = inflater.unconsumed_tail
                if inflated > MAX_DECODE_BYTES:
                    raise RadiographError(
                        "the Deflated data set inflates to more than 1 GiB; more than 1 GiB is refused", where
                    )


def _ensure_transfer_syntax(ds, notes: list[str]) -> str:
    """Files without File Meta carry no transfer syntax: use what pydicom detected (Implicit VR LE by default)."""

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return str(uid)
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is False:
        uid = ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian
    else:
        uid = ImplicitVRLittleEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    notes.append(f"no File Meta: read as {uid.name}")
    return str(uid)


def _check_image_header(ds, where: str, notes: list[str]) -> int:
    """Refuse what is not an image, or too large to decode, before touching the pixel data."""
    if not any(_has_value(ds, k) for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if "DirectoryRecordSequence" in ds:
            raise RadiographError("this is a DICOMDIR, the index of a CD or USB stick, not an image: open it or "
                                  "its folder to see the images it lists", where)
        if "PixelDataProviderURL" in ds:
            raise RadiographError("no image in this file: its pixels are on a JPIP server "
                                  "(Pixel Data Provider URL), which this viewer does not fetch", where)
        sop_class = str(getattr(ds.get("SOPClassUID"), "name", "") or "")
        if "SOPClassUID" not in ds and "Modality" not in ds and "Rows" not in ds:  # zeros or noise that parsed
            raise RadiographError("not a readable DICOM file: no SOP Class, Modality or image found", where)
        if _ends_inside_an_element(ds):
            raise RadiographError("truncated or corrupt DICOM file: it ends inside a data element, with no pixel "
                                  "data", where)
        if "Rows" in ds or sop_class.endswith("Image Storage") or "Image Storage -" in sop_class:
            raise RadiographError(f"header only: the image data was removed ({sop_class or 'an image'} without "
                                  "Pixel Data) — ask for the complete image", where)
        if "SOPClassUID" not in ds and "Modality" not in ds:  # zeros or noise that happened to parse
            raise RadiographError("not a readable DICOM file: no SOP Class, Modality or image found", where)
        raise RadiographError(f"no image in this file: it is {_describe_non_image(ds)}", where)
    rows = _header_int(ds, "Rows", None, where)
    columns = _header_int(ds, "Columns", None, where)
    samples = _header_int(ds, "SamplesPerPixel", 1, where) or 1  # 0 read as absent, as before
    bits_allocated = _header_int(ds, "BitsAllocated", None, where)
    try:
        frames = _header_int(ds, "NumberOfFrames", 1, where) or 1  # 0 read as absent, as before
    except RadiographError:  # only the first frame is shown: a count that cannot be read must not stop it
        notes.append("Number of Frames unreadable: read as one frame (the first is shown)")
        del ds.NumberOfFrames
        frames = 1
    if rows <= 0 or columns <= 0:
        raise RadiographError(f"image has no pixels ({rows} × {columns})", where)
    if rows > MAX_DIMENSION or columns > MAX_DIMENSION:
        raise RadiographError(
            f"image is {rows} × {columns} pixels; more than {MAX_DIMENSION} per side is refused", where
        )
    if samples not in (1, 3):
        raise RadiographError(f"unsupported Samples per Pixel {samples} (expected 1 or 3)", where)
    if bits_allocated not in (1, 8, 16, 32, 64):
        raise RadiographError(f"unsupported Bits Allocated {bits_allocated}", where)
    if frames < 1:
        raise RadiographError(f"invalid Number of Frames {frames}", where)
    bits_stored = _header_int(ds, "BitsStored", bits_allocated, where)
    if not 1 <= bits_stored <= bits_allocated:
        raise RadiographError(f"image header invalid: Bits Stored {bits_stored} with Bits Allocated "
                              f"{bits_allocated}", where)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric and photometric not in _PHOTOMETRICS:
        raise RadiographError(f"unsupported Photometric Interpretation {photometric[:20]!r}", where)
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        _header_number(ds, keyword, where)
    decode_bytes = rows * columns * samples * max(bits_allocated // 8, 1)
    if decode_bytes > MAX_DECODE_BYTES:
        raise RadiographError(
            f"one frame would decode to {decode_bytes / 2**30:.1f} GiB; more than 1 GiB is refused", where
        )
    if "PhotometricInterpretation" not in ds and samples == 1:
        ds.PhotometricInterpretation = "MONOCHROME2"  # old ACR-NEMA files omit it
    return frames


def _ends_inside_an_element(ds) -> bool:
    """An element's length reaches past the end of the file: the file was cut (or a length is wrong), so the
    image data may be missing for that reason rather than removed on purpose."""
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return False  # positions are in the inflated data, not in the file
    try:
        size = os.path.getsize(ds.filename)
    except (OSError, TypeError):
        return False
    ends = {}
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value_tell is not None:
            ends[tag] = raw.value_tell + raw.length
    if any(end > size for end in ends.values()):
        return True
    last = max(ds.keys(), default=None)
    return last in ends and ends[last] < size  # bytes after the last element: an element header cut short


def _has_value(ds, keyword: str) -> bool:
    """`keyword` is present with a value (an empty Pixel Data element is an image header without its image)."""
    if keyword not in ds:
        return False
    element = ds.get_item(keyword, keep_deferred=True)
    if isinstance(element, RawDataElement):
        return element.length != 0
    return element.value is not None and len(element.value) > 0


def _header_int(ds, keyword: str, default: int | None, where: str) -> int:
    """One Image Pixel attribute as an int; the error names the attribute, not Python's int() message."""
    try:
        value = ds.get(keyword)
    except Exception as exc:  # pydicom converts lazily: a wrong length or VR fails here
        raise RadiographError(f"image header invalid: {keyword} cannot be read (wrong value length or VR)",
                              where) from exc
    if value is None or value == "":
        if default is None:
            raise RadiographError(f"image header incomplete: {keyword} is missing or empty", where)
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise RadiographError(f"image header invalid: {keyword} is not a number ({str(value)[:40]!r})",
                              where) from exc


def _header_number(ds, keyword: str, where: str) -> None:
    """A decimal attribute that must hold a number when present (Rescale Slope and Intercept)."""
    try:
        value = ds.get(keyword)
        if value is not None and value != "":
            float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        shown = ds.get_item(keyword, keep_deferred=True).value
        shown = shown.decode("latin-1", "replace") if isinstance(shown, bytes) else str(shown)
        raise RadiographError(f"image header invalid: {keyword} is not a number ({shown.strip()[:40]!r})",
                              where) from exc


def _describe_non_image(ds) -> str:
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in _NON_IMAGE_MODALITIES:
        kind = _NON_IMAGE_MODALITIES[modality]
    else:
        kind = "a DICOM object without pixel data"
    sop_class = ds.get("SOPClassUID")
    name = getattr(sop_class, "name", "") if sop_class else ""
    if name and name != str(sop_class):
        return f"{kind} ({name})"
    return kind


def _decode_first_frame(ds, transfer_syntax: str, where: str, notes: list[str]) -> np.ndarray:

    uid = UID(transfer_syntax)
    name = uid.name if uid.is_transfer_syntax else transfer_syntax
    if not uid.is_transfer_syntax:
        raise RadiographError(f"unknown transfer syntax {transfer_syntax}: no decoder can read it", where)
    if uid.is_compressed:
        try:
            decoder = get_decoder(uid)
        except NotImplementedError as exc:
            raise RadiographError(f"{name} pixel data: pydicom has no decoder for this encoding", where) from exc
        if not decoder.is_available:
            missing = "; ".join(_missing_plugins(decoder)) or "a pydicom decoder plugin"
            raise RadiographError(
                f"{name} pixel data cannot be decoded: no installed plugin supports it (install {missing})",
                where,
            )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not uid.is_compressed and not uid.is_deflated and frames > 1:
        _keep_first_native_frame(ds, where)
    try:
        ds.pixel_array_options(index=0)
        with _native_output_captured():  # codec libraries print their diagnostics themselves
            pixels = ds.pixel_array
    except MemoryError as exc:
        raise RadiographError("not enough memory to decode the pixel data", where) from exc
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # Rust plugins (pylibjpeg-rle) panic with a BaseException
        short = _SHORT_PIXEL_DATA.search(str(exc))
        if short:
            raise RadiographError(
                f"truncated pixel data: {short['have']} of {short['need']} bytes present ({name})", where
            ) from exc
        # Only for JPEG Extended: elsewhere GDCM might fill in what a truncated file lacks, without a word.
        pixels = _decoded_by_gdcm(ds, frames) if uid == _JPEG_EXTENDED else None
        if pixels is None:
            raise RadiographError(_undecodable(ds, uid, name, exc), where) from exc
        notes.append("decoded by GDCM: pydicom's decoders refused this JPEG Extended variant")
    finally:
        if frames > 1:
            ds.NumberOfFrames = frames  # the header keeps the file's own count
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        pixels = pixels[0]  # some plugins return a frame axis even for one frame
    if not pixels.dtype.isnative:  # big endian files: OpenCV and torch want native order
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


# Which compressed encodings are lossy: what to ask the sender for when one cannot be decoded.
_JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
# those lossy whatever the header says, with their Lossy Image Compression Method (JPEG 2000 and HTJ2K may be
# either: the header says)
LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50": "ISO_10918_1", _JPEG_EXTENDED: "ISO_10918_1",
                  "1.2.840.10008.1.2.4.81": "ISO_14495_1"}
_LOSSLESS_SYNTAXES = {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
                      "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201"}


def _undecodable(ds, uid: UID, name: str, exc: BaseException) -> str:
    """Why no decoder read the pixel data, for a person: the encoding and bit depth, and what to ask for."""
    bits = ds.get("BitsStored") or ds.get("BitsAllocated")
    depth = f" {bits}-bit" if bits else ""
    if uid.is_compressed and uid not in _LOSSLESS_SYNTAXES:
        return (f"pixel data not decodable: {name}{depth} (corrupt, or a variant no installed decoder reads) — "
                "ask for an uncompressed or lossless export")
    return f"corrupt or truncated pixel data ({name}{depth}): the decoder refused it — ask for a new export"


def _decoded_by_gdcm(ds, frames: int) -> np.ndarray | None:
    """The first frame as GDCM's own reader decodes the file: it reads what pydicom's plugins refuse (12-bit
    JPEG Extended with unusual scan parameters, as older CR systems wrote). None when it cannot either."""
    if not isinstance(ds.filename, str):
        return None
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frame_bytes = rows * columns * samples * -(-int(ds.BitsAllocated) // 8)
    if frame_bytes * frames > MAX_DECODE_BYTES:  # GDCM decodes every frame
        return None
    try:
        import gdcm

        reader = gdcm.ImageReader()
        reader.SetFileName(ds.filename)
        with _native_output_captured():
            if not reader.Read():
                return None
            image = reader.GetImage()
            buffer = image.GetBuffer()
        layout = image.GetPixelFormat()
        bits, signed = int(layout.GetBitsAllocated()), bool(layout.GetPixelRepresentation())
        dtype = {8: np.int8 if signed else np.uint8, 16: np.int16 if signed else np.uint16,
                 32: np.int32 if signed else np.uint32}.get(bits)
        if dtype is None or int(layout.GetSamplesPerPixel()) != samples:
            return None
        data = buffer.encode("utf-8", "surrogateescape") if isinstance(buffer, str) else bytes(buffer)
        size = rows * columns * samples * np.dtype(dtype).itemsize
        if len(data) < size:
            return None
        pixels = np.frombuffer(data[:size], dtype).reshape((rows, columns, samples) if samples > 1 else (rows, columns))
        if samples > 1 and "YBR" in str(image.GetPhotometricInterpretation()):
            return pixels[..., 0].copy()  # the luminance: a radiograph is read in grey
        return pixels.copy()
    except Exception:  # noqa: BLE001 - GDCM is the last decoder tried; its failure is the file's
        return None


class _NativeOutput:
    """Whatever native decoders print to the process's stderr ("Not a JPEG file: starts with 0x00 0x00") while
    any decode runs goes to the null device, not to the user's terminal: the loader's own message says what
    matters. Decodes in several loader threads overlap: the first redirects, the last restores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved: int | None = None

    @contextmanager
    def captured(self):
        with self._lock:
            if self._active == 0:
                try:
                    self._saved = os.dup(2)
                    with open(os.devnull, "wb") as null:
                        os.dup2(null.fileno(), 2)
                except OSError:  # no stderr at all (a GUI launched without one): nothing to hide
                    if self._saved is not None:
                        os.close(self._saved)
                    self._saved = None
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._saved is not None:
                    os.dup2(self._saved, 2)
                    os.close(self._saved)
                    self._saved = None


_native_output_captured = _NativeOutput().captured


def _keep_first_native_frame(ds, where: str) -> None:
    """pydicom reads a deferred Pixel Data value whole: read only the first frame of a native multi-frame file.

    A 4 GB cine loop then costs one frame of memory, not the whole file.
    """

    raw = ds.get_item("PixelData", keep_deferred=True)
    if not isinstance(raw, RawDataElement) or raw.value is not None or not isinstance(ds.filename, str):
        return  # already in memory (small), or not read from a file
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated)
    size = (bits + 7) // 8
    try:
        with open(ds.filename, "rb") as stream:
            stream.seek(raw.value_tell)
            first = stream.read(size + size % 2)
    except OSError as exc:
        raise RadiographError(f"cannot be read: {exc.strerror or exc}", where) from exc
    vr = raw.VR if raw.VR in ("OB", "OW") else ("OW" if int(ds.BitsAllocated) > 8 else "OB")
    ds[raw.tag] = DataElement(raw.tag, vr, first)  # replaced, not assigned: assigning reads the old value first
    ds.NumberOfFrames = 1


def _missing_plugins(decoder) -> list[str]:
    """Name the packages to install, from pydicom's own list of missing dependencies."""
    missing = decoder.missing_dependencies
    return [m.split(" - requires ")[-1] if " - requires " in m else m for m in missing]


def _to_grey_modality_values(pixels: np.ndarray, ds, where: str, notes: list[str]) -> np.ndarray:
    """Colour to luminance; then the Modality LUT (rescale or LUT sequence) via pydicom. A Modality LUT
    Sequence that cannot be applied is left out with a note: the stored values are still the image."""

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        if photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, ds)
        if pixels.ndim == 3:
            # pydicom already converted YBR to RGB; radiographs are read in grey.
            if pixels.dtype not in (np.uint8, np.uint16, np.float32):
                pixels = pixels.astype(np.float32)
            return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2GRAY)
        if "ModalityLUTSequence" in ds:
            try:
                return apply_modality_lut(pixels, ds)
            except Exception:  # noqa: BLE001 - an empty or malformed LUT item: optional for display
                notes.append("Modality LUT Sequence empty or malformed: not applied (stored values shown)")
                del ds.ModalityLUTSequence
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
    except Exception as exc:
        raise RadiographError("invalid Modality LUT or palette colour data", where) from exc
    if slope == 1 and intercept == 0:
        return pixels
    values = apply_modality_lut(pixels, ds)
    if float(slope).is_integer() and float(intercept).is_integer():
        lo, hi = float(values.min()), float(values.max())
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.min <= lo and hi <= info.max:
                return values.astype(dtype)
    return values.astype(np.float32)


def _dicom_radiograph(ds, file: Path, pixels: np.ndarray, frames: int, transfer_syntax: str,
                      notes: list[str]) -> Radiograph:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits_stored = _int(ds, "BitsStored") or int(ds.BitsAllocated)
    data_range = voi.robust_range(pixels, ignore=_padding_range(ds))

    window, source, voi_lut, function = _dicom_voi(ds, pixels, data_range, notes)
    spacing, spacing_source = _dicom_spacing(ds, notes)
    # DX/MG (PS3.3 C.8.11.7): INVERSE is how MONOCHROME1 states its own inversion, so
    # either one means "high values dark" — it is not a second inversion.
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    inverted = photometric == "MONOCHROME1" or shape == "INVERSE"

    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            del ds[keyword]  # decoded already; the header is kept for the tag browser
    return Radiograph(
        path=str(file),
        pixels=pixels,
        photometric=photometric,
        bits_stored=bits_stored,
        window=window,
        window_source=source,
        voi_lut=voi_lut,
        voi_function=function,
        inverted=inverted,
        pixel_spacing_mm=spacing,
        spacing_source=spacing_source,
        frames=frames,
        transfer_syntax=transfer_syntax,
        other_windows=_other_windows(ds, data_range),
        window_name=_first_explanation(ds) if source is WindowSource.DICOM_WINDOW else "",
        file_format="DICOM",
        info=_study_info(ds),
        notes=tuple(notes),
        header=ds,
    )


def _padding_range(ds) -> tuple[float, float] | None:
    """Pixel Padding Value (and Range Limit) in modality units: background the window must ignore."""
    padding = _int(ds, "PixelPaddingValue")
    if padding is None:
        return None
    limit = _int(ds, "PixelPaddingRangeLimit")
    low, high = sorted((float(padding), float(padding if limit is None else limit)))
    if "ModalityLUTSequence" not in ds:
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return float(low), float(high)


def _dicom_voi(ds, pixels: np.ndarray, data_range: tuple[float, float], notes: list[str]):
    """The file's VOI (LUT sequence first, then window), unless it does not fit the pixel values."""
    function = VoiFunction.LINEAR
    raw_function = str(ds.get("VOILUTFunction", "") or "").strip().upper()
    if raw_function:
        try:
            function = VoiFunction(raw_function)
        except ValueError:
            notes.append(f"unknown VOI LUT Function {raw_function!r}: used LINEAR")

    if "VOILUTSequence" in ds:
        try:
            lut = voi.voi_lut_from_dataset(ds)
        except Exception:  # noqa: BLE001 - optional for display: the stored window or the histogram is used
            notes.append("VOI LUT Sequence unreadable: not used")
        else:
            problem = voi.window_misfit(lut.input_window, data_range)
            if problem is None:
                return lut.input_window, WindowSource.VOI_LUT_SEQUENCE, lut, VoiFunction.LINEAR
            notes.append(f"VOI LUT Sequence not used: {problem}")
            return Window.from_range(*data_range), WindowSource.HISTOGRAM_FALLBACK, None, VoiFunction.LINEAR

    stored = _first_window(ds, notes)
    if stored is not None:
        problem = voi.window_misfit(stored, data_range)
        if problem is None:
            return stored, WindowSource.DICOM_WINDOW, None, function
        notes.append(
            f"stored window {stored.center:g}/{stored.width:g} not used: {problem}"
        )
        return Window.from_range(*data_range), WindowSource.HISTOGRAM_FALLBACK, None, VoiFunction.LINEAR
    return Window.from_range(*data_range), WindowSource.HISTOGRAM, None, VoiFunction.LINEAR


def _first_window(ds, notes: list[str]) -> Window | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        center = _first_number(ds.WindowCenter)
        width = _first_number(ds.WindowWidth)
        return Window(center=center, width=width)
    except Exception:  # noqa: BLE001 - optional for display: the histogram is used
        notes.append("stored window (Window Center/Width) unreadable: not used")
        return None


def _first_explanation(ds) -> str:
    """Window Center & Width Explanation's first value: the default window's name ("" without one)."""
    names = _explanations(ds)
    return names[0].strip() if names else ""


def _explanations(ds) -> list[str]:
    try:
        explanation = ds.get("WindowCenterWidthExplanation", None) or []
        return [str(v) for v in (explanation if isinstance(explanation, (MultiValue, list, tuple)) else [explanation])]
    except Exception:  # noqa: BLE001 - unreadable: the windows go unnamed
        return []


def _other_windows(ds, data_range: tuple[float, float]) -> tuple[tuple[str, Window], ...]:
    """Window Center/Width's values after the first, named by Window Center & Width Explanation ("Window 2" where
    it has none); any that cannot be read or does not fit the pixel values is left out."""
    try:
        centers, widths = ([float(v) for v in (value if isinstance(value, (MultiValue, list, tuple)) else [value])]
                           for value in (ds.WindowCenter, ds.WindowWidth))
        names = _explanations(ds)
    except Exception:  # noqa: BLE001 - absent or unreadable: the file offers no other window
        return ()
    found = []
    for index, (center, width) in enumerate(zip(centers, widths, strict=False), start=1):  # (unequal: pairs)
        try:
            window = Window(center=center, width=width)
        except ValueError:
            continue
        if index > 1 and voi.window_misfit(window, data_range) is None:
            name = names[index - 1].strip() if index - 1 < len(names) and names[index - 1].strip() else f"Window {index}"
            found.append((name, window))
    return tuple(found)


def _first_number(value) -> float:
    """Window Center/Width may hold several values (alternative windows): the first is the default."""

    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0]
    return float(value)


def _numbers(ds, keyword: str, count: int) -> tuple[float, ...] | None:
    """`count` positive finite numbers from `keyword`, or None when absent or unusable."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        values = [float(v) for v in (value if hasattr(value, "__iter__") and not isinstance(value, str) else [value])]
    except Exception:
        return None
    if len(values) < count:
        return None
    values = values[:count]
    if not all(math.isfinite(v) and v > 0 for v in values):
        return None
    return tuple(values)


def _dicom_spacing(ds, notes: list[str]):
    """Pixel spacing at the patient where the file says so, else at the detector (magnification-corrected).

    PS3.3 10.7.1.3: Pixel Spacing equal to Imager Pixel Spacing, without a calibration
    type, is still the detector plane; the magnification factor then gives the better estimate.
    """
    pixel = _numbers(ds, "PixelSpacing", 2)
    imager = _numbers(ds, "ImagerPixelSpacing", 2)
    magnification = _numbers(ds, "EstimatedRadiographicMagnificationFactor", 1)
    calibrated = bool(ds.get("PixelSpacingCalibrationType"))
    if "PixelSpacing" in ds and pixel is None:
        notes.append("Pixel Spacing present but not usable (zero, negative or malformed)")

    if pixel is not None and (calibrated or imager is None or pixel != imager or magnification is None):
        return pixel, SpacingSource.PIXEL_SPACING
    if imager is not None:
        if magnification is not None:
            factor = magnification[0]
            return (imager[0] / factor, imager[1] / factor), SpacingSource.IMAGER_PIXEL_SPACING_MAGNIFICATION_CORRECTED
        return imager, SpacingSource.IMAGER_PIXEL_SPACING
    nominal = _numbers(ds, "NominalScannedPixelSpacing", 2)
    if nominal is not None:
        return nominal, SpacingSource.NOMINAL_SCANNED_PIXEL_SPACING
    return None, None


def _int(ds, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def _text(ds, keyword: str) -> str:
    """A header value as clean one-line text; never fails (bad bytes are replaced, not fatal)."""
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1", errors="replace")
    if not isinstance(value, str) and hasattr(value, "__iter__") and not hasattr(value, "family_name"):
        value = "\\".join(str(v) for v in value)
    text = str(value)
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _study_info(ds) -> StudyInfo:
    return StudyInfo(
        patient_name=_text(ds, "PatientName"),
        patient_id=_text(ds, "PatientID"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        modality=_text(ds, "Modality"),
        view_position=_text(ds, "ViewPosition"),
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        body_part=_text(ds, "BodyPartExamined"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        series_number=_text(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        study_time=_text(ds, "StudyTime"),
        patient_orientation=_text(ds, "PatientOrientation"),
        lossy=_text(ds, "LossyImageCompression") == "01"
        or str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) in LOSSY_SYNTAXES,
    )


_SEE_STANDARD = re.compile(r"\s*Please see <[^>]*>[^.]*\.?|\s*<https?://[^>]*>")
_LONG_QUOTE = re.compile(r"'([^']{40})[^']+'")


def _warning_notes(caught) -> list[str]:
    """pydicom's warnings about the file, as short notes: without links to the standard, long values
    shortened, never cut inside a word."""
    seen: list[str] = []
    for record in caught:
        text = " ".join(_SEE_STANDARD.sub("", str(record.message)).split())
        text = _LONG_QUOTE.sub(lambda m: f"'{m[1]}…'", text)
        if len(text) > 120:
            text = text[:120].rsplit(" ", 1)[0] + " …"
        if text and text not in seen:
            seen.append(text)
    return seen[:5]


def _with_notes(radiograph: Radiograph, extra: list[str]) -> Radiograph:

    return replace(radiograph, notes=radiograph.notes + tuple(extra))


# ---------------------------------------------------------------- raster

# Samples a pixel once OpenCV has decoded it: a palette expands to BGR (alpha counted, to stay on the safe side).
_DECODED_SAMPLES = {"1": 1, "L": 1, "LA": 2, "I": 1, "F": 1, "P": 3, "PA": 4, "RGB": 3, "YCbCr": 3, "LAB": 3,
                    "HSV": 3, "RGBA": 4, "RGBX": 4, "CMYK": 4}


def _decoded_bytes_per_pixel(image) -> int:
    """What OpenCV will allocate per pixel. Pillow names 16-bit colour "RGB"; its raw mode still says ";16"."""
    mode = image.mode
    if mode.startswith("I;16"):
        return 2
    samples = _DECODED_SAMPLES.get(mode, 4)
    if mode in ("I", "F"):
        return 4
    raw_modes = [tile.args if isinstance(tile.args, str) else str((tile.args or ("",))[0]) for tile in image.tile]
    return samples * (2 if any(";16" in raw for raw in raw_modes) else 1)


def _load_raster(file: Path, kind: str) -> Radiograph:
    """PNG/JPEG/TIFF: header checked with Pillow (no decode), pixels decoded with OpenCV."""

    where = str(file)
    Image.MAX_IMAGE_PIXELS = None  # our own limits below apply, and name the reason
    try:
        with Image.open(file) as image:
            width, height = image.size
            bytes_per_pixel = _decoded_bytes_per_pixel(image)
            frames = int(getattr(image, "n_frames", 1) or 1)
            if kind == "PNG":
                image.verify()  # checks chunk CRCs without decoding
    except SyntaxError as exc:  # Pillow's verify(): a chunk's CRC does not match
        raise RadiographError(f"damaged {kind} file: its checksums do not match (changed in transfer?)",
                              where) from exc
    except Exception as exc:  # Pillow names the path and its own checks
        raise RadiographError(f"corrupt or truncated {kind} file: not a valid {kind} image", where) from exc
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise RadiographError(
            f"image is {height} × {width} pixels; more than {MAX_DIMENSION} per side is refused", where
        )
    if width * height * bytes_per_pixel > MAX_DECODE_BYTES:
        raise RadiographError(
            f"image would decode to {width * height * bytes_per_pixel / 2**30:.1f} GiB; more than 1 GiB is refused",
            where,
        )
    if kind == "JPEG" and not _jpeg_is_complete(file):
        raise RadiographError("truncated JPEG file: the end-of-image marker is missing", where)

    if hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(0)  # silent: a broken file is reported by our error, not by OpenCV's log
    try:
        encoded = np.fromfile(file, dtype=np.uint8)
        pixels = cv2.imdecode(encoded, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except Exception as exc:
        raise RadiographError(f"corrupt {kind} file: OpenCV could not decode it", where) from exc
    if pixels is None or pixels.size == 0:
        raise RadiographError(f"corrupt or truncated {kind} file: OpenCV could not decode it", where)

    photometric = "MONOCHROME2"
    if pixels.ndim == 3:
        photometric = "RGB"
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    bits = pixels.dtype.itemsize * 8  # as the file stores a sample: 8, 16, or 32 for a float or 32-bit TIFF
    if pixels.dtype not in (np.uint8, np.uint16):
        pixels = pixels.astype(np.float32)
    if pixels.dtype == np.uint8:
        window, source = Window.full_range(8), WindowSource.FULL_RANGE
    else:
        window, source = Window.from_range(*voi.robust_range(pixels)), WindowSource.HISTOGRAM
    return Radiograph(
        path=where,
        pixels=pixels,
        photometric=photometric,
        bits_stored=bits,
        window=window,
        window_source=source,
        frames=frames,
        file_format=kind,
        notes=(f"{frames} pages: showing the first",) if frames > 1 else (),
    )


def _jpeg_is_complete(file: Path) -> bool:
    """libjpeg fills a truncated JPEG with grey and only warns; a complete one ends with EOI (FFD9)."""
    with open(file, "rb") as stream:
        stream.seek(max(file.stat().st_size - 4096, 0))
        tail = stream.read()
    return b"\xff\xd9" in tail
