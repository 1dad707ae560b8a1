"""`python main.py bench`: local only, full offload, cuts × wire formats and auto, side by side in one run
against a real Triton (`edge serve`'s server) on this machine.

Each option is measured per model (the other model runs as auto chose): the model's own time in the
analysis (local stages + transfer + edge), median and p95 over repeats, and its ratio to local only.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.analysis.analyzer import AHEAD, Analyzer, ModelChoice
from inference.config import ModelKind, WireFormat
from inference.edge.client import EdgeClient, EdgeSettings
from inference.edge.repository import PartRequest, write_repository
from inference.edge.server import EdgeServer, free_ports
from inference.machine import usable_cores
from inference.models.detector import DetectorConfig
from inference.models.findings import Findings
from inference.models.parts import kind_of, part_name
from inference.models.wire import ENCODINGS
from inference.planning.plan import ModelPlan, Plan
from inference.planning.planner import Planner, series_bound_ms
from viewer.radiograph import Radiograph

QUICK_CUTS = {ModelKind.DETECTOR: (0, 6, 15), ModelKind.CLASSIFIER: (0, 7)}
FULL_CUTS = {ModelKind.DETECTOR: (0, 1, 2, 3, 4, 5, 6, 8, 15, 22), ModelKind.CLASSIFIER: tuple(range(10))}
LOOPBACK = "loopback (edge on the same 2 cores)"
# Long enough that the pipeline's fill and drain (AHEAD studies at each end) weigh little: the throughput of
# a folder is that of the pipeline's steady state.
SERIES_STUDIES = 16


@dataclass(frozen=True)
class Row:
    model: str
    option: str       # "local", "cut K wire", "auto → …"
    cut: int
    wire: str
    bytes_sent: int
    median_ms: float
    p95_ms: float
    predicted_ms: float | None = None  # the planner's prediction (None: a wire format the fidelity gate refused)
    ratio_to_local: float = 1.0
    serving_ms: float = 0.0  # in the prediction: the part's serving cost beyond the probe's, as measured


def _interleaved(analyzer: Analyzer, radiograph: Radiograph, plans: list[Plan], model: ModelKind,
                 repeats: int) -> list[tuple[float, float]]:
    """Median and p95 of `model`'s time under each plan, measured in rounds: every plan once per round, the
    order rotated each round, so that the machine's drift (other load, clocks, caches) falls on all options
    alike instead of on whichever was measured in its worst minute."""
    for warm_up in range(2):  # connections, first-call costs
        for plan in plans:
            analyzer.analyze(radiograph, plan, with_heat_maps=False, allow_fallback=False)
        if warm_up or not analyzer.building_heads:
            break
        analyzer.heads_built()  # a calibrated INT8 runtime's stages before a cut, built in the background (then
        #                         warmed up too)
    times: list[list[float]] = [[] for _ in plans]
    for round_ in range(repeats):
        for index in (np.arange(len(plans)) + round_) % len(plans):
            findings = analyzer.analyze(radiograph, plans[index], with_heat_maps=False, allow_fallback=False)
            times[index].append(findings.models[model].measured_ms)
    return [(statistics.median(t), float(np.percentile(t, 95))) for t in times]


def bench_parts(analyzer: Analyzer, quick: bool) -> list[PartRequest]:
    """The edge parts a benchmark measures: a few cuts in fp32/int8 (quick), or many cuts in every format."""
    cuts = QUICK_CUTS if quick else FULL_CUTS
    wires = (WireFormat.FP32, WireFormat.INT8) if quick else ENCODINGS
    models = {kind: analyzer.model(kind) for kind in ModelKind}
    return [PartRequest(models[name], analyzer.weights[name], cut, wire) for name in models for cut in cuts[name]
            for wire in wires]


def served_options(analyzer: Analyzer, served: set[str]) -> dict[str, list[tuple[int, WireFormat]]]:
    """Per model, the (cut, wire) options whose edge part the server has, in cut order (an int8 part serves
    int8+deflate too)."""
    models = {kind: analyzer.model(kind) for kind in ModelKind}
    return {name: [(cut, wire) for cut in range(model.stage_count) for wire in WireFormat
                   if part_name(kind_of(model), cut, wire) in served] for name, model in models.items()}


def run_benchmark(radiograph: Radiograph, quick: bool, work: Path | None = None, progress=print,
                  detector: DetectorConfig | None = None, repeats: int | None = None) -> dict:
    """Over loopback: export the parts, serve them with a real Triton on this machine, measure.

    `detector` overrides the detector configuration (the tests use a narrow one).
    """
    detector = detector or (DetectorConfig(input_size=256) if quick else DetectorConfig())
    analyzer = Analyzer(ModelChoice(detector=detector))
    work = work or Path(tempfile.mkdtemp(prefix="mededge-bench-"))
    requests = bench_parts(analyzer, quick)
    progress(f"exporting {len(requests)} edge parts into {work / 'repository'}")
    write_repository(work / "repository", requests, gpu=False, progress=progress)
    grpc, metrics = free_ports(2)
    server = EdgeServer(work / "repository", work / "run", grpc_port=grpc, metrics_port=metrics)
    server.start()
    try:
        edge = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=120))
        return measure(analyzer, radiograph, edge, repeats=repeats or (3 if quick else 10), link=LOOPBACK, progress=progress)
    finally:
        server.stop()


def measure(analyzer: Analyzer, radiograph: Radiograph, edge: EdgeClient, repeats: int, link: str,
            progress=print) -> dict:
    """Local only, every part `edge` serves for these models, and auto — side by side, in one run."""
    analyzer.edge = edge
    served = set(edge.status().models)
    options = served_options(analyzer, served)
    models = {kind: analyzer.model(kind) for kind in ModelKind}
    progress("auto: measuring the link and planning")  # first: its choice is timed in the same rounds
    planner = Planner(analyzer, edge, with_heat_maps=False)  # the rounds run without heat maps
    started = time.perf_counter()  # what a user waits before the first result (with what the data folder kept)
    planner.learn_from(radiograph)
    auto = planner.plan()
    planning_s = time.perf_counter() - started
    chosen_options = dict(planner.options)
    series_plan = planner.plan(series=True)
    series_options = dict(planner.options)
    progress("measuring the edge's compute on every served part, for the predicted column")
    for name, model in models.items():
        for cut, wire in options[name]:
            planner.profile(name, model, cut, wire)
    rows: list[Row] = []
    for name, model in models.items():
        predicted = {(o.cut, o.wire): o.predicted_ms for o in planner.candidates(name, model, served)}
        serving = {(cut, wire): planner.measured.edge_serving_ms.get(analyzer.part(model, cut, wire).name, 0.0)
                   for cut, wire in options[name]}
        progress(f"{name}: local, {len(options[name])} served options and auto, {repeats} rounds")
        chosen = getattr(auto, name)
        offloaded = chosen.cut < model.stage_count
        labels = [("local", model.stage_count, "-", 0)]
        labels += [(f"cut {cut} {wire.value}", cut, wire.value, _bytes_sent(planner, name, model, cut, wire))
                   for cut, wire in options[name]]
        labels.append((f"auto → {_option_name(chosen, model.stage_count)}", chosen.cut,
                       chosen.wire.value if offloaded else "-",
                       _bytes_sent(planner, name, model, chosen.cut, chosen.wire) if offloaded else 0))
        # the other model as auto runs it in every plan: auto's row and the row of the option it chose are then
        # the same configuration, measured twice in the same rounds
        plans = [_plan_for(auto, name, ModelPlan(model.stage_count))]
        plans += [_plan_for(auto, name, ModelPlan(cut, wire)) for cut, wire in options[name]] + [auto]
        keys = [(model.stage_count, WireFormat.FP32)] + list(options[name]) + [(chosen.cut, chosen.wire)]
        for label, key, (median, p95) in zip(labels, keys, _interleaved(analyzer, radiograph, plans, name, repeats), strict=True):
            rows.append(Row(name, *label, median, p95, predicted.get(key), serving_ms=serving.get(key, 0.0)))
    series = measure_series(analyzer, radiograph, auto, series_plan, count=SERIES_STUDIES, progress=progress)
    series["predicted_bound_ms"] = series_bound_ms(tuple(series_options.values()), planner.preprocess_ms)
    results = []
    for name in models:
        mine = [r for r in rows if r.model == name]
        local_ms = mine[0].median_ms
        mine = [Row(**{**r.__dict__, "ratio_to_local": local_ms / r.median_ms}) for r in mine]
        # the compute ratio the set-up gave, measured: the whole model here / the edge's compute on all of it
        full = [planner.measured.edge_part_ms[p] for p in (part_name(kind_of(models[name]), 0, w) for w in ENCODINGS)
                if p in planner.measured.edge_part_ms]
        results.append({"model": name, "rows": [r.__dict__ for r in mine],
                        "predicted_ms": chosen_options[name].predicted_ms,
                        "edge_full_ms": full[0] if full else None,
                        "compute_ratio": local_ms / full[0] if full else None, **summary([r.__dict__ for r in mine])})
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_description(),
            "link": link, "repeats": repeats, "image": radiograph.path,
            "detector_input": analyzer.detector.config.input_size,
            "probe": {"round_trip_ms": planner.measured.round_trip_ms, "mbit_s": planner.measured.mbit_s},
            "planning_s": planning_s,
            "models": results, "series": series}


def _bytes_sent(planner: Planner, name: ModelKind, model, cut: int, wire: WireFormat) -> int:
    """Bytes per image on the link: the part's inputs, deflated by the ratio measured on the benchmark's image."""
    raw = planner.analyzer.part(model, cut, wire).input_bytes
    return round(raw / planner.deflate(name, model, cut).ratio) if wire.compression else raw


EDGE_PROCESS = "MEDEDGE_BENCH_EDGE_PID"  # set by bench/bench_links.py: its `edge serve`'s process


def process_tree_cpu_ms(pid: int) -> float:
    """The CPU time (user + system) of process `pid` and every live process under it, in ms (Triton runs in a
    session of its own under `edge serve`, so a process group would leave it out). The benchmarks' edge CPU."""
    parent, ticks = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after the command's name, which may hold spaces
        except OSError:  # (ended meanwhile)
            continue
        process = int(stat.parent.name)
        parent[process], ticks[process] = int(fields[1]), int(fields[11]) + int(fields[12])  # ppid; utime, stime
    tree, joining = {pid}, {pid}
    while joining:  # its children, theirs, …
        joining = {process for process, up in parent.items() if up in joining} - tree
        tree |= joining
    total = sum(ticks.get(process, 0) for process in tree)
    return total * 1e3 / os.sysconf("SC_CLK_TCK")


def measure_series(analyzer: Analyzer, radiograph: Radiograph, sequential_plan: Plan, series_plan: Plan, count: int,
                   rounds: int = 3, progress=print) -> dict:
    """A series of `count` studies: the best single-study plan run one study after another, against the series
    plan pipelined (`analyze_many`), in alternating rounds. The pipelined run is also held to its own bound:
    `count` × the busiest of workstation (pre-, post-processing and local stages), link and edge per study,
    from the phases of the series plan measured one study at a time, and of the workstation's CPU (all its
    threads) over the cores it may use — and, where the benchmark names the edge's process on this machine
    (EDGE_PROCESS), of the edge's CPU (Triton, the gateway, the backend's processes) over the edge's cores:
    in a pipeline its serving shares those cores with the compute."""
    progress(f"series of {count}: the best plan sequential vs the series plan pipelined")
    studies = [radiograph] * count
    list(analyzer.analyze_many(studies[:2], series_plan, with_heat_maps=False, allow_fallback=False))  # warm-up
    if analyzer.building_heads:  # as in _interleaved
        analyzer.heads_built()
        list(analyzer.analyze_many(studies[:2], series_plan, with_heat_maps=False, allow_fallback=False))
    # the bound: each resource's time per study under the series plan, measured one study at a time (in the
    # pipeline the phases stretch as they share the workstation's CPU, and would not bound it)
    edge = int(os.environ[EDGE_PROCESS]) if os.environ.get(EDGE_PROCESS) else None
    edge_cpu = process_tree_cpu_ms(edge) if edge is not None else 0.0
    cpu = time.process_time()  # this process's CPU, every thread: what a CPU quota on the workstation counts
    alone = [analyzer.analyze(radiograph, series_plan, with_heat_maps=False, allow_fallback=False) for _ in range(5)]
    cpu_alone_ms = (time.process_time() - cpu) * 1e3 / len(alone)
    edge_cpu_ms = (process_tree_cpu_ms(edge) - edge_cpu) / len(alone) if edge is not None else None
    phase = lambda *names: statistics.median(sum(r.timing_ms[n] for n in names) for r in alone)  # noqa: E731
    per_study = {"workstation": phase("preprocess", "local", "postprocess"), "link": phase("transfer"),
                 "edge": phase("edge"),
                 # the workstation's CPU over the cores it may use: its phases leave out the gRPC client, the
                 # encoding and decoding (counted in the link's), which need its CPU all the same
                 "workstation CPU": cpu_alone_ms / usable_cores()}
    if edge is not None and edge_cpu_ms is not None:
        per_study["edge CPU"] = edge_cpu_ms / len(os.sched_getaffinity(edge))  # over the cores it was given
    bound_s = count * max(per_study.values()) / 1e3
    sequential, pipelined, cpu_pipelined, fill = [], [], [], []
    steady: list[float | None] = []
    for _ in range(rounds):
        started = time.perf_counter()
        for study in studies:
            analyzer.analyze(study, sequential_plan, with_heat_maps=False, allow_fallback=False)
        sequential.append(time.perf_counter() - started)
        started, cpu = time.perf_counter(), time.process_time()
        results, arrived = [], []
        for result in analyzer.analyze_many(studies, series_plan, with_heat_maps=False, allow_fallback=False):
            results.append(result)
            arrived.append(time.perf_counter())
        pipelined.append(time.perf_counter() - started)
        cpu_pipelined.append((time.process_time() - cpu) * 1e3 / count)
        if len(results) != count or not all(isinstance(r, Findings) for r in results):
            raise ValueError(f"the pipelined series lost studies: {results}")
        steady.append(steady_pace_s(arrived))
        fill.append(arrived[0] - started)
    stages = analyzer.stage_counts
    name_of = lambda plan: {name: _option_name(getattr(plan, name), stages[name]) for name in stages}  # noqa: E731
    sequential_s, pipelined_s = statistics.median(sequential), statistics.median(pipelined)
    paces = [pace for pace in steady if pace is not None]
    pace_ms = statistics.median(paces) * 1e3 if paces else None
    return {"sequential_plan": name_of(sequential_plan), "plan": name_of(series_plan), "studies": count,
            "rounds": rounds, "sequential_s": sequential_s, "pipelined_s": pipelined_s,
            "speedup": sequential_s / pipelined_s, "per_study_ms": per_study, "bound_s": bound_s,
            "of_bound": bound_s / pipelined_s,
            **({"steady_ms_per_study": pace_ms, "steady_of_bound": max(per_study.values()) / pace_ms}
               if pace_ms is not None else {}),
            "first_result_s": statistics.median(fill),
            # this workstation's CPU a study, all threads (with the gRPC client, encoding, decoding — which the
            # phases above count as the link's), one at a time and pipelined
            "cpu_ms": {"alone": cpu_alone_ms, "pipelined": statistics.median(cpu_pipelined)},
            **({"edge_cpu_ms": edge_cpu_ms} if edge_cpu_ms is not None else {})}


def steady_pace_s(arrived: list[float]) -> float | None:
    """A pipelined series' time per study once full, from when each result arrived (in order); None for a series
    too short to fill. The series' time also holds filling the pipeline (a study's workstation and link time
    before the edge has work), which a longer series spreads. Counted from the first result over the results
    that each had a study begun after them: `analyze_many` begins AHEAD + 1 studies before the first result and
    none after result count − AHEAD − 1, so the whole span would flatter a plan bound by this workstation."""
    window = len(arrived) - AHEAD - 1
    return (arrived[window] - arrived[0]) / window if window > 0 else None


def prediction_error(rows: list[dict]) -> float | None:
    """Median |predicted / measured − 1| over the options the planner predicted."""
    errors = [abs(r["predicted_ms"] / r["median_ms"] - 1) for r in rows if r.get("predicted_ms")]
    return statistics.median(errors) if errors else None


def summary(rows: list[dict]) -> dict:
    """How auto did against the fixed options (rows: local first, auto last).

    Auto is judged twice: by the option it chose, as measured among the others (did the planner pick
    well?), and by its own run of its plan, timed in the same rounds (the same option measured twice shows
    the run-to-run noise).
    """
    fixed = [r for r in rows if not r["option"].startswith("auto")]
    auto = rows[-1]
    best = min(fixed, key=lambda r: r["median_ms"])
    chosen = next(r for r in fixed if r["option"] == auto["option"].removeprefix("auto → "))
    baseline = min(r["median_ms"] for r in fixed if r["option"] == "local" or r["cut"] == 0)  # local, offload
    return {"best": best["option"], "auto_choice": chosen["option"],
            "auto_choice_within_5pct_of_best": chosen["median_ms"] <= 1.05 * best["median_ms"],
            "auto_choice_vs_better_of_local_and_offload": baseline / chosen["median_ms"],
            "auto_run_within_5pct_of_best": auto["median_ms"] <= 1.05 * best["median_ms"],
            "auto_run_vs_better_of_local_and_offload": baseline / auto["median_ms"],
            "auto_run_vs_its_choice": chosen["median_ms"] / auto["median_ms"],
            "prediction_error_median": prediction_error(fixed),
            "serve_overhead_ms": serve_overhead_ms(fixed)}


def serve_overhead_ms(rows: list[dict]) -> float | None:
    """What the serve path adds beyond physics on full offload (cut 0 fp32): measured − the prediction by
    physics alone, bytes / probed bandwidth + the probe's round trip + the edge's compute on the part (the
    planner's prediction less the part's serving cost that it measured beyond the probe's)."""
    full = next((r for r in rows if r["option"] == "cut 0 fp32" and r.get("predicted_ms")), None)
    return full["median_ms"] - (full["predicted_ms"] - full.get("serving_ms", 0.0)) if full else None


def _option_name(plan: ModelPlan, stage_count: int) -> str:
    return "local" if plan.cut >= stage_count else f"cut {plan.cut} {plan.wire.value}"


def _plan_for(base: Plan, name: str, option: ModelPlan) -> Plan:
    """`base` with `name`'s plan replaced by `option`."""
    return Plan(option, base.classifier) if name == ModelKind.DETECTOR else Plan(base.detector, option)


def rotated_ms(calls: dict[str, Callable[[], object]], rounds: int, warm_up: int) -> dict[str, list[float]]:
    """Each call's times (ms) taken side by side: `warm_up` calls of each first, then `rounds` rounds of one call
    each, the order rotated every round (what runs first in a round does not always pay for it)."""
    for call in calls.values():
        for _ in range(warm_up):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for round_ in range(rounds):
        for name in order[round_ % len(order):] + order[:round_ % len(order)]:
            started = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - started) * 1e3)
    return times


def served_part_memory_mib(server: EdgeServer, part: str) -> tuple[float, float]:
    """(proportional set size, its anonymous part: not the libraries' pages) of the Python-backend process that serves
    `part` on `server`, in MiB; shared pages split between the processes that map them."""
    model = str(server.serving_path / part / "1" / "model.py").encode()
    for process in Path("/proc").iterdir():
        try:
            if model in (process / "cmdline").read_bytes().split(b"\0"):
                rollup = (process / "smaps_rollup").read_text().splitlines()[1:]
                fields = {key: int(value.split()[0]) / 1024 for key, value in (line.split(":", 1) for line in rollup)}
                return fields["Pss"], fields["Pss_Anon"]
        except OSError:  # a process that ended meanwhile, or not ours to read
            continue
    raise RuntimeError(f"no process serves {part}")


def median_p95(times: list[float]) -> tuple[float, float]:
    return statistics.median(times), float(np.percentile(times, 95))


def machine_description() -> str:
    """CPU model, cores, GPU (CUDA) if any and Python version, for the benchmark tables."""

    import torch

    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()} {model}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}"


def markdown(report: dict) -> str:
    lines = [f"{report['date']} · {report['machine']} · link: {report['link']} · probe: "
             f"{report['probe']['round_trip_ms']:.1f} ms round trip, {report['probe']['mbit_s']:.0f} Mbit/s · "
             f"{report['repeats']} repeats · image {Path(report['image']).name}"
             + (f" · auto's first plan took {report['planning_s']:.1f} s" if "planning_s" in report else ""), ""]
    yes = lambda flag: "yes" if flag else "**no**"  # noqa: E731
    for model in report["models"]:
        judged = summary(model["rows"])
        ratio = (f" (compute ratio workstation/edge {model['compute_ratio']:.1f}: local {model['rows'][0]['median_ms']:.0f} ms, "
                 f"edge {model['edge_full_ms']:.0f} ms on the whole model)" if model.get("compute_ratio") else "")
        lines += [f"**{model['model']}**{ratio} — best measured: {judged['best']}; auto chose {judged['auto_choice']}: "
                  f"within 5% of best {yes(judged['auto_choice_within_5pct_of_best'])}, "
                  f"{judged['auto_choice_vs_better_of_local_and_offload']:.2f}× the better of local and offload; "
                  f"auto's own run: within 5% {yes(judged['auto_run_within_5pct_of_best'])}, "
                  f"{judged['auto_run_vs_better_of_local_and_offload']:.2f}×, "
                  f"{judged['auto_run_vs_its_choice']:.2f}× the option it chose; "
                  f"prediction error (median) {_percent(judged['prediction_error_median'])}; serve path beyond "
                  f"physics on full offload {_ms(judged['serve_overhead_ms'])}", "",
                  "| option | MiB sent | predicted ms | of which serving beyond the probe | median ms | p95 ms | "
                  "speed-up vs local |",
                  "|---|---|---|---|---|---|---|"]
        for row in model["rows"]:
            predicted = f"{row['predicted_ms']:.0f}" if row.get("predicted_ms") else "–"
            serving = f"{row['serving_ms']:+.1f}" if row.get("serving_ms") else "–"
            lines.append(f"| {row['option']} | {row['bytes_sent'] / 2**20:.2f} | {predicted} | {serving} | "
                         f"{row['median_ms']:.0f} | {row['p95_ms']:.0f} | {row['ratio_to_local']:.2f}× |")
        lines.append("")
    if "series" in report:
        series = report["series"]
        named = lambda plan: ", ".join(f"{name} {option}" for name, option in plan.items())  # noqa: E731
        lines += [f"**series of {series['studies']} studies** (median of {series['rounds']} rounds): the best "
                  f"single-study plan ({named(series['sequential_plan'])}) one after another "
                  f"{series['sequential_s']:.2f} s; the series plan ({named(series['plan'])}) pipelined "
                  f"{series['pipelined_s']:.2f} s — **{series['speedup']:.2f}×** the best sequential throughput, "
                  f"{series['of_bound']:.0%} of its bound ({series['bound_s']:.2f} s from its busiest resource "
                  f"measured one study at a time, {series['predicted_bound_ms'] * series['studies'] / 1e3:.2f} s "
                  "predicted)"
                  + (f"; once full, a result every {series['steady_ms_per_study']:.0f} ms, "
                     f"{series['steady_of_bound']:.0%} of its bound (the first after "
                     f"{series['first_result_s']:.2f} s)" if "steady_ms_per_study" in series else "")
                  + (f"; this workstation's CPU a study, all its threads: {series['cpu_ms']['alone']:.0f} "
                                  f"ms one at a time, {series['cpu_ms']['pipelined']:.0f} ms pipelined"
                                  if "cpu_ms" in series else "")
                  + (f"; the edge's CPU a study (its processes, one at a time): {series['edge_cpu_ms']:.0f} ms"
                     if "edge_cpu_ms" in series else ""), ""]
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:+.0f} ms"


def save(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2))
