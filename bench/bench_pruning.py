"""Benchmark: pruned models beside the unpruned one, as the seeds measured them.

Structured (`models prune`): 25 % and 50 % of each layer's channels removed, distilled from the unpruned model
on the real radiographs in ../shared/data/cxr (a quarter held back), exported and run by OpenVINO FP32 — the
same runtime as the unpruned row, so the speed-up is the pruning's alone. Per row: parameters, size on disk,
median and p95 latency at 1 and 2 threads, speed-up over the unpruned model on the same runtime and over
PyTorch FP32, and fidelity against the unpruned PyTorch model: the gate on the held-back radiographs and on
all of them (the training ones included, so the held-back figure is the honest one).

Unstructured (size only, the LibreHealth work's magnitude pruning + INT8): sparsity rising from 50 % to 80 %
while distilling, then dynamic INT8; its size raw and deflate-compressed beside the unpruned FP32 and INT8.
Demo weights.

    .venv/bin/python bench/bench_pruning.py [--steps 200] [--detector-steps 30] [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_runtimes import CXR, IMAGE, calibration_images, latency  # noqa: E402
from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.config import ModelKind  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from inference.runtimes import pruning  # noqa: E402
from inference.runtimes.local import (  # noqa: E402
    DYNAMIC,
    OV_FP32,
    PRUNED,
    OnnxModel,
    build_quantized,
    fp32_file,
    gate,
    model_input,
)
from inference.runtimes.openvino import OpenVinoModel  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402

RATIOS = (0.25, 0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="CheXNet's distillation steps")
    parser.add_argument("--detector-steps", type=int, default=30, help="the detector's (a step costs ~30× more)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", default="classifier,detector")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    analyzer = Analyzer()
    grey = render_8bit(load_radiograph(IMAGE))
    greys = calibration_images()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()} · timed input "
          f"{IMAGE.name} · {args.repeats} runs after a warm-up · distilled on the radiographs of {CXR.name} "
          f"({len(greys)}, a quarter held back) · `{' '.join(sys.argv)}`")
    print("| model | variant | runtime | parameters | size MB | threads | median ms | p95 ms | speed-up vs unpruned "
          "(same runtime) | vs PyTorch FP32 | distillation loss first → last | gate held back (max diff) | "
          "gate all (max diff) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    sizes = []
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        for kind in (ModelKind(k) for k in args.models.split(",")):
            model, weights = analyzer.model(kind), analyzer.weights[kind]
            inputs = [model_input(model, g) for g in greys]
            batch = model_input(model, grey)
            fp32, outputs = fp32_file(model, weights, folder)
            plan = pruning.Distillation(steps=args.steps if kind is ModelKind.CLASSIFIER else args.detector_steps)
            variants = [("unpruned", fp32, None, None)]
            for ratio in RATIOS:
                path, record, held_back = pruning.build_pruned(
                    model, weights, fp32, ratio, inputs, plan,
                    lambda text, ratio=ratio, kind=kind: print(f"{kind} {ratio:.0%}: {text}", file=sys.stderr))
                variants.append((f"pruned {ratio:.0%} of channels", path, record, held_back))
            gates = {}  # the verdicts do not depend on the threads: once per variant
            for variant, path, _, held_back in variants[1:]:
                session = OpenVinoModel(path, outputs, PRUNED, pruning.cam_weight(path))
                gates[variant] = gate(model, session, held_back), gate(model, session, inputs)
            for count in threads:
                torch.set_num_threads(count)
                with torch.inference_mode():
                    torch_ms, _ = latency(lambda m=model, b=batch: m(torch.from_numpy(b)), args.repeats)
                unpruned_ms = None
                for variant, path, record, _ in variants:
                    session = OpenVinoModel(path, outputs, OV_FP32 if record is None else PRUNED,
                                            None if record is None else pruning.cam_weight(path))
                    median, p95 = latency(lambda s=session, b=batch: s.run(b), args.repeats)
                    unpruned_ms = unpruned_ms or median
                    parameters = pruning.count_parameters(model) if record is None else record.parameters
                    if record is None:
                        cells = "— | — | —"
                    else:
                        held, every = gates[variant]
                        cells = (f"{record.loss_first:.3g} → {record.loss_last:.3g} ({record.steps} steps) | "
                                 f"{'pass' if held['passes'] else 'fail'} ({held['max_difference']:.1e}) | "
                                 f"{'pass' if every['passes'] else 'fail'} ({every['max_difference']:.1e})")
                    print(f"| {kind} | {variant} | OpenVINO FP32 | {parameters / 1e6:.2f} M | "
                          f"{path.stat().st_size / 1e6:.0f} | {count} | {median:.0f} | {p95:.0f} | "
                          f"{unpruned_ms / median:.2f}× | {torch_ms / median:.2f}× | {cells} |", flush=True)
            sparse, sparsity, held_back = pruning.build_sparse(model, weights, fp32, 0.8, inputs, plan)
            dense_int8, sparse_int8 = build_quantized(fp32, DYNAMIC), build_quantized(sparse, DYNAMIC)
            held = gate(model, OnnxModel(sparse_int8, outputs, DYNAMIC), held_back)
            for label, path in (("unpruned FP32", fp32), ("unpruned INT8 (dynamic)", dense_int8),
                                (f"magnitude-pruned {sparsity:.0%} + INT8 (dynamic)", sparse_int8)):
                gate_cell = (f"{'pass' if held['passes'] else 'fail'} ({held['max_difference']:.1e})"
                             if path == sparse_int8 else "—")
                sizes.append(f"| {kind} | {label} | {path.stat().st_size / 1e6:.1f} | "
                             f"{pruning.compressed_size(path) / 1e6:.1f} | {gate_cell} |")
    print("\n| model | file | size MB | deflate-compressed MB | gate held back (max diff) |\n|---|---|---|---|---|")
    print("\n".join(sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
