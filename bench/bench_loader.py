"""Benchmark: open a 3000×3000 16-bit DICOM and make the display-ready 8-bit image.

Two encodings, measured side by side in one run: uncompressed (Explicit VR LE) and JPEG 2000
lossless. The pixels are a real chest radiograph from ../shared/data/cxr scaled to 3000² (a
synthetic gradient when that folder is absent), so the codec sees realistic content.

    .venv/bin/python bench/bench_loader.py [--repeat 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from inference.reports.benchmark import machine_description  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402

from dicom_factory import dataset, gradient, write  # noqa: E402

SIZE = 3000
SOURCE = ROOT.parent / "shared/data/cxr/dicom/DX_chest_966_fixed.dcm"


def chest_pixels() -> tuple[np.ndarray, str]:
    import cv2

    if SOURCE.exists():
        real = load_radiograph(SOURCE).pixels.astype(np.uint16)
        return cv2.resize(real, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR), SOURCE.name
    return gradient(SIZE, SIZE, bits=12), "synthetic gradient"


def measure(path: Path, repeat: int) -> dict[str, float]:
    load_ms, render_ms, total_ms = [], [], []
    load_radiograph(path)  # warm-up: imports, plugin discovery, page cache
    for _ in range(repeat):
        t0 = time.perf_counter()
        radiograph = load_radiograph(path)
        t1 = time.perf_counter()
        image = render_8bit(radiograph)
        t2 = time.perf_counter()
        assert image.shape == (SIZE, SIZE) and image.dtype == np.uint8
        load_ms.append((t1 - t0) * 1e3)
        render_ms.append((t2 - t1) * 1e3)
        total_ms.append((t2 - t0) * 1e3)

    def p95(values: list[float]) -> float:
        return float(np.percentile(values, 95))

    return {"load_median_ms": statistics.median(load_ms), "render_median_ms": statistics.median(render_ms),
            "total_median_ms": statistics.median(total_ms), "total_p95_ms": p95(total_ms), "runs": repeat}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    from pydicom.uid import JPEG2000Lossless

    pixels, content = chest_pixels()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        plain = write(dataset(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=4096), Path(folder, "plain.dcm"))
        j2k_ds = dataset(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=4096)
        j2k_ds.compress(JPEG2000Lossless)
        j2k = write(j2k_ds, Path(folder, "j2k.dcm"))
        for name, path, repeat in (("uncompressed", plain, args.repeat),
                                   ("jpeg2000-lossless", j2k, max(3, args.repeat // 3))):
            results[name] = measure(path, repeat) | {"file_mb": path.stat().st_size / 1e6}

    report = {
        "benchmark": "load 3000x3000 16-bit DICOM + display-ready 8-bit image",
        "content": content,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(),
        "results": results,
    }
    print(f"{report['date']} · {report['machine']} · content: {content}")
    print("| encoding | file MB | load median ms | 8-bit median ms | total median ms | total p95 ms | runs |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['file_mb']:.1f} | {r['load_median_ms']:.0f} | {r['render_median_ms']:.0f} | "
              f"{r['total_median_ms']:.0f} | {r['total_p95_ms']:.0f} | {r['runs']} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
