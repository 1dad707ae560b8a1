"""Benchmark: local runtimes side by side — PyTorch eager vs onnxruntime FP32 — per model.

Size of the weights each runtime loads, median latency of one image, and fidelity (largest difference
of the outputs against PyTorch on the same input: probabilities; detector scores and box coordinates
as a fraction of the input size). Demo weights, one real chest radiograph as input.

    .venv/bin/python bench/bench_runtimes.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference.benchmark import machine_description  # noqa: E402
from inference.analyze import Analyzer  # noqa: E402
from inference.edge_parts import ModelKind, part_difference  # noqa: E402
from inference.preprocess import classifier_crops, letterbox  # noqa: E402
from inference.runtimes import OnnxModel, median_ms  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402

IMAGE = ROOT.parent / "shared/data/cxr/dicom/DX_chest_966_fixed.dcm"


def main() -> int:
    analyzer = Analyzer()
    grey = render_8bit(load_radiograph(IMAGE))
    inputs = {"detector": letterbox(grey, analyzer.detector.config.input_size)[0],
              "classifier": classifier_crops(grey, 256, 224, False, 3, "imagenet")[0]}
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()} · torch threads "
          f"{torch.get_num_threads()} · input {IMAGE.name}")
    print("| model | runtime | weights MB | median ms | speed-up | max difference vs PyTorch |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, model, weights in (("detector", analyzer.detector, analyzer.detector_source),
                                     ("classifier", analyzer.classifier, analyzer.classifier_weights.source)):
            batch = inputs[name]
            with torch.inference_mode():
                reference = model(torch.from_numpy(batch)).numpy()
                torch_ms = median_ms(lambda: model(torch.from_numpy(batch)), repeats=7)
            onnx = OnnxModel(model, weights, Path(folder))
            onnx_ms = median_ms(lambda: onnx.run(batch), repeats=7)
            got = onnx.run(batch)["output" if name == "detector" else "probabilities"]
            kind = ModelKind.DETECTOR if name == "detector" else ModelKind.CLASSIFIER
            difference = part_difference(kind, "output" if name == "detector" else "probabilities", reference, got,
                                         batch.shape[-1])
            torch_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
            print(f"| {name} | PyTorch eager | {torch_mb:.0f} | {torch_ms:.0f} | 1.00× | — |")
            print(f"| {name} | onnxruntime FP32 | {os.path.getsize(onnx.path) / 1e6:.0f} | {onnx_ms:.0f} | "
                  f"{torch_ms / onnx_ms:.2f}× | {difference:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
