"""What a spatial split could at best gain on two devices with halo rows exchanged after every layer (EdgeDI's
scheme, not built; issue 22): each device would run every layer on half the rows plus one row of halo per 3×3
convolution, so its compute is about that of the whole detector on a band of half the image plus a few rows.

Measured here on one thread (as one edge server of the benchmarks runs), the detector at `--size` px on bands of
half the rows plus 0, 32 and 64 rows, against the whole image; the ratio whole / band is the ceiling before any
exchange cost (a round trip per exchange, about 66 spatial layers in YOLOv4-P5). Demo weights, channels-last.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_band_ceiling.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from inference.models.detector import YoloDetector


def _median_ms(model: torch.nn.Module, rows: int, size: int, rounds: int) -> float:
    image = torch.rand(1, 3, rows, size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(image)  # warm-up
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _rows_of(kernel) -> int:
    return int(kernel[0] if isinstance(kernel, tuple) else kernel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = YoloDetector().eval().to(memory_format=torch.channels_last)
    spatial = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.MaxPool2d)
                  and _rows_of(m.kernel_size) > 1)
    whole = _median_ms(model, args.size, args.size, args.rounds)
    print(f"whole detector, {args.size} rows: {whole:.0f} ms (median of {args.rounds}); layers reaching beyond "
          f"their row (kernel > 1): {spatial}")
    print("| rows per device | of the image | compute, ms | ceiling (whole / band) |")
    print("| --- | --- | --- | --- |")
    for extra in (0, 32, 64):
        rows = args.size // 2 + extra
        band = _median_ms(model, rows, args.size, args.rounds)
        print(f"| {args.size // 2} + {extra} | {rows / args.size:.0%} | {band:.0f} | {whole / band:.2f}× |")


if __name__ == "__main__":
    main()
