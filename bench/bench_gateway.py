"""What the edge's gateway costs: round trips of the same requests straight to Triton (its private Unix socket)
and through the gateway `edge serve` puts in front of it (TCP on loopback), side by side in rotated rounds, on
this machine.

Requests: the link probe with 1 MiB and 4 MiB (the size of the detector's FP32 tensor at cut 6, 512 px), and the
classifier's edge part at cut 7 (FP32, 98 KiB) with its compute. Client, gateway and Triton share this machine's
cores, as they do in the loopback benchmark.

    .venv/bin/python bench/bench_gateway.py [--repeats 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402

from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.edge.repository import PROBE_MODEL, PartRequest, write_repository  # noqa: E402
from inference.edge.server import EdgeServer, free_ports  # noqa: E402
from inference.models.parts import part_spec  # noqa: E402
from inference.models.wire import WireFormat  # noqa: E402
from inference.reports.benchmark import machine_description, median_p95, rotated_ms  # noqa: E402


def requests(analyzer: Analyzer) -> dict[str, tuple[str, list]]:
    """name → (model, inputs) of the requests timed."""
    def probe(size: int) -> list:
        entry = grpcclient.InferInput("payload", [1, size], "UINT8")
        entry.set_data_from_numpy(np.zeros((1, size), np.uint8))
        return [entry]

    spec = part_spec(analyzer.classifier, 7, WireFormat.FP32, analyzer.classifier_weights.source)
    tensor = spec.inputs[0]
    features = grpcclient.InferInput(tensor.name, [1, *tensor.shape], "FP32")
    features.set_data_from_numpy(np.random.default_rng(0).random((1, *tensor.shape), np.float32))
    return {"probe 1 MiB": (PROBE_MODEL, probe(1 << 20)), "probe 4 MiB": (PROBE_MODEL, probe(4 << 20)),
            f"{spec.name} (98 KiB + compute)": (spec.name, [features])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    args = parser.parse_args()
    analyzer = Analyzer()
    work = Path(tempfile.mkdtemp(prefix="mededge-gateway-"))
    write_repository(work / "repository", [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7,
                                                       WireFormat.FP32)], gpu=False)
    grpc, metrics = free_ports(2)
    server = EdgeServer(work / "repository", work / "run", grpc_port=grpc, metrics_port=metrics)
    server.start()
    try:
        paths = {"Triton direct": grpcclient.InferenceServerClient(server.triton_grpc_address),
                 "through the gateway": grpcclient.InferenceServerClient(server.grpc_address)}
        print(f"{machine_description()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
              f"{args.repeats} rounds after 5 warm-up calls, paths rotated each round\n")
        print("| request | Triton direct median / p95 ms | through the gateway median / p95 ms | added (median) |")
        print("| --- | --- | --- | --- |")
        for name, (model, inputs) in requests(analyzer).items():
            times = rotated_ms({path: partial(client.infer, model, inputs) for path, client in paths.items()},
                               args.repeats, warm_up=5)
            (d_med, d_p95), (g_med, g_p95) = [median_p95(t) for t in times.values()]
            print(f"| {name} | {d_med:.2f} / {d_p95:.2f} | {g_med:.2f} / {g_p95:.2f} | "
                  f"{g_med - d_med:+.2f} ms ({g_med / d_med:.2f}×) |", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
