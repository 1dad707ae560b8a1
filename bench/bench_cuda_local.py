"""Benchmark: the whole models on a CUDA GPU, beside the CPU — PyTorch FP32 (as the analyzer runs it) and FP16
(`--runtime torch-fp16`) on the GPU, PyTorch FP32 on `--cpu-threads` CPU threads — per model: median and p95 of
one study's input (a tenth as many runs on the CPU; the CheXNet acceleration work's ten-crop too), speed-up over
the CPU, the fidelity gate `auto` applies to FP16 over every real radiograph in ../shared/data/cxr that loads
(largest difference against PyTorch FP32 on the GPU), and what `auto` picks on CUDA. Demo weights. Needs a CUDA
device.

    python bench/bench_cuda_local.py [--repeats 50] [--cpu-threads 2] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.bench_runtimes import IMAGE, calibration_images, cases, latency  # noqa: E402
from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from inference.runtimes.local import TorchHalf, choose_on_cuda, gate  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_cuda_local.py needs a CUDA device (this PyTorch sees none)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.cpu_threads)
    gpu = torch.device("cuda")
    analyzer = Analyzer()
    grey = render_8bit(load_radiograph(IMAGE))
    greys = calibration_images()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()} · timed input "
          f"{IMAGE.name} · {args.repeats} runs after a warm-up · gate on {len(greys)} radiographs · "
          f"`{' '.join(sys.argv)}`")
    print("| model | runtime | median ms | p95 ms | speed-up over CPU | max difference vs FP32 | gate |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    with torch.inference_mode():
        for model in (analyzer.detector, analyzer.classifier):
            for name, timed, gate_inputs in cases(model, grey, greys):
                image = torch.from_numpy(timed)
                cpu_ms = latency(lambda: model(image), max(3, args.repeats // 10))  # noqa: B023 (run at once)
                model.to(gpu)
                # the input copied up and the result down, as analyze and the FP16 copy do (.cpu() synchronises)
                fp32_ms = latency(lambda: model(image.to(gpu)).cpu(), args.repeats)  # noqa: B023
                half = TorchHalf(model, gpu)
                half_ms = latency(lambda: half.run(timed), args.repeats)  # noqa: B023 (copies in and out, as analyze)
                verdict = gate(model, half, gate_inputs)
                auto = "FP16" if choose_on_cuda(model, gpu) is not None else "FP32"
                model.to("cpu")
                for runtime, (median, p95), difference, passes in (
                        (f"PyTorch FP32, CPU, {args.cpu_threads} threads", cpu_ms, 0.0, True),
                        ("PyTorch FP32, GPU", fp32_ms, 0.0, True),
                        ("PyTorch FP16, GPU", half_ms, verdict["max_difference"], verdict["passes"])):
                    rows.append({"model": name, "runtime": runtime, "median_ms": median, "p95_ms": p95,
                                 "speedup": cpu_ms[0] / median, "max_difference": difference, "passes": passes,
                                 "auto_on_cuda": auto})
                    print(f"| {name} | {runtime} | {median:.1f} | {p95:.1f} | {cpu_ms[0] / median:.1f}× | "
                          f"{difference:.2e} | {'passes' if passes else 'fails'} |", flush=True)
                print(f"| {name} | auto on CUDA picks {auto} | | | | | |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_description(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
