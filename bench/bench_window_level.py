"""Benchmark: window/level updates per second on a 3000×3000 16-bit radiograph in the real canvas.

Each update is what a right-drag event does: a new window → `render_8bit` → ImageItem → a repaint of
the canvas (offscreen). The same run also times `render_8bit` alone.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/bench_window_level.py [--updates 120]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from bench.bench_loader import SOURCE  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402
from viewer.radiograph import Window  # noqa: E402
from viewer.widgets.canvas import RadiographCanvas  # noqa: E402

SIZE = 3000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=120)
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    real = load_radiograph(SOURCE)
    pixels = cv2.resize(real.pixels.astype(np.uint16), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    from dataclasses import replace

    radiograph = replace(real, pixels=pixels, path="3000x3000")
    canvas = RadiographCanvas()
    canvas.resize(1200, 900)
    canvas.show()
    canvas.show_radiograph(radiograph)
    app.processEvents()

    low, high = radiograph.value_range
    windows = [Window((low + high) / 2 + i * 3, (high - low) * 0.8 + i * 5) for i in range(args.updates)]
    render_ms = []
    for window in windows[:30]:
        started = time.perf_counter()
        render_8bit(radiograph, window=window, invert=radiograph.inverted)
        render_ms.append((time.perf_counter() - started) * 1e3)

    started = time.perf_counter()
    for window in windows:
        canvas.set_window(window)
        canvas.viewport().repaint()  # synchronous paint, as the screen would show it
        app.processEvents()
    elapsed = time.perf_counter() - started
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()}")
    print("| measure | value |")
    print("|---|---|")
    print(f"| window/level updates per second (render + ImageItem + repaint, 1200×900 canvas) | "
          f"{args.updates / elapsed:.1f} |")
    print(f"| render_8bit alone, median ms | {statistics.median(render_ms):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
