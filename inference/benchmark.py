"""`python main.py bench`: local only, full offload, cuts × wire formats and auto, side by side in one run
against a real Triton (`edge serve`'s server) on this machine.

Each option is measured per model (the other model runs locally): the model's own time in the
analysis (local stages + transfer + edge), median and p95 over repeats, and its ratio to local only.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.analyze import Analyzer, ModelChoice
from inference.detector import DetectorConfig
from inference.edge_client import EdgeClient, EdgeSettings
from inference.edge_parts import WireFormat
from inference.edge_repository import PartRequest, python_backend_overlay, write_repository
from inference.edge_server import EdgeServer, free_ports
from inference.plan import ModelPlan, Plan
from inference.planner import Planner
from viewer.radiograph import Radiograph

QUICK_CUTS = {"detector": (0, 6, 15), "classifier": (0, 7)}
FULL_CUTS = {"detector": (0, 1, 2, 3, 4, 5, 6, 8, 15, 22), "classifier": tuple(range(10))}


@dataclass(frozen=True)
class Row:
    model: str
    option: str       # "local", "cut K wire", "auto → …"
    cut: int
    wire: str
    bytes_sent: int
    median_ms: float
    p95_ms: float
    ratio_to_local: float = 1.0


def _measure(analyzer: Analyzer, radiograph: Radiograph, plan: Plan, model: str, repeats: int) -> tuple[float, float]:
    analyzer.analyze(radiograph, plan, with_heat_maps=False, allow_fallback=False)  # warm-up
    times = [analyzer.analyze(radiograph, plan, with_heat_maps=False, allow_fallback=False).model_ms[model]
             for _ in range(repeats)]
    return statistics.median(times), float(np.percentile(times, 95))


def run_benchmark(radiograph: Radiograph, quick: bool, work: Path | None = None, progress=print,
                  detector: DetectorConfig | None = None) -> dict:
    """`detector` overrides the detector configuration (the tests use a narrow one)."""
    detector = detector or (DetectorConfig(input_size=256) if quick else DetectorConfig())
    analyzer = Analyzer(ModelChoice(detector=detector))
    cuts = QUICK_CUTS if quick else FULL_CUTS
    wires = (WireFormat.FP32, WireFormat.INT8) if quick else tuple(WireFormat)
    repeats = 3 if quick else 10
    models = {"detector": analyzer.detector, "classifier": analyzer.classifier}
    sources = {"detector": analyzer.detector_source, "classifier": analyzer.classifier_weights.source}
    work = work or Path(tempfile.mkdtemp(prefix="mededge-bench-"))
    requests = [PartRequest(models[name], sources[name], cut, wire) for name in models for cut in cuts[name]
                for wire in wires]
    progress(f"exporting {len(requests)} edge parts into {work / 'repository'}")
    write_repository(work / "repository", requests, gpu=False, progress=progress)
    python_backend_overlay(work / "repository", work / "serve")
    grpc, http, metrics = free_ports(3)
    server = EdgeServer(work / "serve", work / "run", host="127.0.0.1", grpc_port=grpc, http_port=http,
                        metrics_port=metrics)
    server.start()
    rows: list[Row] = []
    try:
        analyzer.edge = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=120))
        local = Plan(ModelPlan(analyzer.detector.stage_count), ModelPlan(analyzer.classifier.stage_count))
        for name, model in models.items():
            progress(f"{name}: local only")
            median, p95 = _measure(analyzer, radiograph, local, name, repeats)
            rows.append(Row(name, "local", model.stage_count, "-", 0, median, p95))
            for cut in cuts[name]:
                for wire in wires:
                    progress(f"{name}: cut {cut} {wire.value}")
                    plan = _plan_for(local, name, ModelPlan(cut, wire))
                    median, p95 = _measure(analyzer, radiograph, plan, name, repeats)
                    rows.append(Row(name, f"cut {cut} {wire.value}", cut, wire.value,
                                    analyzer.part(model, cut, wire).input_bytes, median, p95))
        progress("auto: measuring the link and planning")
        planner = Planner(analyzer, analyzer.edge)
        auto = planner.plan()
        for name in models:
            chosen = getattr(auto, name)
            median, p95 = _measure(analyzer, radiograph, auto, name, repeats)
            wire = chosen.wire.value if chosen.cut < models[name].stage_count else "-"
            rows.append(Row(name, f"auto → cut {chosen.cut} {wire}", chosen.cut, wire,
                            analyzer.part(models[name], chosen.cut, chosen.wire).input_bytes
                            if chosen.cut < models[name].stage_count else 0, median, p95))
        link = planner.link
    finally:
        server.stop()
    results = []
    for name in models:
        mine = [r for r in rows if r.model == name]
        local_ms = mine[0].median_ms
        mine = [Row(**{**r.__dict__, "ratio_to_local": local_ms / r.median_ms}) for r in mine]
        fixed = [r for r in mine if not r.option.startswith("auto")]
        best = min(fixed, key=lambda r: r.median_ms)
        auto_row = mine[-1]
        offload = min((r for r in mine if r.cut == 0), key=lambda r: r.median_ms)
        results.append({
            "model": name, "rows": [r.__dict__ for r in mine], "best": best.option,
            "auto_within_5pct_of_best": auto_row.median_ms <= 1.05 * best.median_ms,
            "auto_vs_better_of_local_and_offload": min(local_ms, offload.median_ms) / auto_row.median_ms,
        })
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_description(),
            "link": "loopback (edge on the same 2 cores)", "quick": quick, "repeats": repeats,
            "image": radiograph.path, "probe": {"round_trip_ms": link.round_trip_ms, "mbit_s": link.mbit_s},
            "models": results}


def _plan_for(local: Plan, name: str, option: ModelPlan) -> Plan:
    return Plan(option, local.classifier) if name == "detector" else Plan(local.detector, option)


def machine_description() -> str:
    """CPU model, cores and Python version, for the benchmark tables."""
    import os

    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown(report: dict) -> str:
    lines = [f"{report['date']} · {report['machine']} · link: {report['link']} · probe: "
             f"{report['probe']['round_trip_ms']:.1f} ms round trip, {report['probe']['mbit_s']:.0f} Mbit/s · "
             f"{report['repeats']} repeats · image {Path(report['image']).name}", ""]
    for model in report["models"]:
        lines += [f"**{model['model']}** — best measured: {model['best']}; auto within 5% of best: "
                  f"{'yes' if model['auto_within_5pct_of_best'] else 'no'}; auto vs better of local/offload: "
                  f"{model['auto_vs_better_of_local_and_offload']:.2f}×", "",
                  "| option | MiB sent | median ms | p95 ms | speed-up vs local |", "|---|---|---|---|---|"]
        for row in model["rows"]:
            lines.append(f"| {row['option']} | {row['bytes_sent'] / 2**20:.2f} | {row['median_ms']:.0f} | "
                         f"{row['p95_ms']:.0f} | {row['ratio_to_local']:.2f}× |")
        lines.append("")
    return "\n".join(lines)


def save(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2))
