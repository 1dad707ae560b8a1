"""Benchmark: PyTorch eager settings side by side — memory format (contiguous NCHW vs channels-last) and
intra-op threads — per model, on one real radiograph, in inference mode. Settles which settings the
`torch` runtime uses on this machine (measured, not assumed).

    .venv/bin/python bench/bench_torch_eager.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from inference.runtimes.local import median_ms, model_input  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402

IMAGE = ROOT.parent / "shared/data/cxr/dicom/DX_chest_966_fixed.dcm"


def main() -> int:
    analyzer = Analyzer()
    grey = render_8bit(load_radiograph(IMAGE))
    cores = torch.get_num_threads()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()} · torch "
          f"{torch.__version__} · input {IMAGE.name}")
    print("| model | memory format | threads | median ms | speed-up | max difference |")
    print("|---|---|---|---|---|---|")
    for name, model in (("detector", analyzer.detector), ("classifier", analyzer.classifier)):
        batch = torch.from_numpy(model_input(model, grey))
        with torch.inference_mode():
            reference = model(batch).numpy()
        baseline = None
        for threads in sorted({1, cores}, reverse=True):
            torch.set_num_threads(threads)
            for layout in (torch.contiguous_format, torch.channels_last):
                model.to(memory_format=layout)
                image = batch.contiguous(memory_format=layout)
                with torch.inference_mode():
                    ms = median_ms(lambda model=model, image=image: model(image), repeats=7)
                    difference = float(np.abs(model(image).numpy() - reference).max())
                baseline = baseline or ms
                label = "channels-last" if layout is torch.channels_last else "contiguous (NCHW)"
                print(f"| {name} | {label} | {threads} | {ms:.0f} | {baseline / ms:.2f}× | {difference:.1e} |",
                      flush=True)
        model.to(memory_format=torch.contiguous_format)
        torch.set_num_threads(cores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
