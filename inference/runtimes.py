"""Local runtimes for a whole model on this workstation: PyTorch eager, or onnxruntime on the same ONNX
graph an edge part uses for full offload (stages [0, n)). `auto` measures both once per machine and
model (cached beside the stage profiles) and keeps the faster; onnxruntime is exported and checked
against PyTorch on first use."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from inference.edge_parts import WireFormat, export_part, identity_of, kind_of, part_spec, sample_input
from inference.stages import StagedModel

RUNTIMES = ("torch", "onnxruntime", "auto")


class OnnxModel:
    """A whole model as one onnxruntime session; outputs by name (`output`, or `probabilities`+`features`)."""

    def __init__(self, model: StagedModel, weights: str, folder: Path) -> None:
        import onnxruntime

        spec = part_spec(model, 0, WireFormat.FP32, weights)
        path = folder / f"{spec.name}-{spec.fingerprint}.onnx"
        if not path.exists():
            export_part(model, spec, path)  # checked against PyTorch there
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [t.name for t in spec.outputs]
        self.path = path

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, {"image": batch.astype(np.float32)})))


def median_ms(function, repeats: int = 3) -> float:
    """Median wall time of `function()` in ms, after one warm-up call."""
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def choose_runtime(model: StagedModel, onnx_model: OnnxModel, weights: str, folder: Path) -> str:
    """The faster runtime for this model on this machine (measured once, then read from the cache)."""
    from inference.planner import machine_key

    key = f"runtime-{machine_key()}-{kind_of(model).value}-" + "-".join(
        v for k, v in identity_of(model, "any") if k != "classes")
    path = folder / (key.replace("/", "_") + ".json")
    if path.exists():
        try:
            return json.loads(path.read_text())["runtime"]
        except (ValueError, KeyError, OSError):
            pass
    image = sample_input(model)
    with torch.inference_mode():
        torch_ms = median_ms(lambda: model(image))
    onnx_ms = median_ms(lambda: onnx_model.run(image.numpy()))
    runtime = "onnxruntime" if onnx_ms < torch_ms else "torch"
    path.write_text(json.dumps({"runtime": runtime, "torch_ms": torch_ms, "onnxruntime_ms": onnx_ms}))
    return runtime
