"""A public DICOM corpus: the test files pydicom ships in its wheel (pydicom/data/test_files; no download) —
files written by GE, Siemens, Philips, dcmtk, GDCM and others, in every transfer syntax pydicom tests, damaged
files among them, and real DICOMDIR file-sets. Every image pydicom or GDCM decodes opens here; every other file
is refused with one clear line; every index is read or named as damaged."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut, apply_modality_lut

from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.media import MediaError, files_to_open, referenced_images

from test_malformed_corpus import _assert_clear

CORPUS = Path(pydicom.__file__).parent / "data" / "test_files"
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and not p.name.startswith("."))


def _pydicom_decodes(path: Path) -> np.ndarray | None:
    """The first frame as pydicom itself decodes it, with its Modality LUT applied when grey (the values the
    loader keeps; colour it turns into luminance); None when pydicom cannot decode it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True)
            pixels = ds.pixel_array
        except Exception:  # noqa: BLE001 - not an image, damaged, or no decoder: the loader must say so clearly
            return None
    first = pixels[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        return apply_color_lut(first, ds)
    return apply_modality_lut(first, ds) if first.ndim == 2 else first


def _gdcm_decodes(path: Path) -> bool:
    """Whether GDCM's own reader decodes the file's pixels (it reads some files pydicom's plugins refuse)."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read() or reader.GetImage().GetBufferLength() > 1 << 30:
        return False
    return bool(reader.GetImage().GetBuffer())


def test_the_corpus_is_there():
    assert len(FILES) > 150 and any(p.name == "DICOMDIR" for p in FILES)


@pytest.mark.timeout(120)
def test_every_image_pydicom_decodes_opens_and_every_other_file_is_refused_clearly():
    opened, refused, compared, unexpected = 0, 0, 0, []
    for path in FILES:
        decoded = _pydicom_decodes(path)
        try:
            radiograph = load_radiograph(path)
        except RadiographError as refusal:
            refused += 1
            if decoded is not None or _gdcm_decodes(path):
                unexpected.append(f"{path.relative_to(CORPUS)}: pydicom or GDCM decodes it, refused: {refusal}")
            _assert_clear(str(refusal), ".", str(path.relative_to(CORPUS)))
            continue
        opened += 1
        if decoded is None:  # e.g. GDCM's reader decoded what pydicom's plugins refuse
            continue
        if radiograph.pixels.shape != decoded.shape[:2]:
            unexpected.append(f"{path.relative_to(CORPUS)}: {radiograph.pixels.shape} against pydicom's {decoded.shape}")
        elif decoded.ndim == 2 and not np.allclose(radiograph.pixels, decoded, atol=1e-3):
            unexpected.append(f"{path.relative_to(CORPUS)}: other values than pydicom's")
        else:
            compared += 1
    assert not unexpected, "\n".join(unexpected)
    assert opened >= 90 and compared >= 85 and refused >= 80, (opened, compared, refused)  # pydicom 3.0's files


@pytest.mark.parametrize("index", sorted(p.name for p in (CORPUS / "dicomdirtests").glob("DICOMDIR*")))
def test_each_dicomdir_is_read_or_named_damaged(tmp_path, index):
    """The index beside its file-set as a CD holds it; a damaged one is named and the media opened instead."""
    media = tmp_path / "cd"
    shutil.copytree(CORPUS / "dicomdirtests", media, ignore=shutil.ignore_patterns("DICOMDIR*", "TINY_ALPHA"))
    shutil.copy(CORPUS / "dicomdirtests" / index, media / "DICOMDIR")
    contents = files_to_open([str(media)])
    try:
        images = referenced_images(media / "DICOMDIR")
    except MediaError as damaged:
        assert str(damaged) == f"{media / 'DICOMDIR'}: damaged DICOMDIR: its records cannot be read"
        assert contents.notes and len(contents.files) == 32 and not contents.listed  # the 31 images, a README
        return
    assert all(image.present for image in images) and not contents.notes
    assert contents.files == [image.path for image in images] and len(images) in (0, 31)
    for image in images[:3]:
        assert load_radiograph(image.path).info.patient_id == image.patient.rsplit("(", 1)[1].rstrip(")")


def test_a_file_set_as_pydicom_writes_one_opens_whole():
    contents = files_to_open([str(CORPUS / "dicomdirtests" / "TINY_ALPHA")])
    assert len(contents.files) == 50 and all(contents.listed[path].present for path in contents.files)
    assert {contents.listed[path].patient for path in contents.files} == {"Citizen, Jan (12345678)"}
