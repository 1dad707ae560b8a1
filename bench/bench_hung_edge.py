"""An edge that never answers (issue 19's review): how long a pipelined series on a fixed split waits before its
first study falls back, and until its last result.

Set-up, built and removed here: a real `edge serve` on loopback serving the detector's full offload and the
classifier's cut 7 (FP32); a TCP relay in front of it (bench/relay.py). The workstation's client checks its parts
through the relay, then the relay holds every byte (the edge takes the connection and answered the checks, but
no inference comes back: a hung backend, a half-dead link). A series of copies of one real radiograph from
../shared/data/cxr is analysed as `infer --split edge` does on one edge lane (`Analyzer.analyze_many`, no heat
maps), with the request timeout `--timeout`: once with the classifier offloaded alone, once with both models.

`--code DIR` runs another checkout of the product (e.g. a `git worktree` of an older commit) with this script.

    .venv/bin/python bench/bench_hung_edge.py --timeout 3 --studies 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT.parent / "shared" / "data" / "cxr" / "raster" / "txv_nih_00027426_000_512px.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=3.0, help="the edge request timeout (s)")
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--detector-size", type=int, default=256)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout of the product to run")
    args = parser.parse_args()
    sys.path[:0] = [str(args.code.resolve()), str(ROOT)]

    from bench.relay import Relay
    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.config import WireFormat
    from inference.edge.client import EdgeClient, EdgeSettings
    from inference.edge.repository import PartRequest, write_repository
    from inference.edge.server import EdgeServer, free_ports
    from inference.models.detector import DetectorConfig
    from inference.planning.plan import ModelPlan, Plan
    from inference.reports.benchmark import machine_description
    from viewer.loader import load_radiograph

    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=args.detector_size), runtime="torch"))
    study = load_radiograph(str(STUDY))
    detector_all_here = ModelPlan(analyzer.detector.stage_count)
    plans = {"classifier cut 7 on the edge": Plan(detector_all_here, ModelPlan(7, WireFormat.FP32)),
             "both models on the edge": Plan(ModelPlan(0, WireFormat.FP32), ModelPlan(7, WireFormat.FP32))}
    print(f"# {machine_description()}; code {args.code.resolve()}; request timeout {args.timeout} s; "
          f"{args.studies} studies; detector {args.detector_size} px", flush=True)
    print("| plan | first result (s) | last result (s) | fell back |\n| --- | --- | --- | --- |", flush=True)
    with tempfile.TemporaryDirectory(prefix="mededge-hung-") as work:
        repository = Path(work) / "repository"
        write_repository(repository, [
            PartRequest(analyzer.detector, analyzer.detector_source, 0, WireFormat.FP32),
            PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7, WireFormat.FP32)], gpu=False)
        grpc, metrics = free_ports(2)
        server = EdgeServer(repository, Path(work) / "run", grpc_port=grpc, metrics_port=metrics)
        server.start()
        try:
            host, port = server.grpc_address.rsplit(":", 1)
            for name, plan in plans.items():
                with Relay((host, int(port))) as relay:
                    lane = analyzer.with_edge(EdgeClient(EdgeSettings(relay.address, timeout_s=args.timeout)))
                    for kind, model_plan in plan.items():  # the parts checked: the edge answered until now
                        if model_plan.cut < lane.stage_counts[kind]:
                            lane.edge.verify(lane.part(lane.model(kind), model_plan.cut, model_plan.wire))
                    relay.stall()
                    started = time.monotonic()
                    arrived, fell_back = [], 0
                    for result in lane.analyze_many([study] * args.studies, plan, with_heat_maps=False):
                        arrived.append(time.monotonic() - started)
                        fell_back += result.mode.value == "local-fallback"
                    print(f"| {name} | {arrived[0]:.1f} | {arrived[-1]:.1f} | {fell_back} of {len(arrived)} |",
                          flush=True)
                    relay.resume()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
