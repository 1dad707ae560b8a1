"""OpenVINO runtimes for a whole model on this workstation (the runtime of the CheXNet acceleration work).

- `openvino`: the whole model's FP32 ONNX (the file `onnxruntime` runs, checked against PyTorch when exported)
  compiled by OpenVINO for this CPU, at FP32 precision: OpenVINO would otherwise run BF16 where the CPU has
  it, which is not what a clinician asked for by choosing FP32.
- `openvino-int8`: NNCF post-training quantisation of that model, calibrated on model inputs made by the
  product's own preprocessing from the site's radiographs (`python main.py models quantize --runtime
  openvino-int8 --images DIR`); used only once built, like onnxruntime's static INT8. The tail after the last
  convolutions stays FP32, as there (see local.py).

Both pass the same fidelity gate as every local runtime (local.gate). OpenVINO and NNCF report usage to Intel by
default through openvino-telemetry (`import openvino` itself sends an event, consent assumed without a consent
file); nothing may leave a hospital's workstation, so this module — imported before anything imports openvino —
makes that package unimportable, and both fall back to their no-op telemetry.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from inference.config import Runtime

FP32 = Runtime.OPENVINO
INT8 = Runtime.OPENVINO_INT8

sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # its importers fall back to their stubs


@functools.cache
def _core():
    import openvino

    return openvino.Core()


@functools.cache
def nncf():
    """NNCF (its telemetry kept out, see above), its per-operation log lines and progress bars silenced: they are
    drawn by `rich` on its global console, which goes to nothing here (the product draws nothing with rich; the
    process's stdout stays untouched while a build runs in the background, e.g. beside `infer`'s results)."""
    import nncf as library
    import rich

    logging.getLogger("nncf").setLevel(logging.ERROR)
    # not a terminal whatever FORCE_COLOR or TTY_COMPATIBLE say: a live display on a "terminal" swaps sys.stdout and
    # sys.stderr for every thread while it runs
    rich.reconfigure(file=open(os.devnull, "w"), force_terminal=False, force_jupyter=False,  # noqa: SIM115
                     force_interactive=False)
    return library


def int8_file(fp32: Path, calibration: str) -> Path:
    """Where the INT8 build of `fp32` calibrated on the set `calibration` lives (OpenVINO IR: .xml + .bin)."""
    return fp32.with_name(f"{fp32.stem}-openvino-int8-{calibration}.xml")


def build_int8(fp32: Path, images: Sequence[np.ndarray], fp32_tail: Sequence[str], calibration: str) -> Path:
    """Quantise `fp32` with NNCF on `images` (model inputs), keep the nodes `fp32_tail` in FP32, write the IR
    (reused when already there) and return its path."""
    import openvino

    target = int8_file(fp32, calibration)
    if target.exists():
        return target
    library = nncf()
    model = _core().read_model(str(fp32))
    tail = set(fp32_tail)
    # OpenVINO keeps the ONNX nodes' names as its operations' names; the tail's constants fold away.
    keep = sorted(op.get_friendly_name() for op in model.get_ops() if op.get_friendly_name() in tail)
    quantized = library.quantize(
        model, library.Dataset([np.ascontiguousarray(image, dtype=np.float32) for image in images]),
        subset_size=len(images), preset=library.QuantizationPreset.MIXED,
        ignored_scope=library.IgnoredScope(names=keep, validate=False))
    # its own per process and thread: the viewer and `infer` may build the same file at once
    partial = target.with_name(f"{target.stem}.{os.getpid()}.{threading.get_ident()}.partial.xml")
    try:
        openvino.save_model(quantized, str(partial), compress_to_fp16=False)
        os.replace(partial.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(partial, target)  # the .xml last: a killed build is never taken for a complete one
    finally:
        for leftover in (partial, partial.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
    return target


def file_size(path: Path) -> int:
    """Bytes on disk of a model file (an IR's .xml with its .bin)."""
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


class OpenVinoModel:
    """A whole model compiled by OpenVINO for this CPU; outputs by name, like OnnxModel's."""

    def __init__(self, path: Path, outputs: Sequence[str], runtime: Runtime, cam_weight: np.ndarray | None = None
                 ) -> None:
        self.path, self.outputs, self.runtime = path, tuple(outputs), Runtime(runtime)
        self.cam_weight = cam_weight  # a pruned CheXNet's head, for its heat maps (None: the model's own)
        # FP32 as asked (no BF16), tuned for one request at a time, on the threads PyTorch would use.
        self.compiled = _core().compile_model(str(path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()})

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        request = self.compiled.create_infer_request()  # one per call: lanes of a worklist may share this model
        request.infer({"image": np.ascontiguousarray(batch, dtype=np.float32)})
        return {name: request.get_tensor(name).data.copy() for name in self.outputs}

