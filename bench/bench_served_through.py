"""What serving a cut's FP16 and int8 parts through its FP32 part costs and saves: the default parts (full offload and
the automatic cut of both models) in FP32, FP16 and int8, served by two real `edge serve` servers side by side. One
serves the whole repository: its FP16 and int8 parts decode their input and call the FP32 part of their cut within
Triton. The other serves the FP16 and int8 parts alone (no FP32 part beside them), each with its own copy of the
weights, as every part was served before. Reported: each part's process memory once both are ready, and each part's
latency, requests rotated between the servers each round.

    .venv/bin/python bench/bench_served_through.py [--rounds 20] [--repository REPO]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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
from inference.config import ModelKind, WireFormat  # noqa: E402
from inference.edge.repository import PROBE_MODEL, PartRequest, read_config, write_checksums, write_repository  # noqa: E402
from inference.edge.server import EdgeServer, free_ports  # noqa: E402
from inference.planning.plan import AUTO_CUTS  # noqa: E402
from inference.reports.benchmark import (  # noqa: E402
    machine_description,
    median_p95,
    rotated_ms,
    served_part_memory_mib,
)

WIRES = (WireFormat.FP32, WireFormat.FP16, WireFormat.INT8)
_NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_UINT8": np.uint8}


def export(work: Path) -> Path:
    analyzer = Analyzer()
    models = {ModelKind.DETECTOR: analyzer.detector, ModelKind.CLASSIFIER: analyzer.classifier}
    requests = [PartRequest(model, analyzer.weights[kind], cut, wire)
                for kind, model in models.items() for cut in (0, AUTO_CUTS[kind]) for wire in WIRES]
    write_repository(work / "repository", requests, gpu=False, progress=lambda message: print(message, flush=True))
    return work / "repository"


def alone(repository: Path, target: Path) -> list[str]:
    """A repository of `repository`'s FP16 and int8 parts without their FP32 parts (files hard-linked): served
    as every part was before, each on its own weights. Their names."""
    target.mkdir()
    names = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        parameters = read_config(config_path).parameters
        name = config_path.parent.name
        if name == PROBE_MODEL or parameters["mededge_wire"].string_value != "fp32":
            shutil.copytree(config_path.parent, target / name, copy_function=os.link)
        if name != PROBE_MODEL and parameters["mededge_wire"].string_value != "fp32":
            names.append(name)
    write_checksums(target)
    return names


def inputs_of(client: grpcclient.InferenceServerClient, part: str, rng: np.random.Generator) -> list:
    """Random tensors of the shapes and types `part` takes (int8: codes, and positive scales)."""
    entries = []
    for tensor in client.get_model_config(part).config.input:
        dtype = _NUMPY[grpcclient.model_config_pb2.DataType.Name(tensor.data_type)]
        shape = [1, *tensor.dims]
        data = (rng.integers(0, 256, shape).astype(dtype) if dtype is np.uint8 else
                (rng.random(shape) * 0.01 + 0.001 if tensor.name.endswith("_scale") else
                 np.full(shape, 128.0) if tensor.name.endswith("_zero") else rng.standard_normal(shape)).astype(dtype))
        entry = grpcclient.InferInput(tensor.name, shape, grpcclient.np_to_triton_dtype(dtype))
        entry.set_data_from_numpy(data)
        entries.append(entry)
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repository", type=Path, help="an `edge export` of these parts (default: exported here)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mededge-served-through-"))
    servers: dict[str, EdgeServer] = {}
    try:
        repository = args.repository or export(work)
        parts = alone(repository, work / "alone")
        for kind, served in (("alone", work / "alone"), ("through", repository)):
            grpc, metrics = free_ports(2)
            servers[kind] = EdgeServer(served, work / f"run-{kind}", grpc_port=grpc, metrics_port=metrics)
            started = time.perf_counter()
            servers[kind].start()
            print(f"{kind}: ready after {time.perf_counter() - started:.1f} s", flush=True)
        print(f"\n{machine_description()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
              f"{args.rounds} rounds after 3 warm-up calls, servers rotated each round\n")
        print("| part | on its own: PSS (anonymous) MiB, median / p95 ms | through its FP32 part: PSS (anonymous) "
              "MiB, median / p95 ms | latency through / alone |")
        print("| --- | --- | --- | --- |")
        clients = {kind: grpcclient.InferenceServerClient(server.grpc_address) for kind, server in servers.items()}
        rng = np.random.default_rng(0)
        totals = {kind: 0.0 for kind in servers}
        for part in parts:
            inputs = inputs_of(clients["alone"], part, rng)
            memory = {kind: served_part_memory_mib(server, part) for kind, server in servers.items()}
            times = rotated_ms({kind: partial(client.infer, part, inputs) for kind, client in clients.items()},
                               args.rounds, warm_up=3)
            cells = {}
            for kind in servers:
                totals[kind] += memory[kind][0]
                median, p95 = median_p95(times[kind])
                cells[kind] = f"{memory[kind][0]:.0f} ({memory[kind][1]:.0f}), {median:.1f} / {p95:.1f}"
            ratio = statistics.median(times["through"]) / statistics.median(times["alone"])
            print(f"| {part} | {cells['alone']} | {cells['through']} | {ratio:.2f} |", flush=True)
        fp32 = [p.parent.name for p in repository.glob("*_fp32/config.pbtxt")]
        served_fp32 = sum(served_part_memory_mib(servers["through"], part)[0] for part in fp32)
        print(f"\nThese parts together: {totals['alone']:.0f} MiB on their own, {totals['through']:.0f} MiB through "
              f"their FP32 parts (which hold {served_fp32:.0f} MiB, serving FP32 requests too)")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
