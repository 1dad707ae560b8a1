"""`python main.py infer` on the real radiographs in ../shared/data/cxr, as a user runs it."""

import json
import os
import subprocess
import sys

from inference.models.classifier import CHESTXRAY14

from certificates import dated_certificate
from conftest import ROOT

FILES = ["dicom/CR-MONO1-10-chest", "dicom/DX_chest_966_fixed.dcm", "dicom/RG1_J2KI.dcm",
         "dicom/highdicom_dx_image_canine_thorax.dcm", "raster/txv_nih_00027426_000_512px.png"]


def test_infer_real_files_json_lines(shared_cxr, tmp_path):
    paths = [str(shared_cxr / f) for f in FILES] + [str(shared_cxr / "dicom/DX_chest_966_badCOMmarker.dcm")]
    out = tmp_path / "findings.jsonl"
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", *paths, "--json", str(out),
                           "--detector-size", "128"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 2, done.stderr  # the corrupt file failed, the others did not
    assert "Traceback" not in done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in records] == paths
    for record in records[:-1]:
        assert set(record) == {"path", "weights", "demo_weights", "detections", "probabilities", "mode",
                               "split", "timing_ms", "runtime", "ran_on"}
        assert record["ran_on"] == ["workstation"]
        assert set(record["runtime"]) == {"detector", "classifier"}  # which local runtime ran each model
        assert record["weights"] == {"detector": "demo", "classifier": "demo"} and record["demo_weights"]
        assert list(record["probabilities"]) == list(CHESTXRAY14)
        assert all(0 <= p <= 1 for p in record["probabilities"].values())
        assert record["mode"] == "local" and record["split"] == {"detector": 32, "classifier": 10}
        assert set(record["timing_ms"]) == {"preprocess", "local", "transfer", "edge", "queued",
                                            "postprocess", "total"}
        assert record["timing_ms"]["total"] >= record["timing_ms"]["local"] > 0
        for detection in record["detections"]:
            assert set(detection) == {"label", "score", "box_xyxy"} and detection["label"] == "opacity"
    assert set(records[-1]) == {"path", "error"} and "corrupt" in records[-1]["error"]
    # Different images give different probabilities (the models see the pixels).
    assert records[0]["probabilities"] != records[1]["probabilities"]


def test_infer_bad_weights_is_one_line(tmp_path, shared_cxr):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / "dicom/CR-MONO1-10-chest"),
                           "--classifier-weights", str(tmp_path / "junk.pt")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "not a PyTorch weights file" in done.stderr


def test_infer_tls_files_that_are_not_pem_are_one_line(tmp_path, shared_cxr):
    (tmp_path / "hostname").write_text("workstation-7\n")
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / "dicom/CR-MONO1-10-chest"),
                           "--edge", "127.0.0.1:8001", "--tls", "--ca", str(tmp_path / "hostname")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "the CA file for the edge is not a PEM certificate" in done.stderr, done.stderr
    expired, key = dated_certificate(tmp_path, -365, -1)  # a client certificate out of date
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / "dicom/CR-MONO1-10-chest"),
                           "--edge", "127.0.0.1:8001", "--tls", "--client-cert", str(expired), "--client-key", str(key)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 1 and "this workstation's certificate for the edge expired on" in done.stderr
    # the PACS's, from the environment (a service's unit sets them), for --send
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / "dicom/CR-MONO1-10-chest"),
                           "--sr", str(tmp_path / "sr"), "--send", "tls:PACS@127.0.0.1:2762"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "MEDEDGE_DICOM_CA": str(tmp_path / "hostname")})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "the CA file for the PACS is not a PEM certificate" in done.stderr, done.stderr


def test_infer_results_for_the_pacs_need_a_folder_for_the_srs(shared_cxr):
    for option in (["--annotated-image"], ["--send", "PACS@127.0.0.1:104"]):
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / "dicom/CR-MONO1-10-chest"),
                               *option], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert done.returncode != 0 and done.stdout == "", done.stdout
        assert done.stderr.count("\n") == 1 and "write them with --out DIR or --sr DIR" in done.stderr, done.stderr
