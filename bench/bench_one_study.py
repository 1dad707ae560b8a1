"""One study sooner on two edges (issue 22): its two models on two servers at once, against one server.

Set-up, built and removed here: two equal edges — `edge serve` pinned to CPU 1 (edge A) and to CPU 0 (edge B),
one intra-op thread each, loopback; the workstation (this process) pinned to CPU 0 beside edge B (with full
offload it only preprocesses and waits). Each round analyses one real radiograph from ../shared/data/cxr as a
single study (no heat maps), with the plan given (`--split edge`: both models whole on the edge; `auto`: the
documented auto cuts), once with edge A alone and once with the group A, B, in alternating order. Reported:
median and p95 of each study's total time, and where each model ran.

    .venv/bin/python bench/bench_one_study.py --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["OMP_NUM_THREADS"] = "1"  # one core each: torch must not plan for two

from bench.bench_spread import CXR, STUDIES, export, serve  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--split", choices=("edge", "auto"), default="edge",
                        help="edge: both models whole on the edge; auto: the documented auto cuts (no planning)")
    parser.add_argument("--detector-size", type=int, default=512, metavar="PX")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mededge-one-study-"))
    os.environ["MEDEDGE_DATA_DIR"] = str(work / "workstation-data")
    servers = []
    try:
        print("exporting, then serving edge A (CPU 1) and edge B (CPU 0)", file=sys.stderr, flush=True)
        repository = export(work, args.detector_size)
        servers.append(serve(work / "a", repository, 1, None))
        servers.append(serve(work / "b", repository, 0, None))
        os.sched_setaffinity(0, {0})
        return measure(args, [address for _, address in servers])
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(60)
        shutil.rmtree(work, ignore_errors=True)


def measure(args, addresses: list[str]) -> int:
    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.config import ModelKind, SplitMode, SplitPolicy
    from inference.edge.client import EdgeClient, EdgeGroup, EdgeSettings
    from inference.models.detector import DetectorConfig
    from inference.planning.plan import plan_for
    from viewer.loader import load_radiograph

    study = load_radiograph(str(CXR / STUDIES[0]))
    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=args.detector_size)))
    plan = plan_for(SplitPolicy(SplitMode.EDGE if args.split == "edge" else SplitMode.AUTO), analyzer.stage_counts)
    one = analyzer.with_edge(EdgeClient(EdgeSettings(addresses[0], timeout_s=60)))
    two = analyzer.with_edge(EdgeGroup([EdgeSettings(address, timeout_s=60) for address in addresses]))
    names = {addresses[0]: "edge A", addresses[1]: "edge B", "workstation": "workstation"}
    runs = {"one edge": one, "two edges": two}
    for lane in runs.values():  # warm-up: parts checked, first requests served, each part measured on both
        for _ in range(2):
            lane.analyze(study, plan, with_heat_maps=False, allow_fallback=False)
    totals: dict[str, list[float]] = {name: [] for name in runs}
    where: dict[str, Counter] = {name: Counter() for name in runs}
    for round_ in range(args.rounds):
        for name, lane in list(runs.items())[::1 if round_ % 2 == 0 else -1]:
            findings = lane.analyze(study, plan, with_heat_maps=False, allow_fallback=False)
            totals[name].append(findings.timing_ms["total"])
            where[name][" + ".join(names.get(s, s) for s in findings.ran_on)] += 1
            print(f"round {round_ + 1}: {name}: {findings.timing_ms['total']:.0f} ms on {findings.ran_on}",
                  file=sys.stderr, flush=True)

    def p95(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.95 * len(values)) - 1)]

    median = {name: statistics.median(values) for name, values in totals.items()}
    report = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["bench/bench_one_study.py", *sys.argv[1:]]),
              "setting": (f"edge A: CPU 1, edge B: CPU 0, one thread each; workstation: CPU 0 beside edge B; "
                          f"loopback; detector {args.detector_size} px; image {STUDIES[0]}"),
              "plan": {kind.value: f"cut {plan[kind].cut} {plan[kind].wire.value}" for kind in ModelKind},
              "rounds": args.rounds, "total_ms": totals, "median_ms": median,
              "p95_ms": {name: p95(values) for name, values in totals.items()},
              "where": {name: dict(c) for name, c in where.items()},
              "speed_up": median["one edge"] / median["two edges"]}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for lane in runs.values():
        if lane.edge is not None:
            lane.edge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
