"""A worklist spread over devices of different capacity (issue 22): each device alone, then all together.

Set-up, built and removed here (needs root for the quotas): edge A, `edge serve` pinned to CPU 1 (a full
core); edge B, `edge serve` pinned to CPU 0 under a cgroup v1 cpu quota (--edge-b-quota of the core); the
workstation (this process) pinned to CPU 0 under its own quota (--workstation-quota), 10 ms periods; loopback.
The worklist: --studies copies of four real radiographs from ../shared/data/cxr, analysed as `infer` does
(no heat maps) through the analysis session with the automatic split: its plan for the edge lanes is chosen
for the throughput of all lanes together. Each device's solo throughput is that lane alone on the same plan;
the combined one is every lane at once. Rounds rotate the order.

    .venv/bin/python bench/bench_spread.py --studies 32 --rounds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["OMP_NUM_THREADS"] = "1"  # one core each: torch must not plan for two

from bench.bench_links import CGROUP_PERIOD_US  # noqa: E402
from inference.edge.server import free_ports  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402

CXR = ROOT.parent / "shared" / "data" / "cxr"
STUDIES = ["raster/txv_nih_00027426_000_512px.png", "dicom/DX_chest_966_fixed.dcm", "dicom/CR-MONO1-10-chest",
           "dicom/RG1_J2KI.dcm"]
CGROUPS = Path("/sys/fs/cgroup/cpu")


def make_cgroup(name: str, quota: float) -> Path:
    group = CGROUPS / name
    remove_cgroup(group)
    group.mkdir()
    (group / "cpu.cfs_period_us").write_text(str(CGROUP_PERIOD_US))
    (group / "cpu.cfs_quota_us").write_text(str(round(quota * CGROUP_PERIOD_US)))
    return group


def remove_cgroup(group: Path) -> None:
    if group.exists():
        for pid in (group / "cgroup.procs").read_text().split():  # any left: back to the root group
            try:
                (CGROUPS / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # it ended meanwhile
        group.rmdir()


def export(work: Path, size: int) -> Path:
    """The edge parts `edge serve` exports by default (full offload and the auto cut), FP32 and INT8, once."""
    repository = work / "repository"
    subprocess.run([sys.executable, str(ROOT / "main.py"), "edge", "export", "--out", str(repository), "--cpu",
                    "--wire", "fp32,int8", "--detector-size", str(size)], check=True, stdout=subprocess.DEVNULL)
    return repository


def serve(work: Path, repository: Path, cpu: int | str, group: Path | None, namespace: str | None = None,
          host: str = "127.0.0.1", options: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`edge serve` of `repository` pinned to `cpu` (or a taskset list such as "2-7"), in `group` when given (its
    children too), in network `namespace` listening on `host` when given, with more `options`; the server and its
    address."""
    work.mkdir(parents=True)
    port, metrics = free_ports(2)
    log = open(work / "edge-serve.log", "w")
    env = dict(os.environ, MEDEDGE_EDGE_THREADS="1", MEDEDGE_DATA_DIR=str(work / "edge-data"))
    command = ["taskset", "-c", str(cpu), sys.executable, str(ROOT / "main.py"), "edge", "serve", "--grpc-port",
               str(port), "--metrics-port", str(metrics), "--repository", str(repository), *options]
    if namespace is not None:  # plaintext on purpose: a link inside namespaces the benchmark made and removes
        command = ["ip", "netns", "exec", namespace, *command, "--host", host, "--insecure"]
    if group is not None:  # the shell joins the group, then becomes the server: every child starts inside
        command = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", *command]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 1800
    try:
        while "stop with Ctrl-C" not in (work / "edge-serve.log").read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"edge serve did not start: see {work / 'edge-serve.log'}")
            time.sleep(1)
    except BaseException:  # stopped while it starts (a time limit too): its process group goes with it
        os.killpg(server.pid, signal.SIGKILL)
        raise
    return server, f"{host}:{port}"


def planned_options(planner, edge, edges: int, shown: int = 9) -> list[str]:
    """The planner's best pairs of options for the worklist, as it predicted them."""
    from itertools import product

    from inference.planning.planner import worklist_rate, workstation_share_ms

    served = set(edge.status().models)
    models = planner.models()
    each = [planner.candidates(kind, model, served, gated=False) for kind, model in models.items()]
    here = planner.preprocess_ms + sum(planner.whole_local_ms(kind, model) for kind, model in models.items())
    slowness = planner.server_slowness() if edges == planner.servers else [1.0] * edges
    ranked = sorted(product(*each), key=lambda c: -worklist_rate(c, planner.preprocess_ms, here, slowness))
    best: dict[tuple[int, ...], tuple] = {}  # the best pair of each combination of cuts
    for pair in ranked:
        best.setdefault(tuple(o.cut for o in pair), pair)
    lines = [f"preprocess {planner.preprocess_ms:.0f} ms, a study here {here:.0f} ms, the edges' compute relative to "
             f"the first: {', '.join(f'{f:.2f}' for f in slowness)}"]

    def line(pair) -> str:
        return (" + ".join(f"{o.model.value} cut {o.cut} {o.wire.value} (here {o.local_ms:.0f} and its gRPC client "
                           f"{o.client_ms:.0f}, link {o.transfer_ms:.0f}, edge {o.edge_ms:.0f}, {o.edge_busy_ms:.0f} busy "
                           "ms)" for o in pair)
                + f": {worklist_rate(pair, planner.preprocess_ms, here, slowness):.3f} studies/s predicted")

    lines += [line(pair) for pair in list(best.values())[:shown]]
    chosen = tuple(planner.options[kind] for kind in models)  # the lightest here of those near the fastest
    return [*lines, f"chosen ({workstation_share_ms(chosen):.0f} ms of this workstation's CPU a study, with "
                    f"{planner.preprocess_ms:.0f} ms of preprocessing): {line(chosen)}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--edge-b-quota", type=float, default=0.5, metavar="F")
    parser.add_argument("--workstation-quota", type=float, default=0.5, metavar="F")
    parser.add_argument("--detector-size", type=int, default=512, metavar="PX")
    parser.add_argument("--plan-only", action="store_true", help="stop after the plan and its options")
    parser.add_argument("--split", choices=["auto", "edge"], default="auto",
                        help="the edge lanes' plan: the planner's for the worklist, or full offload of both models "
                             "(to compare runs on one plan: the planner's choice varies between runs)")
    parser.add_argument("--trace", action="store_true", help="print when each lane takes and delivers each study")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the quotas need root (cgroups)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mededge-spread-"))
    os.environ["MEDEDGE_DATA_DIR"] = str(work / "workstation-data")
    edge_b_group = make_cgroup("mededge-edge-b", args.edge_b_quota)
    workstation_group = make_cgroup("mededge-workstation", args.workstation_quota)
    servers = []
    try:
        print("exporting, then serving edge A (CPU 1) and edge B (CPU 0, quota)", file=sys.stderr, flush=True)
        repository = export(work, args.detector_size)
        servers.append(serve(work / "a", repository, 1, None))
        servers.append(serve(work / "b", repository, 0, edge_b_group))
        os.sched_setaffinity(0, {0})
        (workstation_group / "cgroup.procs").write_text(str(os.getpid()))
        return measure(args, [address for _, address in servers])
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(60)
        (CGROUPS / "cgroup.procs").write_text(str(os.getpid()))
        remove_cgroup(edge_b_group)
        remove_cgroup(workstation_group)
        shutil.rmtree(work, ignore_errors=True)


def measure(args, addresses: list[str]) -> int:
    from inference.analysis.analyzer import Analyzer, ModelChoice
    from inference.analysis.session import AnalysisSession
    from inference.analysis.spread import SpreadWorklist
    from inference.config import SplitMode, SplitPolicy
    from inference.edge.client import EdgeGroup, EdgeSettings
    from inference.models.detector import DetectorConfig
    from inference.models.findings import Findings
    from inference.planning.plan import plan_for
    from viewer.loader import load_radiograph

    sources = [load_radiograph(str(CXR / name)) for name in STUDIES]
    studies = [dataclasses.replace(sources[i % len(sources)], path=f"{i:02d}-{Path(STUDIES[i % 4]).name}")
               for i in range(args.studies)]
    edge = EdgeGroup([EdgeSettings(address, timeout_s=60) for address in addresses])
    analyzer = Analyzer(ModelChoice(detector=DetectorConfig(input_size=args.detector_size)), edge=edge)
    fixed = plan_for(SplitPolicy(SplitMode.AUTO), analyzer.stage_counts)
    session = AnalysisSession(analyzer, fixed, auto=True, with_heat_maps=False,
                              progress=lambda message: print(message, file=sys.stderr, flush=True))
    print("warm-up: the plan for the worklist (measured), models on every lane", file=sys.stderr, flush=True)
    list(session.analyze_series(studies[:6]))
    session.wait_for_plan()  # the planner measured in the background meanwhile: its plan is the lanes' now
    list(session.analyze_series(studies[:2]))
    lanes = session.lanes()
    options = planned_options(session.planner, edge, len(addresses))
    for line in options:
        print(line, file=sys.stderr, flush=True)
    if args.plan_only:
        return 0
    if args.split == "edge":  # every edge lane on full offload, its pace learned afresh on that plan
        for lane in lanes:
            if lane.analyzer.edge is not None:
                lane.use(plan_for(SplitPolicy(SplitMode.EDGE), analyzer.stage_counts))
        list(SpreadWorklist(lanes, studies[:6], with_heat_maps=False))
    names = {addresses[0]: "edge A", addresses[1]: "edge B", "workstation": "workstation"}
    plan = {kind.value: f"cut {p.cut} {p.wire.value}" for kind, p in lanes[0].plan.items()}

    def run(chosen) -> tuple[float, Counter]:
        started = time.perf_counter()
        taken: Counter = Counter()  # studies each lane took, a stolen one run twice counted twice
        last: dict[str, float] = {}  # when each lane delivered its last result

        def took(study, lane: str) -> None:
            taken[names.get(lane, lane)] += 1
            if args.trace:
                print(f"    {time.perf_counter() - started:6.1f} s {names.get(lane, lane)} takes {study.path}",
                      file=sys.stderr, flush=True)

        results = []
        for result in SpreadWorklist(chosen, studies, with_heat_maps=False, started=took):
            results.append(result)
            where = names.get(result.ran_on[-1], result.ran_on[-1])
            last[where] = time.perf_counter() - started
            if args.trace:
                print(f"    {last[where]:6.1f} s {where} delivers {result.path}", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
        if len(chosen) > 1:  # where the combined run lost time: studies run twice, lanes idle at the end
            print("  " + "; ".join(f"{name}: took {taken[name]}, last result at {last.get(name, 0):.1f} s"
                                   for name in sorted(taken)), file=sys.stderr, flush=True)
        assert len(results) == len(studies) and all(isinstance(r, Findings) for r in results), results
        return seconds, Counter(names.get(r.ran_on[-1], r.ran_on[-1]) for r in results)

    runs = [(names[lane.name], [lane]) for lane in lanes] + [("all", lanes)]
    seconds: dict[str, list[float]] = {name: [] for name, _ in runs}
    where: dict[str, Counter] = {}
    for round_ in range(args.rounds):
        for name, chosen in runs[::1 if round_ % 2 == 0 else -1]:
            took, counts = run(chosen)
            seconds[name].append(took)
            where[name] = counts
            print(f"round {round_ + 1}: {name}: {took:.1f} s, {len(studies) / took:.3f} studies/s "
                  f"({dict(counts)})", file=sys.stderr, flush=True)
    rate = {name: len(studies) / min(times) for name, times in seconds.items()}  # the best of the rounds
    solos = {name: r for name, r in rate.items() if name != "all"}
    report = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["bench/bench_spread.py", *sys.argv[1:]]),
              "setting": (f"edge A: CPU 1; edge B: CPU 0 at {args.edge_b_quota:.0%}; workstation: CPU 0 at "
                          f"{args.workstation_quota:.0%} (cgroup v1 cpu quotas, {CGROUP_PERIOD_US // 1000} ms period); "
                          f"loopback; detector {args.detector_size} px"),
              "studies": len(studies), "rounds": args.rounds, "edge_plan": plan, "planned": options, "seconds": seconds,
              "studies_per_s": rate, "where": {name: dict(c) for name, c in where.items()},
              "sum_of_solos": sum(solos.values()), "all_vs_sum": rate["all"] / sum(solos.values()),
              "all_vs_best": rate["all"] / max(solos.values())}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    edge.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
