"""A shared edge (issue 22): many workstations send to one edge server at once. Throughput and p95 latency with
1, 2, 4 and 8 concurrent clients, with Triton's dynamic batcher (at each queue delay asked) and without, for
each number of model instances asked (copies of the part Triton runs side by side).

Set-up, built and removed here: the part of --model at its automatic cut (FP32 on the wire, as `edge export
--cuts N` writes it) exported once per batching configuration, each served in turn by `edge serve` pinned to
CPU 1 with one compute thread (MEDEDGE_EDGE_THREADS=1); the clients are threads of this process pinned to CPU 0,
each with its own gRPC channel (an `EdgeClient`), each sending one image's tensors at the cut as a workstation
does and the next as soon as the last returned; loopback. Each cell runs --seconds after a warm-up; Triton's
statistics give the mean batch it ran. On a machine with a GPU, `--edge-runtime torch` serves the part with
PyTorch on it (`--edge-cpus`, `--client-cpus` place the processes on its cores).

    .venv/bin/python bench/bench_shared_edge.py --model classifier --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_spread import serve  # noqa: E402
from inference.reports.benchmark import machine_description, process_tree_cpu_ms  # noqa: E402

CLIENTS = (1, 2, 4, 8)


def export(folder: Path, args, batching: str, delay_us: int, instances: int) -> Path:
    """The part with this batching in `folder` (exported once: later calls rewrite its config)."""
    subprocess.run([sys.executable, str(ROOT / "main.py"), "edge", "export", "--out", str(folder), "--cpu",
                    "--runtime", args.edge_runtime,
                    "--models", args.model, "--cuts", str(args.cut), "--wire", "fp32", "--detector-size",
                    str(args.detector_size), "--batching", batching, "--queue-delay-us", str(delay_us),
                    "--instances", str(instances)],
                   check=True, stdout=subprocess.DEVNULL)
    return folder


def load(address: str, spec, clients: int, seconds: float, server: int) -> dict:
    """`clients` threads sending back to back for `seconds`: requests/s, median and p95 latency (ms), and how
    busy the edge's processes and the clients' were (% of one core)."""
    from inference.edge.client import EdgeClient, EdgeSettings
    from inference.models.wire import DTYPES as WIRE_DTYPES

    rng = np.random.default_rng(0)
    tensors = {t.name: rng.standard_normal((1, *t.shape)).astype(WIRE_DTYPES[t.dtype]) for t in spec.inputs}
    outputs = tuple(t.name for t in spec.outputs)
    channels = [EdgeClient(EdgeSettings(address, timeout_s=120)) for _ in range(clients)]
    for channel in channels:  # connected and the part verified before the clock starts
        channel.infer(spec, tensors, outputs)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(index: int) -> None:
        start.wait()
        while time.perf_counter() < deadline[0]:
            began = time.perf_counter()
            channels[index].infer(spec, tensors, outputs)
            latencies[index].append((time.perf_counter() - began) * 1e3)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    before = _batches(channels[0], spec.name)
    edge_cpu, client_cpu = process_tree_cpu_ms(server) / 1e3, sum(os.times()[:2])
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    edge_cpu, client_cpu = process_tree_cpu_ms(server) / 1e3 - edge_cpu, sum(os.times()[:2]) - client_cpu
    after = _batches(channels[0], spec.name)
    for channel in channels:
        channel.close()
    every = np.array([ms for each in latencies for ms in each])
    images, runs = after[0] - before[0], after[1] - before[1]
    return {"clients": clients, "requests": int(every.size), "requests_per_s": every.size / took,
            "median_ms": float(np.median(every)), "p95_ms": float(np.percentile(every, 95)),
            "mean_batch": images / runs if runs else None,
            # Triton counts a batch's compute once for each request in it: the mean batch's compute time
            "batch_compute_ms": (after[2] - before[2]) / 1e6 / images if images else None,
            "queue_ms_per_image": (after[3] - before[3]) / 1e6 / images if images else None,
            "edge_cpu_percent": 100 * edge_cpu / took, "client_cpu_percent": 100 * client_cpu / took}


def _cpus(text: str) -> set[int]:
    """A taskset list ("0", "8-15", "0,2") as a set of CPUs."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _batches(channel, model: str) -> tuple[int, int, int, int]:
    """(images, runs of the part, ns computing, ns queued) Triton has counted for `model`."""
    stats = channel._client.get_inference_statistics(model)  # noqa: SLF001  (the bench reads Triton's own figures)
    entry = stats.model_stats[0]
    return (entry.inference_count, entry.execution_count, entry.inference_stats.compute_infer.ns,
            entry.inference_stats.queue.ns)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="classifier", choices=("classifier", "detector"))
    parser.add_argument("--cut", type=int, help="default: the automatic split's (classifier 7, detector 6)")
    parser.add_argument("--detector-size", type=int, default=512, metavar="PX")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--delays", default="0,2000,8000", help="queue delays (µs) to try with the batcher")
    parser.add_argument("--instances", default="1", help="numbers of model instances to try, e.g. 1,2")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--edge-runtime", choices=("onnxruntime", "torch"), default="onnxruntime",
                        help="what runs the part (torch: PyTorch, on the GPU where there is one)")
    parser.add_argument("--edge-cpus", default="1", help="the edge's CPUs (taskset list, default 1)")
    parser.add_argument("--client-cpus", default="0", help="the clients' CPUs (e.g. 0 or 8-15; default 0)")
    args = parser.parse_args()
    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.config import ModelKind, WireFormat
    from inference.models.detector import DetectorConfig
    from inference.models.parts import part_spec
    from inference.planning.plan import AUTO_CUTS

    kind = ModelKind(args.model)
    args.cut = AUTO_CUTS[kind] if args.cut is None else args.cut
    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=args.detector_size)))
    spec = part_spec(analyzer.model(kind), args.cut, WireFormat.FP32, analyzer.weights[kind])
    counts = [int(n) for n in args.instances.split(",") if n.strip()]
    configurations = [(batching, delay, instances) for instances in counts for batching, delay in
                      [("off", 0)] + [("on", int(d)) for d in args.delays.split(",") if d.strip()]]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped (a time limit): clean up all the same
    work = Path(tempfile.mkdtemp(prefix="mededge-shared-edge-"))
    os.sched_setaffinity(0, _cpus(args.client_cpus))
    figures: dict[str, list[dict]] = {}
    try:
        for index, (batching, delay, instances) in enumerate(configurations):
            name = ("no batching" if batching == "off" else f"dynamic batching, queue delay {delay} µs") + (
                f", {instances} instances" if instances != 1 else "")
            print(f"{name}: exporting {spec.name}, serving it on CPUs {args.edge_cpus}", file=sys.stderr, flush=True)
            repository = export(work / "repository", args, batching, delay, instances)
            server, address = serve(work / f"edge-{index}", repository, args.edge_cpus, None)
            try:
                figures[name] = []
                for clients in CLIENTS:
                    cell = load(address, spec, clients, args.seconds, server.pid)
                    figures[name].append(cell)
                    print(f"  {clients} client(s): {cell['requests_per_s']:.1f} req/s, median "
                          f"{cell['median_ms']:.0f} ms, p95 {cell['p95_ms']:.0f} ms, mean batch "
                          f"{cell['mean_batch'] or 0:.2f}, batch compute {cell['batch_compute_ms'] or 0:.1f} ms, queue "
                          f"{cell['queue_ms_per_image'] or 0:.1f} ms; CPU edge "
                          f"{cell['edge_cpu_percent']:.0f}%, clients {cell['client_cpu_percent']:.0f}%",
                          file=sys.stderr, flush=True)
            finally:
                server.terminate()
                server.wait(60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # the batcher against none, each with as many instances as the first asked
    first = [name for (_, _, instances), name in zip(configurations, figures, strict=True) if instances == counts[0]]
    off = {cell["clients"]: cell for cell in figures[first[0]]}
    best = max(first[1:], key=lambda name: figures[name][-1]["requests_per_s"])
    on = {cell["clients"]: cell for cell in figures[best]}
    report = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["bench/bench_shared_edge.py", *sys.argv[1:]]),
              "setting": (f"edge serve pinned to CPUs {args.edge_cpus}, one compute thread per instance"
                          + (", the part in PyTorch on the GPU where there is one" if args.edge_runtime == "torch"
                             else "") + f"; clients: threads on CPUs {args.client_cpus}, one gRPC channel each, "
                          "back to back; loopback"),
              "part": spec.name, "seconds": args.seconds, "instances": counts, "figures": figures,
              "best_batching": best,
              "throughput_ratio": {c: on[c]["requests_per_s"] / off[c]["requests_per_s"] for c in CLIENTS},
              "p95_ratio": {c: on[c]["p95_ms"] / off[c]["p95_ms"] for c in CLIENTS}}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
