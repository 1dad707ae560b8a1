"""One study sooner on two edges (issue 22), against one edge: (a) its two models on two servers at once;
(b) the detector's first stages split spatially into two bands, one per server, joined at the cut.

Set-up, built and removed here (root): two equal edges — `edge serve` pinned to CPU 1 (edge A) and to CPU 0
(edge B), one intra-op thread each; the workstation (this process) pinned to CPU 0 beside edge B (it mostly
waits). Links: loopback, or with `--mbit` each edge in a network namespace of its own behind a veth pair shaped
with `tc tbf` (both ends) and a relay adding `--delay-ms` each way (this kernel has no netem). Each round
analyses one real radiograph from ../shared/data/cxr as a single study (no heat maps), once per arrangement, the
order alternating. Reported: median and p95 of the study's total time (a) or of the detector's own time (b),
where each part ran, and for (b) the edge's compute on the whole detector, on the stages after the cut and on
one band — the compute share of the split stages and the halo's overhead that bound the gain.

    .venv/bin/python bench/bench_one_study.py --mode models --rounds 9
    .venv/bin/python bench/bench_one_study.py --mode bands --mbit 1000 --delay-ms 1 --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["OMP_NUM_THREADS"] = "1"  # one core each: torch must not plan for two

from bench.bench_links import make_network, remove_network, shape  # noqa: E402
from bench.bench_spread import CXR, STUDIES, serve  # noqa: E402
from bench.relay import Relay  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402

BAND_CUT = 6
EDGES = (("A", 1, "mededge-one-a", "10.205.1"), ("B", 0, "mededge-one-b", "10.205.2"))  # name, CPU, netns, /30


def _veth(namespace: str) -> tuple[str, str]:
    """The veth pair's ends: here, and in `namespace`."""
    return f"mo{namespace[-1]}-ws", f"mo{namespace[-1]}-edge"


def make_link(namespace: str, net: str, mbit: int) -> str:
    """A namespace behind a veth pair, `mbit` on both ends; the edge's address in it."""
    outside, inside = _veth(namespace)
    make_network(namespace, outside, inside, f"{net}.1", f"{net}.2")
    shape(mbit, namespace, outside, inside)
    return f"{net}.2"


def remove_link(namespace: str) -> None:
    remove_network(namespace, _veth(namespace)[0])


def export(work: Path, size: int, mode: str) -> Path:
    repository = work / "repository"
    parts = (["--models", "detector", "--cuts", f"0,{BAND_CUT}", "--bands", "2"] if mode == "bands"
             else ["--cuts", "0"])
    subprocess.run([sys.executable, str(ROOT / "main.py"), "edge", "export", "--out", str(repository), "--cpu",
                    "--wire", "fp32", "--detector-size", str(size), *parts], check=True, stdout=subprocess.DEVNULL)
    return repository


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("models", "bands"), default="models",
                        help="models: both models whole on the edge, one server or one each; bands: the detector "
                             f"whole on one edge, or its stages before cut {BAND_CUT} on two bands over two")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--detector-size", type=int, default=512, metavar="PX")
    parser.add_argument("--mbit", type=int, help="each edge behind its own link of this rate (default loopback)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay of each link (with --mbit)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.mbit and os.geteuid() != 0:
        print("--mbit needs root (network namespaces, veth, tc)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mededge-one-study-"))
    os.environ["MEDEDGE_DATA_DIR"] = str(work / "workstation-data")
    servers, relays = [], []
    try:
        print("exporting, then serving edge A (CPU 1) and edge B (CPU 0)", file=sys.stderr, flush=True)
        repository = export(work, args.detector_size, args.mode)
        addresses = []
        for name, cpu, namespace, net in EDGES:
            host = make_link(namespace, net, args.mbit) if args.mbit else "127.0.0.1"
            server, address = serve(work / name, repository, cpu, None, namespace if args.mbit else None, host)
            servers.append(server)
            if args.mbit:
                relays.append(Relay((host, int(address.rsplit(":", 1)[1])), args.delay_ms).start())
                address = relays[-1].address
            addresses.append(address)
        os.sched_setaffinity(0, {0})
        return measure(args, addresses)
    finally:
        take_down(servers, relays, bool(args.mbit), work)


def take_down(servers: list, relays: list, links: bool, work: Path) -> None:
    """Stop what a run set up: relays, edge servers, the namespaces' links (with `links`), the work folder."""
    for relay in relays:
        relay.stop()
    for server in servers:
        server.terminate()
        server.wait(60)
    if links:
        for _, _, namespace, _ in EDGES:
            remove_link(namespace)
    shutil.rmtree(work, ignore_errors=True)


def measure(args, addresses: list[str]) -> int:
    import torch

    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.config import ModelKind, WireFormat
    from inference.edge.client import EdgeClient, EdgeGroup, EdgeSettings
    from inference.models.detector import DetectorConfig
    from inference.models.parts import tensor_name
    from inference.models.stages import INPUT
    from inference.models.wire import encode
    from inference.planning.plan import ModelPlan, Plan
    from viewer.loader import load_radiograph

    study = load_radiograph(str(CXR / STUDIES[0]))
    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=args.detector_size)))
    detector, classifier = analyzer.detector, analyzer.classifier
    one = analyzer.with_edge(EdgeClient(EdgeSettings(addresses[0], timeout_s=60)))
    two = analyzer.with_edge(EdgeGroup([EdgeSettings(address, timeout_s=60) for address in addresses]))
    if args.mode == "models":
        both = Plan(ModelPlan(0), ModelPlan(0))
        runs = {"one edge": (one, both), "two edges, a model on each": (two, both)}
    else:  # the classifier here: the detector's own time is what is compared
        runs = {"one edge, full offload": (one, Plan(ModelPlan(0), ModelPlan(classifier.stage_count))),
                "two edges, two bands": (two, Plan(ModelPlan(BAND_CUT, bands=2), ModelPlan(classifier.stage_count)))}
    names = {address: f"edge {name}" for address, (name, *_) in zip(addresses, EDGES, strict=True)}
    names["workstation"] = "workstation"
    for lane, plan in runs.values():  # warm-up: parts checked, first requests served, each part on each server
        for _ in range(2):
            lane.analyze(study, plan, with_heat_maps=False, allow_fallback=False)
    times: dict[str, list[float]] = {name: [] for name in runs}
    where: dict[str, Counter] = {name: Counter() for name in runs}
    for round_ in range(args.rounds):
        for name, (lane, plan) in list(runs.items())[::1 if round_ % 2 == 0 else -1]:
            findings = lane.analyze(study, plan, with_heat_maps=False, allow_fallback=False)
            took = (findings.timing_ms["total"] if args.mode == "models"
                    else findings.models[ModelKind.DETECTOR].measured_ms)
            times[name].append(took)
            where[name][" + ".join(names.get(s, s) for s in findings.ran_on)] += 1
            print(f"round {round_ + 1}: {name}: {took:.0f} ms on {findings.ran_on}", file=sys.stderr, flush=True)

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.95 * len(values)) - 1)]

    median = {name: statistics.median(values) for name, values in times.items()}
    first, second = list(runs)
    report = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["bench/bench_one_study.py", *sys.argv[1:]]),
              "setting": ("edge A: CPU 1, edge B: CPU 0, one thread each; workstation: CPU 0 beside edge B; "
                          + (f"each edge in its own network namespace, veth + tc tbf {args.mbit} Mbit/s both ways, "
                             f"{args.delay_ms} ms each way by a relay" if args.mbit else "loopback")
                          + f"; detector {args.detector_size} px; image {STUDIES[0]}"),
              "measured": "the study's total time" if args.mode == "models" else "the detector's own time",
              "rounds": args.rounds, "ms": times, "median_ms": median,
              "p95_ms": {name: p95(values) for name, values in times.items()},
              "where": {name: dict(c) for name, c in where.items()}, "speed_up": median[first] / median[second]}
    if args.mode == "bands":  # the bound: the edge's compute on the whole, on the rest, on one band
        split, band = analyzer.band_part(detector, BAND_CUT, 2)
        client = one.edge
        assert isinstance(client, EdgeClient)
        with torch.inference_mode():
            image = analyzer.model_inputs(study)[ModelKind.DETECTOR]
            crossing = detector.run_stages({INPUT: image}, 0, BAND_CUT)

        def compute_ms(spec, tensors) -> float:
            names_out = tuple(t.name for t in spec.outputs)
            return statistics.median(client.infer(spec, tensors, names_out).edge_ms for _ in range(5))

        whole = compute_ms(analyzer.part(detector, 0, WireFormat.FP32), {"image": image.cpu().numpy()})
        rest = compute_ms(analyzer.part(detector, BAND_CUT, WireFormat.FP32),
                          encode(WireFormat.FP32, {tensor_name(i): t.cpu().numpy() for i, t in crossing.items()}))
        one_band = compute_ms(band, {"image": split.bands(image)[0].cpu().numpy()})
        report["edge_compute_ms"] = {"whole detector": whole, f"stages {BAND_CUT}..": rest, "one band": one_band}
        report["split_stages_share"] = (whole - rest) / whole
        report["band_rows"] = f"{split.rows} of {split.size} (halo {split.halo})"
        report["band_vs_split_stages"] = one_band / (whole - rest)
        report["compute_bound_speed_up"] = whole / (one_band + rest)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for lane, _ in runs.values():
        if lane.edge is not None:
            lane.edge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
