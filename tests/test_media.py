"""Patient CDs and USB sticks: a DICOMDIR read with pydicom's FileSet (viewer/media.py) and `inspect` on one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.media import MediaError, dicomdir_of, files_to_open, referenced_images

from conftest import ROOT
from dicom_factory import dataset, gradient, patient_cd, write

IMAGES = ["PT000000/ST000000/SE000000/IM000000", "PT000000/ST000000/SE000000/IM000001",
          "PT000001/ST000000/SE000000/IM000000", "PT000001/ST000000/SE000000/IM000001"]


def test_a_cd_folder_or_its_dicomdir_opens_as_the_images_it_lists(tmp_path):
    cd = tmp_path / "cd"
    cd.mkdir()
    index = patient_cd(cd)
    (cd / "README.TXT").write_text("burnt by the archive")  # what CDs also carry: not an image, not listed
    assert dicomdir_of(cd) == dicomdir_of(index) == index
    expected = [str(cd / p) for p in IMAGES]
    assert files_to_open([str(cd)]).files == files_to_open([str(index)]).files == expected
    images = referenced_images(index)
    assert [(i.patient, i.study, i.series) for i in images] == [
        ("Patient1, Test (CD-0001)", "20260115 Chest PA", "CR #1")] * 2 + [
        ("Patient2, Test (CD-0002)", "20260115 Chest PA", "CR #1")] * 2
    try:
        load_radiograph(index)
    except RadiographError as refusal:
        assert refusal.reason.startswith("this is a DICOMDIR, the index of a CD or USB stick, not an image")
    else:
        raise AssertionError("a DICOMDIR opened as an image")
    # A folder without an index is its files, as before; a file named DICOMDIR that is not one is a file.
    plain = tmp_path / "plain"
    plain.mkdir()
    write(dataset(gradient(), bits_stored=12), plain / "DICOMDIR")
    assert dicomdir_of(plain) is None and files_to_open([str(plain)]).files == [str(plain / "DICOMDIR")]


def test_inspect_lists_what_a_dicomdir_references_and_names_what_is_missing(tmp_path):
    cd = tmp_path / "cd"
    cd.mkdir()
    patient_cd(cd)
    (cd / IMAGES[3]).unlink()
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", str(cd)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stderr == "", done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == {"path": str(cd / "DICOMDIR"), "ok": True, "dicomdir": True, "images": 4, "missing": 1}
    assert [line["path"] for line in lines[1:]] == [str(cd / p) for p in IMAGES]
    assert [line["patient"] for line in lines[1:]] == ["Patient1, Test (CD-0001)"] * 2 + ["Patient2, Test (CD-0002)"] * 2
    assert all(line["ok"] for line in lines[1:4]) and lines[4]["ok"] is False
    assert lines[4]["error"] == "listed in the DICOMDIR but not on the media (Patient2, Test (CD-0002), 20260115 Chest PA, CR #1)"


def test_a_cd_whose_drive_shows_iso_9660_names_opens(tmp_path):
    """Drives may show a CD's names lower-cased and with their ISO 9660 version (im000000;1): the index still
    names them in Part 10's upper case, and each listed image is found."""
    cd = tmp_path / "cd"
    cd.mkdir()
    patient_cd(cd)
    for path in sorted(cd.rglob("*"), key=lambda p: -len(p.parts)):  # deepest first: parents renamed last
        path.rename(path.with_name(path.name.lower() + (";1" if path.is_file() else "")))
    index = cd / "dicomdir;1"
    assert dicomdir_of(cd) == index
    contents = files_to_open([str(cd)])
    assert contents.files == [str(cd / (p.lower() + ";1")) for p in IMAGES] and not contents.notes
    assert all(image.present for image in contents.listed.values())
    assert load_radiograph(contents.files[3]).info.patient_id == "CD-0002"


def _relink(index, record: int, offset: int) -> None:
    """Point the next-record link of the index's `record`-th record at `offset`, in the file's bytes
    (Explicit VR Little Endian, as DICOMDIRs are written): a damaged index, as a bad burn leaves one."""
    import pydicom

    records = pydicom.dcmread(index).DirectoryRecordSequence
    data = bytearray(index.read_bytes())
    element = b"\x04\x00\x00\x14UL\x04\x00"  # (0004,1400) Offset of the Next Directory Record
    at = data.index(element, records[record].seq_item_tell) + len(element)
    data[at:at + 4] = offset.to_bytes(4, "little")
    index.write_bytes(bytes(data))


@pytest.mark.timeout(60)
def test_a_damaged_dicomdir_is_named_and_the_media_opened_instead(tmp_path):
    """Record links that loop (pydicom would follow them for ever) or lead nowhere: the index is refused with
    one line, and the images on the media, in its sub-folders, are opened instead, with a note."""
    import pydicom

    cd = tmp_path / "cd"
    cd.mkdir()
    index = patient_cd(cd)
    records = pydicom.dcmread(index).DirectoryRecordSequence
    patients = [i for i, r in enumerate(records) if r.DirectoryRecordType == "PATIENT"]
    _relink(index, patients[-1], records[patients[0]].seq_item_tell)  # the last patient's "next": the first
    with pytest.raises(MediaError, match="damaged DICOMDIR: its record links loop$"):
        referenced_images(index)
    contents = files_to_open([str(cd)])
    assert contents.files == [str(cd / p) for p in IMAGES] and not contents.listed
    assert contents.notes == [f"{index}: damaged DICOMDIR: its record links loop: opened the files on the media "
                              "instead"]
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", str(cd)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 2 and lines[0]["ok"] is False and "record links loop" in lines[0]["error"]
    assert [(line["path"], line["ok"]) for line in lines[1:]] == [(str(cd / p), True) for p in IMAGES]
    _relink(index, patients[-1], records[patients[0]].seq_item_tell + 2)  # inside a record, not at one
    with pytest.raises(MediaError, match="a record link points outside its records$"):
        referenced_images(index)
    index.write_bytes(index.read_bytes()[:200])  # cut inside the records
    with pytest.raises(MediaError, match="damaged DICOMDIR: its records cannot be read$"):
        referenced_images(index)
