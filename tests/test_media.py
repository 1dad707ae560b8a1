"""Patient CDs and USB sticks: a DICOMDIR read with pydicom's FileSet (viewer/media.py) and `inspect` on one."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT
from dicom_factory import dataset, gradient, patient_cd, write
from viewer.errors import RadiographError
from viewer.loader import load_radiograph
from viewer.media import dicomdir_of, files_to_open, referenced_images

IMAGES = ["PT000000/ST000000/SE000000/IM000000", "PT000000/ST000000/SE000000/IM000001",
          "PT000001/ST000000/SE000000/IM000000", "PT000001/ST000000/SE000000/IM000001"]


def test_a_cd_folder_or_its_dicomdir_opens_as_the_images_it_lists(tmp_path):
    cd = tmp_path / "cd"
    cd.mkdir()
    index = patient_cd(cd)
    (cd / "README.TXT").write_text("burnt by the archive")  # what CDs also carry: not an image, not listed
    assert dicomdir_of(cd) == dicomdir_of(index) == index
    expected = [str(cd / p) for p in IMAGES]
    assert files_to_open([str(cd)]) == files_to_open([str(index)]) == expected
    images = referenced_images(index)
    assert [(i.patient, i.study, i.series) for i in images] == [
        ("Patient1 Test (CD-0001)", "20260115 Chest PA", "CR #1")] * 2 + [
        ("Patient2 Test (CD-0002)", "20260115 Chest PA", "CR #1")] * 2
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
    assert dicomdir_of(plain) is None and files_to_open([str(plain)]) == [str(plain / "DICOMDIR")]


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
    assert [line["patient"] for line in lines[1:]] == ["Patient1 Test (CD-0001)"] * 2 + ["Patient2 Test (CD-0002)"] * 2
    assert all(line["ok"] for line in lines[1:4]) and lines[4]["ok"] is False
    assert lines[4]["error"] == "no such file"
