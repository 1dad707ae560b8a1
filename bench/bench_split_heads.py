"""Benchmark: the workstation's side of a split — stages [0, cut) — on PyTorch FP32 (eager, channels-last, as the
analyzer runs it) and on the FP32 runtimes that also run them (onnxruntime, OpenVINO), side by side per cut, in
interleaved rounds (drift falls on all alike), on the analysis' own input (CheXNet: its ten crops when
configured). Per row: median and p95 ms, speed-up over PyTorch, and the largest difference of the tensors that
cross the cut against PyTorch (relative to their range, as export checks them). Demo weights (timings do not
depend on the weights' values).

    .venv/bin/python bench/bench_split_heads.py [--repeats 15] [--threads 2] [--cuts-per-model 5]
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

from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.config import Runtime  # noqa: E402
from inference.models.parts import kind_of, part_difference, tensor_name  # noqa: E402
from inference.models.stages import INPUT  # noqa: E402
from inference.planning.planner import analysis_input  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from inference.runtimes.local import HEAD_RUNTIMES, head_session  # noqa: E402

LABELS = {Runtime.TORCH: "PyTorch FP32", Runtime.ONNXRUNTIME: "onnxruntime FP32", Runtime.OPENVINO: "OpenVINO FP32"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cuts-per-model", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    analyzer = Analyzer()
    print(f"# Stages [0, cut) on the workstation: {machine_description()}, {args.threads} thread(s), "
          f"{args.repeats} interleaved rounds, `{' '.join(sys.argv)}`\n")
    print("| model | cut | runtime | median ms | p95 ms | speed-up over PyTorch | max difference |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for model, weights in ((analyzer.detector, analyzer.detector_source),
                               (analyzer.classifier, analyzer.classifier_weights.source)):
            n = model.stage_count
            count = args.cuts_per_model
            cuts = sorted({max(1, round(i * (n - 1) / max(count - 1, 1))) for i in range(count)})
            image = analysis_input(model)
            batch = np.ascontiguousarray(image.cpu().numpy())
            for cut in cuts:
                with torch.inference_mode():
                    reference = model.run_stages({INPUT: image}, 0, cut)
                runs = {Runtime.TORCH: functools.partial(model.run_stages, {INPUT: image}, 0, cut)}
                sessions = {runtime: head_session(model, weights, Path(folder), runtime, cut)
                            for runtime in HEAD_RUNTIMES}
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
                          f"{torch_ms / median:.2f}× | {difference:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
