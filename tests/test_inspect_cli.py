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
    paths = [shared_cxr / "other/pydicom_test-SR.dcm", tmp_path / "empty file.dcm", tmp_path,
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
