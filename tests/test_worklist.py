"""`infer --out DIR`: the resumable worklist (results.jsonl, summary.csv, SRs), Ctrl-C, and its bookkeeping."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from app.worklist import Batch, ResultsLog, read_results, summary_rows, write_summary
from inference.models.classifier import CHESTXRAY14
from viewer.media import files_to_open

from conftest import ROOT

FAST = ["--detector-size", "128", "--runtime", "torch"]  # small letterbox, no runtime timing: a quick run


def _png(path: Path, seed: int, size: int = 192) -> Path:
    """A chest-like generated radiograph: a bright field with two dark lungs and noise."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size), 200, np.float64)
    yy, xx = np.mgrid[:size, :size] / size
    for cx in (0.32, 0.68):
        image -= 120 * np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.5) / 0.28) ** 2))
    image += rng.normal(0, 12, image.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
    return path


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def _summary(folder: Path) -> list[dict]:
    with open(folder / "summary.csv", newline="") as source:
        return list(csv.DictReader(source))


# ------------------------------------------------------------------ bookkeeping, no models


def test_study_files_recursive_sorted_without_hidden(tmp_path):
    for name in ("b.png", "a/z.dcm", "a/b/c.png", "a-1.png", ".hidden.png", ".git/x.png", "a/.DS_Store"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    rel = lambda paths: [os.path.relpath(p, tmp_path) for p in paths]  # noqa: E731
    assert rel(files_to_open([str(tmp_path)], recursive=True).files) == ["a/b/c.png", "a/z.dcm", "a-1.png", "b.png"]
    assert rel(files_to_open([str(tmp_path)]).files) == ["a-1.png", "b.png"]
    assert files_to_open(["missing.dcm"]).files == ["missing.dcm"]  # a file that is not there still fails with its reason


def test_resume_skips_finished_and_reruns_changed_files(tmp_path):
    files = [str(_png(tmp_path / "in" / f"{i}.png", i)) for i in range(4)]
    out = tmp_path / "out"
    with Batch(out, files) as batch:
        assert batch.todo == files and batch.skipped == 0
        batch.record({"path": files[0], "mode": "local", "probabilities": {"Edema": 0.7}, "detections": []})
        batch.record({"path": files[1], "error": "not an image file"}, finished=True)       # unreadable: final
        batch.record({"path": files[2], "error": "analysis failed (RuntimeError)"}, finished=False)  # retried
    with Batch(out, files) as batch:
        assert batch.todo == files[2:] and batch.skipped == 2 and batch.failed_before == 1
    assert Batch(out, files, retry_failed=True).todo == files[1:]
    # The same path with other contents (size or mtime) is a new study.
    _png(Path(files[0]), 99, size=200)
    assert Batch(out, files).todo == [files[0], files[2], files[3]]


def test_truncated_last_line_is_ignored_and_not_glued_to_the_next(tmp_path):
    files = [str(_png(tmp_path / f"{i}.png", i)) for i in range(2)]
    with Batch(tmp_path, files) as batch:
        batch.record({"path": files[0], "mode": "local", "probabilities": {}, "detections": []})
    with open(tmp_path / "results.jsonl", "a") as log:
        log.write(f'{{"path": "{files[1]}", "mode": "loc')  # killed mid-write
    assert [r["path"] for r in read_results(tmp_path)] == [files[0]]
    batch = Batch(tmp_path, files)
    assert batch.todo == [files[1]]
    with batch:
        batch.record({"path": files[1], "mode": "local", "probabilities": {}, "detections": []})
    assert [r["path"] for r in _lines(tmp_path)] == files  # every line parses: the cut one was dropped


def test_summary_has_one_row_per_file_its_latest_result(tmp_path):
    records = [
        {"path": "a.png", "mode": "local", "probabilities": {"Edema": 0.2, "Mass": 0.9},
         "detections": [{"score": 0.5}, {"score": 0.75}], "worklist": {"file": "/x/a.png"}},
        {"path": "b.dcm", "error": "no image in this file", "worklist": {"file": "/x/b.dcm"}},
        {"path": "a.png", "mode": "local-fallback", "probabilities": {"Edema": 0.6}, "detections": [],
         "sr": "sr/1.dcm", "ran_on": ["workstation"], "fallback_reason": "edge server e:8001 unreachable",
         "worklist": {"file": "/x/a.png"}},
    ]
    assert list(summary_rows(records)) == [
        {"path": "a.png", "mode": "local-fallback", "top_finding": "Edema", "top_probability": "0.6000", "boxes": 0,
         "max_box_score": "", "sr": "sr/1.dcm", "error": "", "ran_on": "workstation",
         "fallback_reason": "edge server e:8001 unreachable"},
        {"path": "b.dcm", "mode": "", "top_finding": "", "top_probability": "", "boxes": "", "max_box_score": "",
         "sr": "", "error": "no image in this file", "ran_on": "", "fallback_reason": ""}]
    write_summary(tmp_path, records[:1])
    assert _summary(tmp_path)[0] == {"path": "a.png", "mode": "local", "top_finding": "Mass",
                                      "top_probability": "0.9000", "boxes": "2", "max_box_score": "0.7500",
                                      "sr": "", "error": "", "ran_on": "", "fallback_reason": ""}
    assert not (tmp_path / "summary.csv.partial").exists()


def test_results_log_writes_whole_lines_with_the_file_identity(tmp_path):
    path = _png(tmp_path / "a.png", 1)
    with ResultsLog(tmp_path) as log:
        log.write({"path": str(path)}, {"file": str(path), "size": 1, "mtime_ns": 2}, finished=True)
    assert _lines(tmp_path) == [{"path": str(path), "worklist": {"file": str(path), "size": 1, "mtime_ns": 2,
                                                                 "finished": True}}]


# ------------------------------------------------------------------ the command, end to end


@pytest.fixture
def worklist_folder(tmp_path, shared_cxr) -> Path:
    """Eleven studies in nested folders: a real PNG, a DICOM radiograph (for its SR; an anonymised accession number
    longer than its VR allows), a CT (not analysed), generated PNGs and one corrupt file."""
    import warnings

    from pydicom.uid import CTImageStorage

    from dicom_factory import dataset, gradient, write

    folder = tmp_path / "studies"
    shutil.copy(shared_cxr / "raster/txv_nih_00027426_000_512px.png", _mkdir(folder) / "000_real.png")
    dx = pydicom.dcmread(shared_cxr / "dicom/highdicom_dx_image_canine_thorax.dcm")
    with warnings.catch_warnings():  # (pydicom warns about the length here too)
        warnings.simplefilter("ignore")
        dx.AccessionNumber = "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"
    dx.save_as(_mkdir(folder / "dicom") / "dx.dcm")
    write(dataset(gradient(96, 96, bits=12), bits_stored=12, modality="CT", sop_class=CTImageStorage),
          folder / "dicom" / "ct.dcm")
    for i in range(7):
        _png(folder / ("deeper" if i % 2 else "") / f"gen_{i}.png", i)
    (folder / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / ".hidden.png").write_bytes(b"not analysed")
    return folder


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_ctrl_c_then_resume_then_a_changed_file(worklist_folder, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "main.py"), "infer", str(worklist_folder), "--recursive", "--out", str(out),
               *FAST]
    total = len(files_to_open([str(worklist_folder)], recursive=True).files)
    assert total == 11
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and run.poll() is None:
        if (out / "results.jsonl").exists() and (out / "results.jsonl").read_text().count("\n") >= 1:
            run.send_signal(signal.SIGINT)  # Ctrl-C after the first result
            break
        time.sleep(0.02)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped:" in stderr and "resume" in stderr
    first = _lines(out)  # every line is whole JSON
    assert 1 <= len(first) < total
    assert len(_summary(out)) == len(first)

    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr  # the corrupt file, the CT
    assert f"{len(first)} of {total} studies already done" in done.stderr
    assert f"{total}/{total}" in done.stderr  # the progress bar reached the end
    assert "Warning" not in done.stderr  # (the long accession number is copied into the SR as it is, silently)
    failed = 2 - sum("error" in record for record in first)  # those of this run
    assert (f"{total - len(first) - failed} analysed" + (f", {failed} failed" if failed else "")
            + f", {len(first)} skipped (done before)") in done.stderr
    records = _lines(out)
    assert len(records) == total  # nothing analysed twice
    assert sorted(r["path"] for r in records) == sorted(files_to_open([str(worklist_folder)], recursive=True).files)
    by_name = {Path(r["path"]).name: r for r in records}
    assert "corrupt" in by_name["zz_corrupt.png"]["error"] and by_name["zz_corrupt.png"]["worklist"]["finished"]
    real = by_name["000_real.png"]
    assert real["mode"] == "local" and list(real["probabilities"]) == list(CHESTXRAY14) and "sr" not in real
    dicom = by_name["dx.dcm"]
    assert "error" not in dicom and dicom.get("sr", "").startswith("sr/"), dicom.get("sr_error")
    assert (out / dicom["sr"]).is_file()
    assert pydicom.dcmread(out / dicom["sr"]).AccessionNumber == "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f"
    ct = by_name["ct.dcm"]
    assert ct["error"] == "a CT image, not a chest radiograph: the models read CR and DX radiographs only" \
        and ct["worklist"]["finished"] and "sr" not in ct

    rows = {Path(r["path"]).name: r for r in _summary(out)}
    assert len(rows) == total
    top = max(real["probabilities"], key=real["probabilities"].get)
    assert rows["000_real.png"]["top_finding"] == top and rows["000_real.png"]["mode"] == "local"
    assert rows["000_real.png"]["ran_on"] == "workstation" and rows["000_real.png"]["fallback_reason"] == ""
    assert float(rows["000_real.png"]["top_probability"]) == pytest.approx(real["probabilities"][top], abs=1e-4)
    assert int(rows["000_real.png"]["boxes"]) == len(real["detections"])
    assert rows["dx.dcm"]["sr"] == dicom["sr"]
    assert rows["zz_corrupt.png"]["error"] and rows["zz_corrupt.png"]["mode"] == ""
    assert rows["ct.dcm"]["error"] == ct["error"]

    changed = worklist_folder / "gen_0.png"
    _png(changed, 1234, size=224)
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2, again.stderr
    records = _lines(out)
    assert len(records) == total + 1 and records[-1]["path"] == str(changed)  # only the changed file ran again
    assert len(_summary(out)) == total


@pytest.mark.parametrize("part, refused", [("PELVIS", True), ("HIP", True), ("L SPINE", True), ("TSPINE", False),
                                           ("HAND", True), ("CHEST", False), ("THORAX", False), ("", False),
                                           ("CHEST_ABDOMEN", False), ("PORTABLE", False),
                                           ("NECKCHEST", False), ("ABDOMEN CHEST", False)])
def test_a_radiograph_of_another_part_of_the_body_is_not_analysed(tmp_path, part, refused):
    """A CR of the pelvis got chest findings. Body Part Examined refuses it when it names another part of the body;
    missing, free text or a chest value, the radiograph is analysed."""
    from inference.analysis.analyzer import NotAChestRadiograph, check_in_scope
    from viewer.loader import load_radiograph

    from dicom_factory import dataset, gradient, write

    radiograph = load_radiograph(write(dataset(gradient(64, 64, bits=12), bits_stored=12, modality="CR",
                                               BodyPartExamined=part), tmp_path / "cr.dcm"))
    if refused:
        with pytest.raises(NotAChestRadiograph, match=f"a radiograph of the {part.lower()} .Body Part Examined., not "
                                                      "of the chest: the models read chest radiographs only"):
            check_in_scope(radiograph)
    else:
        check_in_scope(radiograph)


def test_a_resend_round_ends_at_its_first_failure(tmp_path):
    """SRs not sent are tried again one after another; the first that fails ends the round (the node is down still:
    each further try would wait for its own timeout, holding up the node's analyses)."""
    from app.results import send_again
    from pacs.remote import parse_node

    unsent = [{"path": f"{n}.dcm", "sr": f"sr/{n}.dcm", "send_error": "SR not sent: no answer"} for n in range(3)]
    tried = list(send_again(unsent, tmp_path, parse_node("PACS@127.0.0.1:9")))
    assert len(tried) == 1 and tried[0]["path"] == "0.dcm" and "send_error" in tried[0] and "sent" not in tried[0]
