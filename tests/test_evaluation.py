"""`evaluate`: AUROC and AP against hand-computed cases, the label and box files, and a run on generated data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from inference.models.classifier import CHESTXRAY14
from inference.reports.evaluation import (
    EvaluationInputError,
    LabelFile,
    Predictions,
    auroc,
    average_precision,
    mean_auroc,
    per_finding_auroc,
    read_boxes,
    read_labels,
    score,
    table,
)

from conftest import ROOT
from test_worklist import _png

# ------------------------------------------------------------------ metrics by hand


def test_auroc_by_hand():
    # Positives score 0.9 and 0.3, negatives 0.8 and 0.1: of the 4 positive-negative pairs, 3 are ordered right.
    assert auroc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert auroc([1, 1, 0], [0.1, 0.2, 0.9]) == pytest.approx(0.0)
    assert auroc([0, 0], [0.1, 0.2]) is None and auroc([], []) is None  # one class only: undefined


def test_per_finding_and_mean_auroc():
    truth = {"a": frozenset({"Edema"}), "b": frozenset(), "c": frozenset({"Edema", "Mass"}), "d": frozenset()}
    probabilities = {"a": {"Edema": 0.9, "Mass": 0.1, "Hernia": 0.5}, "b": {"Edema": 0.8, "Mass": 0.2, "Hernia": 0.5},
                     "c": {"Edema": 0.3, "Mass": 0.7, "Hernia": 0.5}, "d": {"Edema": 0.1, "Mass": 0.4, "Hernia": 0.5}}
    per_finding = per_finding_auroc(truth, probabilities, ("Edema", "Mass", "Hernia", "Nodule"))
    # Mass: the one positive (0.7) outranks all 3 negatives; Hernia has no positive; Nodule was not predicted.
    assert per_finding == {"Edema": pytest.approx(0.75), "Mass": pytest.approx(1.0), "Hernia": None}
    assert mean_auroc(per_finding) == pytest.approx(0.875)
    assert mean_auroc({"Hernia": None}) is None


def test_average_precision_all_point_by_hand():
    truth = {"one": [(0, 0, 10, 10), (20, 20, 30, 30)], "two": [(0, 0, 10, 10)], "empty": []}
    detections = [
        ("one", 0.9, (0, 0, 10, 9)),       # TP (IoU 0.9 with the first box)
        ("empty", 0.8, (0, 0, 5, 5)),      # FP: an image without boxes
        ("one", 0.7, (0, 0, 10, 10)),      # FP: that box is already matched
        ("two", 0.6, (0, 0, 10, 5)),       # TP at IoU exactly 0.5
        ("one", 0.5, (50, 50, 60, 60)),    # FP: overlaps nothing
        ("elsewhere", 0.95, (0, 0, 1, 1)),  # an image that is not evaluated: ignored
    ]
    # Ranked: TP FP FP TP FP → recall 1/3 1/3 1/3 2/3 2/3, precision 1 1/2 1/3 1/2 2/5.
    # Envelope: precision 1 up to recall 1/3, 1/2 up to 2/3, then 0 → AP = 1/3·1 + 1/3·1/2 = 0.5.
    assert average_precision(detections, truth) == pytest.approx(0.5)
    assert average_precision(detections, truth, iou_threshold=0.51) == pytest.approx(1 / 3)  # the 0.5 one fails
    assert average_precision([], truth) == 0.0
    assert average_precision([("one", 0.5, (0, 0, 10, 10))], {"one": []}) is None  # no box: undefined
    perfect = [(image, 0.9, box) for image, boxes in truth.items() for box in boxes]
    assert average_precision(perfect, truth) == pytest.approx(1.0)


def test_average_precision_envelope_uses_later_higher_precision():
    truth = {"x": [(0, 0, 10, 10), (20, 0, 30, 10)]}
    detections = [("x", 0.9, (40, 40, 50, 50)), ("x", 0.8, (0, 0, 10, 10)), ("x", 0.7, (20, 0, 30, 10))]
    # FP TP TP: precision 0, 1/2, 2/3 at recall 0, 1/2, 1 → envelope 2/3 over both recall steps.
    assert average_precision(detections, truth) == pytest.approx(2 / 3)


# ------------------------------------------------------------------ the files


def test_read_labels_chestxray14_style(tmp_path):
    path = tmp_path / "Data_Entry.csv"
    path.write_text("Image Index,Finding Labels,Follow-up #,Patient ID\n"
                    "a.png,Effusion|Infiltration,0,1\n"
                    "b.png,No Finding,0,2\n"
                    "c.png,pleural thickening|COVID-19,1,3\n\n", encoding="utf-8")
    labels = read_labels(path)
    assert labels.findings == {"a.png": {"Effusion", "Infiltration"}, "b.png": set(),
                               "c.png": {"Pleural_Thickening"}}
    assert labels.unknown == {"COVID-19"}
    path.write_text("Image Index,Finding Labels\na.png,Mass\na.png,Edema\n")
    with pytest.raises(EvaluationInputError, match="line 3: a.png is listed twice"):
        read_labels(path)
    path.write_text("file,labels\n")
    with pytest.raises(EvaluationInputError, match="no 'Image Index' column"):
        read_labels(path)


def test_read_boxes_both_headers(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("image,x,y,w,h\na.png,10,20,30,40\na.png,0,0,1,1\n")
    assert read_boxes(path) == {"a.png": [(10, 20, 40, 60), (0, 0, 1, 1)]}
    path.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00013118_008.png,Atelectasis,225.5,547,86,79,,,\n")
    assert read_boxes(path) == {"00013118_008.png": [(225.5, 547, 311.5, 626)]}
    path.write_text("image,x,y,w,h\na.png,1,2,three,4\n")
    with pytest.raises(EvaluationInputError, match="line 2"):
        read_boxes(path)


def test_score_counts_boxes_only_where_known():
    labels = LabelFile({"boxed": frozenset({"Mass"}), "clear": frozenset(), "unboxed": frozenset({"Edema"})})
    predictions = Predictions("local torch", failed={"bad": "corrupt"}, modes={"local": 3}, seconds=2.0,
                              probabilities={"boxed": {"Mass": 0.9, "Edema": 0.2}, "clear": {"Mass": 0.1, "Edema": 0.3},
                                             "unboxed": {"Mass": 0.2, "Edema": 0.8}},
                              detections={"boxed": [(0.9, (0, 0, 10, 10))], "clear": [],
                                          "unboxed": [(0.99, (50, 50, 60, 60))]})  # its boxes are unknown
    result = score(predictions, labels, {"boxed": [(0, 0, 10, 10)]})
    assert result["auroc"] == {"Mass": 1.0, "Edema": 1.0} and result["mean_auroc"] == 1.0
    assert result["map50"] == 1.0 and result["box_images"] == 2
    assert result["images"] == 3 and result["failed"] == 1 and result["seconds_per_image"] == 0.5
    text = table([result])
    assert "| local torch | 3 | 1 | 1.000 | – | 1.000 | – |" in text and "| Mass | 1.000 |" in text


# ------------------------------------------------------------------ end to end


def test_evaluate_on_generated_labels(tmp_path, shared_cxr):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(shared_cxr / "raster/txv_nih_00027426_000_512px.png", images / "00027426_000.png")
    for i in range(5):
        _png(images / f"gen_{i}.png", i)
    labels = tmp_path / "labels.csv"
    labels.write_text("Image Index,Finding Labels\n"
                      "00027426_000.png,Effusion|Infiltration\n"
                      "gen_0.png,No Finding\n"
                      "gen_1.png,Effusion\n"
                      "gen_2.png,No Finding\n"
                      "gen_3.png,Infiltration|Mass\n"
                      "gen_4.png,Cardiomegaly\n"
                      "absent.png,Edema\n")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x,y,w,h\n00027426_000.png,100,150,120,160\ngen_3.png,40,50,60,70\n")
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "evaluate", "--labels", str(labels), "--images",
                           str(images), "--boxes", str(boxes), "--runtimes", "torch,onnxruntime", "--detector-size", "128",
                           "--json", str(report)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 labelled image(s) not found" in done.stderr and "Traceback" not in done.stderr
    assert "| local torch | 6 | 0 |" in done.stdout
    result = json.loads(report.read_text())
    assert result["labelled"] == 7 and result["found"] == 6 and result["missing"] == ["absent.png"]
    torch_run, onnx_run = result["configurations"]
    # The second configuration's change from the first, as the seeds reported their accelerated models: onnxruntime
    # FP32 is PyTorch to float rounding, so no change.
    assert onnx_run["change_from"] == "local torch" and onnx_run["runtime"] == {"detector": "onnxruntime",
                                                                                 "classifier": "onnxruntime"}
    assert onnx_run["mean_auroc_change"] == pytest.approx(onnx_run["mean_auroc"] - torch_run["mean_auroc"], abs=2e-4)
    assert abs(onnx_run["mean_auroc_change"]) <= 1e-3 and abs(onnx_run["map50_change"]) <= 1e-3
    assert "mean_auroc_change" not in torch_run and "| Δ mean AUROC |" in done.stdout
    # Both classes are present for Effusion, Infiltration, Mass and Cardiomegaly only.
    assert set(k for k, v in torch_run["auroc"].items() if v is not None) == {"Effusion", "Infiltration", "Mass",
                                                                              "Cardiomegaly"}
    assert set(torch_run["auroc"]) == set(CHESTXRAY14)
    assert 0 <= torch_run["mean_auroc"] <= 1 and torch_run["modes"] == {"local": 6}
    # AP: the two boxed images and the two No Finding ones; 0 ≤ AP ≤ 1 whatever the demo weights find.
    assert torch_run["box_images"] == 4 and 0 <= torch_run["map50"] <= 1

