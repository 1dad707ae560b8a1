"""Benchmark: the workstation's side of a split — stages [0, cut) — on PyTorch FP32 (eager, channels-last, as the
analyzer runs it) and on the runtimes that also run them (onnxruntime and OpenVINO FP32; onnxruntime static QDQ and
OpenVINO INT8, calibrated on the radiographs given), side by side per cut, in interleaved rounds (drift falls on all
alike), on the analysis' own input (CheXNet: its ten crops when configured). Per row: median and p95 ms, speed-up
over PyTorch, the largest difference of the tensors that cross the cut against PyTorch (relative to their range,
as export checks them) and, for an INT8 head, the gate the product keeps it by: the split it makes (each wire
encoding, the rest in FP32) against the whole model in FP32 on the quarter of the radiographs held back from its
calibration, as `models quantize` splits them. Demo weights unless
given (timings do not depend on the weights' values; the INT8 gate does).

    .venv/bin/python bench/bench_split_heads.py [--repeats 15] [--threads 2] [--cuts-per-model 5] [--images DIR]
        [--classifier-weights F]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.bench_runtimes import calibration_images  # noqa: E402
from inference.analysis.analyzer import Analyzer, ModelChoice  # noqa: E402
from inference.config import Runtime  # noqa: E402
from inference.models.parts import kind_of, part_difference, tensor_name  # noqa: E402
from inference.models.stages import INPUT  # noqa: E402
from inference.planning.planner import analysis_input  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from inference.runtimes.fidelity import split_held_back  # noqa: E402
from inference.runtimes.local import (  # noqa: E402
    CALIBRATED,
    FP32,
    HEAD_RUNTIMES,
    gated_int8_head,
    head_session,
    model_input,
    site_radiographs,
)

LABELS = {Runtime.TORCH: "PyTorch FP32", Runtime.ONNXRUNTIME: "onnxruntime FP32", Runtime.OPENVINO: "OpenVINO FP32",
          Runtime.ONNXRUNTIME_INT8_STATIC: "onnxruntime INT8 static QDQ", Runtime.OPENVINO_INT8: "OpenVINO INT8 (NNCF)"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cuts-per-model", type=int, default=5)
    parser.add_argument("--images", metavar="DIR", help="the site's radiographs: three quarters calibrate, the "
                        "rest gate (default: every file of ../shared/data/cxr that is one)")
    parser.add_argument("--classifier-weights", metavar="F", help="CheXNet weights (default: demo weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    analyzer = Analyzer(ModelChoice(classifier_weights=args.classifier_weights))
    print(f"# Stages [0, cut) on the workstation: {machine_description()}, {args.threads} thread(s), "
          f"{args.repeats} interleaved rounds, `{' '.join(sys.argv)}`\n")
    print("| model | cut | runtime | median ms | p95 ms | speed-up over PyTorch | max difference | gate of the split "
          "(max difference) |")
    print("|---|---|---|---|---|---|---|---|")
    greys = site_radiographs(Path(args.images))[0] if args.images else calibration_images()
    with tempfile.TemporaryDirectory() as folder:
        for model, weights in ((analyzer.detector, analyzer.detector_source),
                               (analyzer.classifier, analyzer.classifier_weights.source)):
            n = model.stage_count
            count = args.cuts_per_model
            cuts = sorted({max(1, round(i * (n - 1) / max(count - 1, 1))) for i in range(count)})
            image = analysis_input(model)
            batch = np.ascontiguousarray(image.cpu().numpy())
            calibration, held_back = split_held_back([model_input(model, grey) for grey in greys])
            for cut in cuts:
                with torch.inference_mode():
                    reference = model.run_stages({INPUT: image}, 0, cut)
                runs = {Runtime.TORCH: functools.partial(model.run_stages, {INPUT: image}, 0, cut)}
                sessions = {runtime: head_session(model, weights, Path(folder), runtime, cut)
                            for runtime in HEAD_RUNTIMES if runtime not in CALIBRATED}
                gates = {}
                for runtime in CALIBRATED:  # built and timed whether or not they pass, their verdict reported
                    head = sessions[FP32]
                    sessions[runtime], verdict = gated_int8_head(model, cut, head.path, head.outputs, runtime,
                                                                       calibration, held_back)
                    gates[runtime] = f"{'pass' if verdict['passes'] else 'fail'} ({verdict['max_difference']:.1e})"
                runs |= {runtime: functools.partial(s.run, batch) for runtime, s in sessions.items()}
                times: dict[Runtime, list[float]] = {runtime: [] for runtime in runs}
                with torch.inference_mode():
                    for run in runs.values():
                        run()  # warm-up
                    for round_ in range(args.repeats):
                        order = list(runs)
                        order = order[round_ % len(order):] + order[:round_ % len(order)]
                        for runtime in order:
                            started = time.perf_counter()
                            runs[runtime]()
                            times[runtime].append((time.perf_counter() - started) * 1e3)
                torch_ms = statistics.median(times[Runtime.TORCH])
                for runtime, measured in times.items():
                    difference = 0.0
                    if runtime in sessions:
                        got = sessions[runtime].run(batch)
                        difference = max(part_difference(kind_of(model), tensor_name(i), reference[i].cpu().numpy(),
                                                         got[tensor_name(i)], 0) for i in model.crossing(cut))
                    measured.sort()
                    p95 = measured[min(len(measured) - 1, round(0.95 * len(measured) + 0.5) - 1)]
                    median = statistics.median(measured)
                    print(f"| {kind_of(model).value} | {cut}/{n} | {LABELS[runtime]} | {median:.1f} | {p95:.1f} | "
                          f"{torch_ms / median:.2f}× | {difference:.1e} | {gates.get(runtime, '—')} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
