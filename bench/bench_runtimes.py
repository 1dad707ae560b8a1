"""Benchmark: local runtimes side by side — PyTorch eager, onnxruntime FP32, onnxruntime INT8 dynamic and
INT8 static QDQ — per model.

Size of the weights each runtime loads (the file), median latency of one image, speed-up against PyTorch,
and fidelity against PyTorch: the largest difference of the outputs on the timed input (probabilities;
detector scores and box coordinates as a fraction of the input size), and the fidelity gate `auto` applies
(probabilities within 0.02 and, for the detector, every box matched both ways at IoU >= 0.9) over all the
real radiographs in ../shared/data/cxr that load. Static QDQ is calibrated on those same radiographs (the
files that are not images — a report, a truncated or damaged one — are skipped). Demo weights.

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

import torch  # noqa: E402

from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.models.parts import kind_of, part_difference  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from inference.runtimes.local import DYNAMIC, FP32, STATIC, OnnxModel, gate, median_ms, model_input  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.errors import RadiographError  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402

CXR = ROOT.parent / "shared/data/cxr"
IMAGE = CXR / "dicom/DX_chest_966_fixed.dcm"  # the timed input
LABELS = {FP32: "onnxruntime FP32", DYNAMIC: "onnxruntime INT8 dynamic", STATIC: "onnxruntime INT8 static QDQ"}


def calibration_images() -> list:
    """Display-ready grey images of every real radiograph that loads."""
    greys = []
    for path in sorted(p for p in CXR.rglob("*") if p.is_file() and p.suffix.lower() not in (".md", ".tsv", ".txt")):
        try:
            greys.append(render_8bit(load_radiograph(path)))
        except RadiographError:
            pass  # not an image (SR), truncated, damaged: not calibration material
    return greys


def main() -> int:
    analyzer = Analyzer()
    grey = render_8bit(load_radiograph(IMAGE))
    greys = calibration_images()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()} · torch threads "
          f"{torch.get_num_threads()} · timed input {IMAGE.name} · gate and static calibration on {len(greys)} "
          f"radiographs from ../shared/data/cxr")
    print("| model | runtime | weights MB | median ms | speed-up | max difference vs PyTorch | "
          "boxes match (IoU ≥ 0.9) | gate |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, model, weights in (("detector", analyzer.detector, analyzer.detector_source),
                                     ("classifier", analyzer.classifier, analyzer.classifier_weights.source)):
            batch = model_input(model, grey)
            inputs = [model_input(model, g) for g in greys]
            output = "output" if name == "detector" else "probabilities"
            with torch.inference_mode():
                reference = model(torch.from_numpy(batch)).numpy()
                torch_ms = median_ms(lambda model=model, batch=batch: model(torch.from_numpy(batch)), repeats=7)
            torch_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
            print(f"| {name} | PyTorch eager | {torch_mb:.0f} | {torch_ms:.0f} | 1.00× | — | — | — |", flush=True)
            for runtime in (FP32, DYNAMIC, STATIC):
                session = OnnxModel(model, weights, Path(folder), runtime,
                                    calibration=inputs if runtime == STATIC else None)
                ms = median_ms(lambda session=session, batch=batch: session.run(batch), repeats=7)
                got = session.run(batch)[output]
                difference = part_difference(kind_of(model), output, reference, got, batch.shape[-1])
                verdict = gate(model, session, inputs)
                boxes = "—"
                if name == "detector":  # on the timed input, and over all the radiographs
                    one = gate(model, session, [batch])["boxes_match"]
                    boxes = f"{'yes' if one else 'no'} (all {len(inputs)}: {'yes' if verdict['boxes_match'] else 'no'})"
                print(f"| {name} | {LABELS[runtime]} | {os.path.getsize(session.path) / 1e6:.0f} | {ms:.0f} | "
                      f"{torch_ms / ms:.2f}× | {difference:.1e} | {boxes} | "
                      f"{'pass' if verdict['passes'] else 'fail'} ({verdict['max_difference']:.1e}) |", flush=True)
                del session  # the detector's sessions are large
    return 0


if __name__ == "__main__":
    sys.exit(main())
