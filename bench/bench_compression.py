"""Would a fast lossless compressor over the int8 wire pay? Measures, per cut, how much zlib (level 1) and
zstd (level 1, when the `zstandard` package is installed) shrink the int8 codes that cross the cut for a real
radiograph, the time to compress here and decompress there, and the time saved on each emulated link.

    .venv/bin/python bench/bench_compression.py
"""

from __future__ import annotations

import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.config import WireFormat
from inference.models.parts import tensor_name  # noqa: E402
from inference.models.preprocess import classifier_crops, letterbox  # noqa: E402
from inference.models.stages import INPUT  # noqa: E402
from inference.models.wire import encode  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from viewer.display import render_8bit  # noqa: E402
from viewer.loader import load_radiograph  # noqa: E402

IMAGE = ROOT.parent / "shared/data/cxr/dicom/DX_chest_966_fixed.dcm"
LINKS_MBIT = (1000, 100, 20)
CUTS = {"detector": (0, 4, 6, 8, 15, 22), "classifier": (0, 3, 5, 7, 9)}


def codecs() -> dict:
    found = {"zlib-1": (lambda b: zlib.compress(b, 1), zlib.decompress)}
    try:
        import zstandard

        compressor, decompressor = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
        found["zstd-1"] = (compressor.compress, decompressor.decompress)
    except ImportError:
        pass
    return found


def timed_ms(function, data, repeats: int = 5) -> tuple[object, float]:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(data)
        best = min(best, (time.perf_counter() - started) * 1e3)
    return result, best


def main() -> int:
    analyzer = Analyzer()
    grey = render_8bit(load_radiograph(IMAGE))
    inputs = {"detector": letterbox(grey, analyzer.detector.config.input_size)[0],
              "classifier": classifier_crops(grey, 256, 224, False, 3, "imagenet")[0]}
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {machine_description()} · input {IMAGE.name}")
    print("| model | cut | int8 MiB | codec | ratio | compress ms | decompress ms | "
          + " | ".join(f"saved at {m} Mbit/s ms" for m in LINKS_MBIT) + " |")
    print("|---|---|---|---|---|---|---|" + "---|" * len(LINKS_MBIT))
    models = {"detector": analyzer.detector, "classifier": analyzer.classifier}
    for name, model in models.items():
        image = torch.from_numpy(inputs[name])
        with torch.inference_mode():
            tensors = {INPUT: image, **model.run_stages({INPUT: image}, 0, max(CUTS[name]),
                                                        keep=list(range(max(CUTS[name]))))}
        for cut in CUTS[name]:
            crossing = encode(WireFormat.INT8, {tensor_name(i): tensors[i].numpy() for i in model.crossing(cut)})
            payload = b"".join(a.tobytes() for a in crossing.values())
            for codec, (compress, decompress) in codecs().items():
                packed, pack_ms = timed_ms(compress, payload)
                _, unpack_ms = timed_ms(decompress, packed)
                saved = [(len(payload) - len(packed)) * 8 / (mbit * 1e3) - pack_ms - unpack_ms for mbit in LINKS_MBIT]
                print(f"| {name} | {cut} | {len(payload) / 2**20:.2f} | {codec} | {len(payload) / len(packed):.2f} | "
                      f"{pack_ms:.1f} | {unpack_ms:.1f} | " + " | ".join(f"{s:+.0f}" for s in saved) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
