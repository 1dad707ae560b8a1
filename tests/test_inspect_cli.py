"""`python main.py inspect` as a user runs it: JSON lines, exit codes, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

KEYS = {"path", "ok", "modality", "rows", "columns", "frames", "photometric", "bits_stored",
        "transfer_syntax", "pixel_spacing_mm", "spacing_source", "window", "window_source", "min", "max"}


def _inspect(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", *map(str, paths)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_all_loaded_exit_0(shared_cxr):
    done = _inspect(shared_cxr / "dicom/DX_chest_966_fixed.dcm", shared_cxr / "raster/txv_nih_00027426_000_512px.png")
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert KEYS <= set(first) and first["ok"] is True
    assert first["modality"] == "DX" and (first["rows"], first["columns"]) == (2128, 2000)
    assert first["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    assert first["pixel_spacing_mm"] == [0.16, 0.16] and first["spacing_source"] == "PixelSpacing"
    assert first["window"] == [2048, 4096] and first["window_source"] == "dicom_window"
    assert (first["min"], first["max"]) == (0, 4095)
    assert second["transfer_syntax"] is None and second["pixel_spacing_mm"] is None


def test_any_failure_exit_2_one_line_each_no_traceback(shared_cxr, tmp_path):
    (tmp_path / "empty file.dcm").write_bytes(b"")
    (tmp_path / "no files").mkdir()
    paths = [shared_cxr / "other/pydicom_test-SR.dcm", tmp_path / "empty file.dcm", tmp_path / "no files",
             shared_cxr / "dicom/CR-MONO1-10-chest", tmp_path / "missing.dcm"]
    done = _inspect(*paths)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in paths]
    assert [r["ok"] for r in records] == [False, False, False, True, False]
    for record in records:
        if not record["ok"]:
            assert set(record) == {"path", "ok", "error"} and "\n" not in record["error"]
    assert "no image in this file" in records[0]["error"]
    assert "empty file" in records[1]["error"]
    assert records[2]["error"] == "no files in this folder"


def test_a_folder_is_its_files_as_infer_takes_them(shared_cxr, tmp_path):
    """A folder given to inspect is the files in it, sorted, hidden ones left out; --recursive adds its sub-folders'
    (what the viewer's Open folder and `infer FOLDER` take)."""
    folder = tmp_path / "Thorax ü"
    (folder / "later").mkdir(parents=True)
    (folder / "b.png").write_bytes((shared_cxr / "raster/txv_nih_00027426_000_512px.png").read_bytes())
    (folder / "a.dcm").write_bytes((shared_cxr / "dicom/CR-MONO1-10-chest").read_bytes())
    (folder / ".hidden.dcm").write_bytes(b"")
    (folder / "later/c.txt").write_text("not an image")
    done = _inspect(folder)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["path"], r["ok"]) for r in records] == [(str(folder / "a.dcm"), True), (str(folder / "b.png"), True)]
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", "--recursive", str(folder)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["path"] == str(folder / "later/c.txt") and last["ok"] is False and "\n" not in last["error"]
