"""Pruned models (`models prune`): channels really removed, distilled from the unpruned model on unlabelled
radiographs, exported and run by OpenVINO, gated against the unpruned model on held-back radiographs, and
the `pruned` runtime in an analysis (heat maps from the pruned head); the seeds' unstructured magnitude pruning
+ INT8 for its compressed size. Speed is measured in bench/bench_runtimes.py, not here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_runtimes import REAL

from inference.analysis.analyzer import Analyzer, ModelChoice
from inference.config import ModelKind
from inference.models.parts import sample_input
from inference.runtimes import pruning
from inference.runtimes.local import (
    DYNAMIC,
    PRUNED,
    RuntimeRefused,
    build_quantized,
    current_build,
    file_session,
    fp32_file,
    gate,
    make_current,
    model_input,
    open_runtime,
)
from viewer.display import render_8bit
from viewer.loader import load_radiograph

from conftest import ROOT
from test_edge import TINY

pytestmark = pytest.mark.timeout(600)
FEW = pruning.Distillation(steps=6, batch=2)  # enough to see it learn; the real command runs 200


def own_data_folder(root, weights_cache):
    """A data folder of its own (so that no other test's `auto` meets these builds), the demo weights reused."""
    root.mkdir(exist_ok=True)
    (weights_cache / "weights").mkdir(exist_ok=True)
    (root / "weights").symlink_to(weights_cache / "weights", target_is_directory=True)
    (root / "local-onnx").mkdir()
    return root


@pytest.fixture(scope="module")
def setting(shared_cxr, tmp_path_factory, _demo_weights_cache):
    analyzer = Analyzer(ModelChoice(detector=TINY))
    greys = [render_8bit(load_radiograph(shared_cxr / name)) for name in REAL]
    data = own_data_folder(tmp_path_factory.mktemp("pruning") / "data", _demo_weights_cache)
    return analyzer, greys, data


@pytest.mark.parametrize("kind", ["classifier", "detector"])
def test_channels_are_removed_but_the_outputs_read_keep_theirs(setting, kind):
    analyzer, greys, _ = setting
    model = analyzer.classifier if kind == "classifier" else analyzer.detector
    example = torch.from_numpy(model_input(model, greys[0])[:1])
    pruned = pruning.prune_channels(model, 0.5, example)
    assert pruning.count_parameters(pruned) < 0.4 * pruning.count_parameters(model)  # ~quarter: in and out halved
    assert pruning.count_parameters(model) == sum(p.numel() for p in model.parameters())  # the original untouched
    with torch.inference_mode():
        assert pruned(example).shape == model(example).shape  # 14 findings; every anchor's box and scores
    if kind == "classifier":
        assert pruned.classifier.out_features == model.classifier.out_features
        assert pruned.classifier.in_features < model.classifier.in_features  # fewer features for the heat maps
    else:
        assert [c.out_channels for c in pruned.detect.m] == [c.out_channels for c in model.detect.m]


def test_distillation_brings_the_pruned_copy_towards_the_unpruned_model(setting):
    """No labels: the unpruned model's answers are the targets. On the same inputs, the distilled copy is
    closer to the unpruned model than the copy before distilling."""
    analyzer, greys, _ = setting
    model = analyzer.classifier
    inputs = [model_input(model, grey) for grey in greys]
    student = pruning.prune_channels(model, 0.5, torch.from_numpy(inputs[0][:1]))

    def distance() -> float:
        with torch.inference_mode():
            return max(float((student(torch.from_numpy(x)) - model(torch.from_numpy(x))).abs().max()) for x in inputs)

    before = distance()
    losses = pruning.distil(student, model, inputs, pruning.Distillation(steps=12, batch=2))
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert distance() < before
    assert not model.training and all(p.grad is None for p in model.parameters())  # the teacher only answered


def test_a_pruned_build_runs_on_openvino_gated_and_analyses_with_heat_maps(setting, shared_cxr, monkeypatch):
    analyzer, greys, data = setting
    folder = data / "local-onnx"
    model, weights = analyzer.classifier, analyzer.classifier_weights.source
    inputs = [model_input(model, grey) for grey in greys]
    fp32, _ = fp32_file(model, weights, folder)
    with pytest.raises(RuntimeRefused, match="models prune"):
        file_session(model, weights, folder, PRUNED)  # none made current yet
    monkeypatch.setenv("MEDEDGE_DATA_DIR", str(data))
    with pytest.raises(RuntimeRefused, match="no pruned build of either model yet.*models prune --images DIR"):
        Analyzer(ModelChoice(detector=TINY, runtime=PRUNED))  # neither model has one
    path, record, held_back = pruning.build_pruned(model, weights, fp32, 0.25, inputs, FEW)
    assert record.held_back_images == len(held_back) == 1 and record.training_images == len(inputs) - 1
    assert record.parameters < record.parameters_before and record.steps == FEW.steps
    again = pruning.build_pruned(model, weights, fp32, 0.25, inputs, FEW)  # the same build: reused
    assert again[0] == path and again[1] == record
    make_current(fp32, PRUNED, path, record.training_images)
    session = file_session(model, weights, folder, PRUNED)
    assert session.runtime == PRUNED and session.path == path and session.cam_weight is not None
    assert session.cam_weight.shape == (len(model.config.classes), record_features(session, inputs[0]))
    verdict = gate(model, session, held_back)  # against the unpruned model
    assert verdict["runtime"] == PRUNED and verdict["images"] == 1 and verdict["max_difference"] > 0

    # Asked for, a pruned copy that fails the gate is refused (the detector, without one, would run unpruned);
    # a few distillation steps do not bring it within the gate on the sample input `open_runtime` checks.
    assert not gate(model, session, [sample_input(model).numpy()])["passes"]
    with pytest.raises(RuntimeRefused, match="pruned fails the fidelity gate for the classifier"):
        Analyzer(ModelChoice(detector=TINY, runtime=PRUNED))

    # In an analysis (as `open_runtime` hands it out once it passed the gate — a few distillation steps here do
    # not get it there): the result says the runtime; the heat maps weigh the pruned features by the pruned head.
    radiograph = load_radiograph(shared_cxr / REAL[2])
    unpruned = analyzer.analyze(radiograph)
    lane = analyzer.with_edge(None)
    lane.onnx, lane.runtimes = {ModelKind.CLASSIFIER: session}, {**analyzer.runtimes, ModelKind.CLASSIFIER: PRUNED}
    findings = lane.analyze(radiograph)
    assert findings.models["classifier"].runtime == PRUNED and unpruned.models["classifier"].runtime != PRUNED
    finding = next(iter(unpruned.probabilities))
    heat = findings.heat_map(finding)
    assert heat.shape == unpruned.heat_map(finding).shape and np.isfinite(heat).all()
    assert not np.allclose(heat, unpruned.heat_map(finding))
    assert findings.probabilities[finding] == pytest.approx(float(session.run(model_input(model, render_8bit(
        radiograph)))["probabilities"].mean(axis=0)[model.config.classes.index(finding)]), abs=1e-6)


def record_features(session, image: np.ndarray) -> int:
    return session.run(image)["features"].shape[1]


def test_unstructured_magnitude_pruning_is_smaller_compressed(setting):
    analyzer, greys, data = setting
    folder = data / "local-onnx"
    model, weights = analyzer.detector, analyzer.detector_source  # the tiny one: the same layers, smaller
    inputs = [model_input(model, grey) for grey in greys]
    fp32, _ = fp32_file(model, weights, folder)
    sparse, sparsity, held_back = pruning.build_sparse(model, weights, fp32, 0.8, inputs, FEW)
    assert sparsity == pytest.approx(0.8, abs=0.01)  # the schedule ends at the target
    assert pruning.polynomial_sparsity(0, 10) < pruning.polynomial_sparsity(5, 10) < pruning.polynomial_sparsity(9, 10)
    dense_int8, sparse_int8 = build_quantized(fp32, DYNAMIC), build_quantized(sparse, DYNAMIC)
    assert pruning.compressed_size(sparse_int8) < 0.7 * pruning.compressed_size(dense_int8)
    assert held_back


def test_models_prune_command(tmp_path, _demo_weights_cache, shared_cxr):
    images = tmp_path / "images"
    images.mkdir()
    for name in REAL:
        (images / os.path.basename(name)).symlink_to(shared_cxr / name)
    (images / "notes.txt").write_text("not an image")
    data = own_data_folder(tmp_path / "data", _demo_weights_cache)
    env = os.environ | {"MEDEDGE_DATA_DIR": str(data)}
    command = [sys.executable, str(ROOT / "main.py"), "models", "prune", "--images", str(images), "--steps", "4",
               "--ratio", "0.25"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=500)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "notes.txt" in done.stderr
    (line,) = done.stdout.splitlines()
    record = json.loads(line)
    assert record["model"] == "classifier" and record["runtime"] == PRUNED and isinstance(record["kept"], bool)
    assert record["parameters"] < record["parameters_before"] and record["held_back_images"] == 1
    fp32 = data / "local-onnx" / (os.path.basename(record["file"]).split("-pruned")[0] + ".onnx")
    assert (current_build(fp32, PRUNED) is not None) == record["kept"]  # kept only if it passed the gate
    if not record["kept"]:
        assert "fails the fidelity gate" in done.stderr
        with pytest.raises(RuntimeRefused, match="no pruned build of the classifier"):
            analyzer = Analyzer(ModelChoice(detector=TINY))
            open_runtime(analyzer.classifier, analyzer.classifier_weights.source, fp32.parent, PRUNED)

    # `evaluate --labels`: the pruned configuration's AUROC change from the unpruned one, as the seeds reported it.
    labels = tmp_path / "labels.csv"
    labels.write_text("Image Index,Finding Labels\n" + "".join(
        f"{os.path.basename(name)},{found}\n" for name, found in zip(REAL, ("Effusion", "No Finding", "Effusion|Mass"),
                                                                        strict=True)))
    report = tmp_path / "evaluation.json"
    evaluated = subprocess.run([sys.executable, str(ROOT / "main.py"), "evaluate", "--labels", str(labels), "--images",
                                str(images), "--runtimes", "torch,pruned", "--detector-size", "128", "--json",
                                str(report)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=500)
    assert "Traceback" not in evaluated.stderr, evaluated.stderr
    reference, pruned_run = json.loads(report.read_text())["configurations"]
    assert reference["configuration"] == "local torch" and reference["mean_auroc"] is not None
    if record["kept"]:
        assert evaluated.returncode == 0, evaluated.stderr
        assert pruned_run["runtime"] == {"detector": "torch", "classifier": PRUNED}  # the detector was not pruned
        assert pruned_run["change_from"] == "local torch"
        assert pruned_run["mean_auroc_change"] == pytest.approx(pruned_run["mean_auroc"] - reference["mean_auroc"],
                                                                abs=2e-4)
        assert "| Δ mean AUROC |" in evaluated.stdout
    else:
        assert evaluated.returncode != 0 and "no pruned build of either model" in pruned_run["error"]

    too_few = tmp_path / "one"
    too_few.mkdir()
    (too_few / "a.png").symlink_to(shared_cxr / REAL[2])
    refused = subprocess.run(command[:4] + ["--images", str(too_few)], capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=120)
    assert refused.returncode == 1 and refused.stdout == "" and refused.stderr.count("\n") == 1
    assert "at least 2 radiographs" in refused.stderr
