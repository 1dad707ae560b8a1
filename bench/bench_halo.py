"""One study's detector on two equal edges, each holding half the image's rows through the whole network and
swapping the rows each layer reaches across the band edge with the other edge after every such layer (EdgeDI's
halo exchange: inference/models/halo.py, issue 22), against the whole detector on one edge.

Set-up, built and removed here (root for links): two equal edges, `edge serve` pinned to CPU 1 (edge A) and to
CPU 0 (edge B), one intra-op thread each, both parts run by PyTorch (the edge runtime fastest for the whole
detector on this CPU); the workstation (this process) pinned to CPU 0 beside edge B (it mostly waits). Links:
loopback, or with `--mbit` each edge in a network namespace of its own behind a veth pair shaped with `tc tbf`
(both ends) and a relay adding `--delay-ms` each way — the workstation's link to each edge, and the edges' link
to each other (through both veth pairs and a relay, so shaped twice and delayed once each way). Each round runs
the detector on one real radiograph from ../shared/data/cxr once per arrangement, the order alternating;
reported: the median and p95 of the detector's time seen here (sending, compute, exchange, receiving), each
edge's own time, and the halo's bytes.

    .venv/bin/python bench/bench_halo.py --rounds 9
    .venv/bin/python bench/bench_halo.py --mbit 1000 --delay-ms 1 --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["OMP_NUM_THREADS"] = "1"  # one core each: torch must not plan for two

from bench.bench_one_study import EDGES, make_link, take_down  # noqa: E402
from bench.bench_spread import CXR, STUDIES, serve  # noqa: E402
from bench.relay import Relay  # noqa: E402
from inference.edge.server import free_ports  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402

BANDS = 2


def export(work: Path, size: int) -> Path:
    """The detector's halo part for two bands and its full offload, both for PyTorch on the edge."""
    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.config import EdgeRuntime, ModelKind, WireFormat
    from inference.edge.repository import PartRequest, write_repository
    from inference.models.detector import DetectorConfig

    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=size)))  # the demo weights the workstation has
    detector, weights = analyzer.detector, analyzer.weights[ModelKind.DETECTOR]
    repository = work / "repository"
    write_repository(repository, [PartRequest(detector, weights, 0, WireFormat.FP32, halo_bands=BANDS),
                                  PartRequest(detector, weights, 0, WireFormat.FP32)],
                     gpu=False, runtime=EdgeRuntime.TORCH, progress=lambda m: print(m, file=sys.stderr, flush=True))
    return repository


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--detector-size", type=int, default=512, metavar="PX")
    parser.add_argument("--mbit", type=int, help="each edge behind its own link of this rate (default loopback)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay of each link (with --mbit)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.mbit and os.geteuid() != 0:
        print("--mbit needs root (network namespaces, veth, tc)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mededge-halo-"))
    os.environ["MEDEDGE_DATA_DIR"] = str(work / "workstation-data")
    servers, relays = [], []
    try:
        print("exporting, then serving edge A (CPU 1) and edge B (CPU 0)", file=sys.stderr, flush=True)
        repository = export(work, args.detector_size)
        hosts = [make_link(namespace, net, args.mbit) if args.mbit else "127.0.0.1" for _, _, namespace, net in EDGES]
        listen = [f"{host}:{port}" for host, port in zip(hosts, free_ports(2), strict=True)]
        if args.mbit:  # each edge reaches the other through a relay on its own link's far end (delay both ways)
            for (_, _, _, net), (other_host, other_port) in zip(EDGES, [a.rsplit(":", 1) for a in listen[::-1]],
                                                               strict=True):
                relays.append(Relay((other_host, int(other_port)), args.delay_ms, host=f"{net}.1").start())
            reach = [relays[1].address, relays[0].address]  # how the other edge reaches A, and B
            peers = [relays[0].address, relays[1].address]  # whom A, and B, may connect to
        else:
            reach, peers = listen, listen[::-1]
        addresses = []
        for (name, cpu, namespace, _), host, own, advertised, peer in zip(EDGES, hosts, listen, reach, peers,
                                                                          strict=True):
            server, address = serve(work / name, repository, cpu, None, namespace if args.mbit else None, host,
                                    ("--halo-listen", own, "--halo-address", advertised, "--halo-peers", peer))
            servers.append(server)
            if args.mbit:
                relays.append(Relay((host, int(address.rsplit(":", 1)[1])), args.delay_ms).start())
                address = relays[-1].address
            addresses.append(address)
        os.sched_setaffinity(0, {0})
        return measure(args, addresses)
    finally:
        take_down(servers, relays, bool(args.mbit), work)


def measure(args, addresses: list[str]) -> int:
    import torch

    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.config import ModelKind, WireFormat
    from inference.edge.client import EdgeClient, EdgeSettings
    from inference.edge.halo import detect_on_bands
    from inference.models.detector import DetectorConfig
    from inference.models.halo import HaloBand, halo_part_spec
    from viewer.loader import load_radiograph

    torch.set_num_threads(1)
    study = load_radiograph(str(CXR / STUDIES[0]))
    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=args.detector_size)))
    detector = analyzer.detector
    image = analyzer.model_inputs(study)[ModelKind.DETECTOR].cpu()
    band = HaloBand(detector)
    halo = halo_part_spec(band, BANDS, analyzer.weights[ModelKind.DETECTOR])
    whole = analyzer.part(detector, 0, WireFormat.FP32)
    clients = [EdgeClient(EdgeSettings(address, timeout_s=120)) for address in addresses]
    with torch.inference_mode():
        expected = detector(image)

    def one_edge() -> tuple[float, float, torch.Tensor]:
        started = time.perf_counter()
        reply = clients[0].infer(whole, {"image": image.numpy()}, ("output",))
        return (time.perf_counter() - started) * 1e3, reply.edge_ms, torch.from_numpy(reply.outputs["output"].copy())

    def two_edges() -> tuple[float, float, torch.Tensor]:
        started = time.perf_counter()
        reply = detect_on_bands(clients, halo, band, image)
        return (time.perf_counter() - started) * 1e3, reply.edge_ms, reply.detections

    runs = {"the whole detector on edge A": one_edge, "two bands, one per edge, rows swapped after each layer":
            two_edges}
    for run in runs.values():  # warm-up: parts checked, first requests served
        for _ in range(2):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    edge_ms: dict[str, list[float]] = {name: [] for name in runs}
    largest_difference = 0.0
    for round_ in range(args.rounds):
        for name, run in list(runs.items())[::1 if round_ % 2 == 0 else -1]:
            took, on_edge, detections = run()
            times[name].append(took)
            edge_ms[name].append(on_edge)
            largest_difference = max(largest_difference, float((detections - expected).abs().max()))
            print(f"round {round_ + 1}: {name}: {took:.0f} ms (edge {on_edge:.0f} ms)", file=sys.stderr, flush=True)

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.95 * len(values)) - 1)]

    rows = band.split(BANDS).rows
    swapped = _bytes_swapped(band, image[:, :, :rows])
    median = {name: statistics.median(values) for name, values in times.items()}
    first, second = list(runs)
    report = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["bench/bench_halo.py", *sys.argv[1:]]),
              "setting": ("edge A: CPU 1, edge B: CPU 0, one thread each, PyTorch; workstation: CPU 0 beside edge B; "
                          + (f"each edge in its own network namespace, veth + tc tbf {args.mbit} Mbit/s both ways, "
                             f"{args.delay_ms} ms each way by a relay (workstation to each edge, and edge to edge)"
                             if args.mbit else "loopback")
                          + f"; detector {args.detector_size} px, demo weights; image {STUDIES[0]}"),
              "rounds": args.rounds, "ms": times, "median_ms": median,
              "p95_ms": {name: p95(values) for name, values in times.items()},
              "edge_median_ms": {name: statistics.median(values) for name, values in edge_ms.items()},
              "speed_up": median[first] / median[second],
              "exchanges": band.exchanges, "bytes_each_way_per_edge": swapped,
              "largest_difference_from_pytorch": largest_difference}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for client in clients:
        client.close()
    return 0


def _bytes_swapped(band, rows) -> int:
    """What one band sends its neighbour over a run: the rows of every exchange."""
    import torch

    from inference.models.halo import trading_with

    sent = 0

    class Counting:
        def swap(self, first, last):
            nonlocal sent
            sent += last.numel() * last.element_size()
            return torch.zeros_like(last), torch.zeros_like(first)

    with torch.inference_mode(), trading_with(Counting()):
        band(rows)
    return sent


if __name__ == "__main__":
    sys.exit(main())
