"""Every cut of a model served from one copy of its weights (inference/edge/weights.py).

What the served parts compute is checked against the workstation's own results in test_edge.py (its
repositories are written the same way); here: the size, the one file, and what onnxruntime reads."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime
import torch

from inference.analysis.analyzer import Analyzer
from inference.config import WireFormat
from inference.edge.repository import PartRequest, write_repository
from inference.edge.weights import WEIGHTS_FILE, bytes_on_disk
from inference.models.parts import export_part, part_spec, sample_input, tensor_name
from inference.models.stages import INPUT
from inference.models.wire import encode


def test_every_cut_of_a_model_shares_one_copy_of_its_weights(tmp_path):
    analyzer = Analyzer()
    model, weights = analyzer.classifier, analyzer.classifier_weights.source
    root = tmp_path / "repository"
    write_repository(root, [*(PartRequest(model, weights, cut, WireFormat.FP32) for cut in range(model.stage_count)),
                            PartRequest(model, weights, 5, WireFormat.INT8)], gpu=False)
    whole = tmp_path / "whole.onnx"  # the model as one ONNX, its weights inside
    export_part(model, part_spec(model, 0, WireFormat.FP32, weights), whole)
    parts = sorted(root.glob("classifier_*"))
    assert len(parts) == model.stage_count + 1
    # Separately, the parts would hold their stages' weights each time: 6× the model here.
    assert bytes_on_disk(root) <= 1.5 * whole.stat().st_size, (bytes_on_disk(root), whole.stat().st_size)
    blobs = {(p / "1" / WEIGHTS_FILE).stat().st_ino for p in parts}
    assert len(blobs) == 1

    # Parts added later into the same repository read the same file; nothing is exported again.
    said = []
    write_repository(root, [PartRequest(model, weights, 3, WireFormat.FP16),
                            PartRequest(model, weights, 3, WireFormat.FP32)], gpu=False, progress=said.append)
    assert [line.split(" (")[0] for line in said] == ["exporting classifier_cut03_fp16"]
    assert (root / "classifier_cut03_fp16/1" / WEIGHTS_FILE).stat().st_ino in blobs

    # An export killed half-way leaves its temporary files beside the parts; the next one removes them (the
    # container script refuses a repository holding files SHA256SUMS does not list).
    left = [root / "classifier_cut03_fp16/1/.weights.bin.k2x_9q0a", root / "classifier_cut05_int8/1/.weights.bin.link"]
    for path in left:
        path.write_bytes(b"half-written")
    said.clear()
    write_repository(root, [PartRequest(model, weights, 3, WireFormat.FP16)], gpu=False, progress=said.append)
    assert not any(path.exists() for path in left)
    assert sorted(said) == sorted(f"removed {p.relative_to(root)}, left by an interrupted export" for p in left)

    # The stock Triton's onnxruntime backend opens a part from its folder: the tensors come from weights.bin.
    spec = part_spec(model, 5, WireFormat.INT8, weights)
    version = root / spec.name / "1"
    graph = onnx.load(str(version / "model.onnx"), load_external_data=False).graph
    assert sum(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer) > 10
    embedded = tmp_path / "embedded.onnx"  # the same part as exported before: its weights inside
    export_part(model, spec, embedded)
    with torch.inference_mode():
        crossing = model.run_stages({INPUT: sample_input(model)}, 0, spec.cut)
    feeds = encode(spec.wire, {tensor_name(i): t.numpy() for i, t in crossing.items()})
    feeds = {t.name: feeds[t.name] for t in spec.inputs}
    got = onnxruntime.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    want = onnxruntime.InferenceSession(str(embedded), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    assert os.stat(version / "model.onnx").st_size < 0.1 * embedded.stat().st_size
