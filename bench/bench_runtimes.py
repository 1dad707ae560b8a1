"""Benchmark: the local runtimes side by side, as the seeds measured them — PyTorch FP32 (eager, channels-last,
as the analyzer runs it), onnxruntime FP32 / INT8 dynamic / INT8 static QDQ, OpenVINO FP32 / INT8 (NNCF) —
per model, at 1 and 2 threads; CheXNet also with ten crops, as the CheXNet acceleration work timed it.

Per row: size on disk of what the runtime loads, median and p95 latency of one study's input, speed-up over
PyTorch FP32 at the same thread count, fidelity against PyTorch FP32 on the timed input (largest difference:
probabilities; detector scores and box coordinates as a fraction of the input; for the detector whether every
box matches both ways at IoU >= 0.9), and the fidelity gate's rule over every real radiograph in
../shared/data/cxr that loads (the same radiographs calibrate the two calibrated INT8 builds, so that every runtime
is judged on all of them; `models quantize` instead gates a site's build on the quarter it holds back from its
calibration; files that are not images are skipped). Then, per model and thread count, the fastest runtime that
passes the gate among those the product had before OpenVINO and among all. Demo weights.

    .venv/bin/python bench/bench_runtimes.py [--repeats 20] [--threads 1,2] [--models detector,classifier]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.config import ModelKind, Runtime  # noqa: E402
from inference.models.classifier import CheXNet  # noqa: E402
from inference.models.parts import kind_of, part_difference  # noqa: E402
from inference.models.preprocess import classifier_crops  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from inference.runtimes.local import (  # noqa: E402
    CALIBRATED,
    DYNAMIC,
    FP32,
    OV_FP32,
    OV_INT8,
    STATIC,
    TORCH,
    file_session,
    gate,
    model_input,
)
from inference.runtimes.openvino import file_size  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.errors import RadiographError  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402

CXR = ROOT.parent / "shared/data/cxr"
IMAGE = CXR / "dicom/DX_chest_966_fixed.dcm"  # the timed input
LABELS = {TORCH: "PyTorch FP32", FP32: "onnxruntime FP32", DYNAMIC: "onnxruntime INT8 dynamic",
          STATIC: "onnxruntime INT8 static QDQ", OV_FP32: "OpenVINO FP32", OV_INT8: "OpenVINO INT8 (NNCF)"}
BEFORE_OPENVINO = (TORCH, FP32, DYNAMIC, STATIC)


def calibration_images() -> list[np.ndarray]:
    """Display-ready grey images of every real radiograph that loads."""
    greys = []
    for path in sorted(p for p in CXR.rglob("*") if p.is_file() and p.suffix.lower() not in (".md", ".tsv", ".txt")):
        try:
            greys.append(render_8bit(load_radiograph(path)))
        except RadiographError:
            pass  # not an image (SR), truncated, damaged: not calibration material
    return greys


def latency(run, repeats: int) -> tuple[float, float]:
    """Median and p95 (nearest rank) wall time of `run()` in ms, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.95 * len(times) + 0.5) - 1)]


def cases(model, grey: np.ndarray, greys: list[np.ndarray]) -> list[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(name, timed input, gate inputs) for a model: the detector's letterbox; CheXNet's one crop and ten."""
    if not isinstance(model, CheXNet):
        return [("detector", model_input(model, grey), [model_input(model, g) for g in greys])]
    config = model.config

    def crops(image: np.ndarray, ten: bool) -> np.ndarray:
        return classifier_crops(image, config.resize, config.input_size, ten, config.in_channels,
                                config.normalisation)[0]

    return [(f"classifier {label}", crops(grey, ten), [crops(g, ten) for g in greys])
            for label, ten in (("1 crop", False), ("ten-crop", True))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", default="detector,classifier")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    analyzer = Analyzer()
    grey = render_8bit(load_radiograph(IMAGE))
    greys = calibration_images()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()} · timed input "
          f"{IMAGE.name} · {args.repeats} runs after a warm-up · gate and INT8 calibration on {len(greys)} "
          f"radiographs from ../shared/data/cxr · `{' '.join(sys.argv)}`")
    print("| model | runtime | threads | size MB | median ms | p95 ms | speed-up | max difference vs PyTorch | "
          "boxes match (IoU ≥ 0.9) | gate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    best: list[str] = []
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        for kind in (ModelKind(name) for name in args.models.split(",")):
            model, weights = analyzer.model(kind), analyzer.weights[kind]
            calibration = [model_input(model, g) for g in greys]  # what `models quantize` feeds: the model's input
            verdicts: dict[tuple[str, Runtime], dict] = {}
            for count in threads:
                torch.set_num_threads(count)  # the ONNX and OpenVINO sessions take it when made
                measured: dict[str, dict[Runtime, tuple[float, bool]]] = {}
                for runtime in LABELS:
                    session = None if runtime == TORCH else file_session(
                        model, weights, Path(folder), runtime, calibration=calibration if runtime in CALIBRATED else None)
                    size = (sum(t.numel() * t.element_size() for t in model.state_dict().values()) if session is None
                            else file_size(session.path)) / 1e6
                    for case, batch, inputs in cases(model, grey, greys):
                        output = "output" if kind is ModelKind.DETECTOR else "probabilities"
                        if session is None:
                            median, p95 = latency(lambda m=model, batch=batch: m(torch.from_numpy(batch)), args.repeats)
                            torch_ms, passes, row = median, True, "— | — | —"
                        else:
                            median, p95 = latency(lambda s=session, batch=batch: s.run(batch), args.repeats)
                            want = model(torch.from_numpy(batch)).numpy()
                            got = session.run(batch)[output]
                            difference = part_difference(kind_of(model), output, want, got, batch.shape[-1])
                            if (case, runtime) not in verdicts:  # the gate does not depend on the threads
                                verdicts[case, runtime] = gate(model, session, inputs)
                            verdict = verdicts[case, runtime]
                            passes = verdict["passes"]
                            boxes = "—"
                            if kind is ModelKind.DETECTOR:
                                one = gate(model, session, [batch])["boxes_match"]
                                boxes = (f"{'yes' if one else 'no'} (all {len(inputs)}: "
                                         f"{'yes' if verdict['boxes_match'] else 'no'})")
                            row = (f"{difference:.1e} | {boxes} | {'pass' if passes else 'fail'} "
                                   f"({verdict['max_difference']:.1e})")
                            torch_ms = measured[case][TORCH][0]
                        measured.setdefault(case, {})[runtime] = (median, passes)
                        print(f"| {case} | {LABELS[runtime]} | {count} | {size:.0f} | {median:.0f} | {p95:.0f} | "
                              f"{torch_ms / median:.2f}× | {row} |", flush=True)
                    del session  # the detector's sessions are large
                for case, times in measured.items():
                    passing = {r: ms for r, (ms, ok) in times.items() if ok}
                    before = min((r for r in passing if r in BEFORE_OPENVINO), key=passing.__getitem__)
                    now = min(passing, key=passing.__getitem__)
                    best.append(f"- {case}, {count} thread(s): fastest passing before OpenVINO {LABELS[before]} "
                                f"{passing[before]:.0f} ms; now {LABELS[now]} {passing[now]:.0f} ms → "
                                f"{passing[before] / passing[now]:.2f}×")
    print("\n" + "\n".join(best))
    return 0


if __name__ == "__main__":
    sys.exit(main())
