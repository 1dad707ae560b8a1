"""The viewer's Analyze all on an edge set-up: the studies one after another (how the viewer ran them until
the analysis session: its single-study path, each study planned for its own latency) against Analyze all now
(a worklist spread over the edge, which takes whole models, and this workstation, which analyses studies of
its own at a low CPU priority), side by side in rotated rounds of one run.

Set-up, built and removed here (needs root for the quota): `edge serve` on loopback pinned to CPU 1; the
viewer (this process, offscreen, a real MainWindow) pinned to CPU 0 and, with --workstation-quota, limited to
that share of it (cgroup v1 cpu quota, 10 ms period) — a workstation weaker than its edge.

    .venv/bin/python bench/bench_gui_batch.py --studies 12 --rounds 3 --workstation-quota 0.25
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
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["OMP_NUM_THREADS"] = "1"  # one core: torch must not plan for two

from bench.bench_links import CGROUP, CGROUP_PERIOD_US, make_cgroup, remove_cgroup  # noqa: E402
from inference.edge.server import free_ports  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402

CXR = ROOT.parent / "shared" / "data" / "cxr"
STUDIES = ["raster/txv_nih_00027426_000_512px.png", "dicom/DX_chest_966_fixed.dcm", "dicom/CR-MONO1-10-chest",
           "dicom/RG1_J2KI.dcm"]


def serve(work: Path, port: int, metrics: int) -> subprocess.Popen:
    """`edge serve` (its default parts: full offload and the auto cut, FP32 and INT8) on CPU 1."""
    log = open(work / "edge-serve.log", "w")
    env = dict(os.environ, MEDEDGE_EDGE_THREADS="1", MEDEDGE_DATA_DIR=str(work / "edge-data"))
    server = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(ROOT / "main.py"), "edge", "serve",
                               "--grpc-port", str(port), "--metrics-port", str(metrics), "--wire", "fp32,int8"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 1200
    while "stop with Ctrl-C" not in (work / "edge-serve.log").read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"edge serve did not start: see {work / 'edge-serve.log'}")
        time.sleep(1)
    return server


def wait(app, condition, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the viewer did not finish in time")
        app.processEvents()
        time.sleep(0.005)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workstation-quota", type=float, metavar="F")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    quota = args.workstation_quota
    if quota is not None and os.geteuid() != 0:
        print("--workstation-quota needs root (a cgroup)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="mededge-gui-batch-"))
    os.environ["MEDEDGE_DATA_DIR"] = str(work / "workstation-data")  # this workstation's own profiles
    port, metrics = free_ports(2)
    print(f"exporting and serving the edge parts on CPU 1 ({work})", file=sys.stderr, flush=True)
    server = serve(work, port, metrics)
    try:
        os.sched_setaffinity(0, {0})
        if quota is not None:
            make_cgroup(quota)
            (CGROUP / "cgroup.procs").write_text(str(os.getpid()))  # every thread of this process
        return measure(args, work, f"127.0.0.1:{port}", quota)
    finally:
        server.terminate()
        server.wait(60)
        if quota is not None:
            remove_cgroup()
        shutil.rmtree(work, ignore_errors=True)


def measure(args, work: Path, address: str, quota: float | None) -> int:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.settings import SplitMode

    folder = work / "studies"
    folder.mkdir()
    paths = []
    for index in range(args.studies):  # distinct files: the viewer keys studies by path
        source = CXR / STUDIES[index % len(STUDIES)]
        paths.append(str(shutil.copy(source, folder / f"{index:02d}-{source.name}")))
    app = QApplication.instance() or QApplication([])
    window = MainWindow(QSettings(str(work / "viewer.ini"), QSettings.Format.IniFormat))
    window.apply_settings(replace(window.settings, edge_addresses=(address,), split_mode=SplitMode.AUTO))
    window.open_paths(paths)
    wait(app, lambda: len(window.studies) == len(paths))
    order = [p for p in window.study_list.paths]
    results = {}
    window.analysis.finished.connect(lambda path, findings: results.__setitem__(path, findings))
    window.analysis.failed.connect(lambda path, reason: results.__setitem__(path, reason))

    def one_by_one() -> float:  # the viewer's Analyze all until the session: one study, then the next
        results.clear()
        started = time.perf_counter()
        for path in order:
            window.analysis.analyze(window.studies.get(path).radiograph)
            wait(app, lambda path=path: path in results and not window.analysis.busy)
        return time.perf_counter() - started

    def spread() -> float:  # Analyze all now
        results.clear()
        started = time.perf_counter()
        window.analyze_all()
        wait(app, lambda: len(results) == len(order) and not window.analysis.busy)
        return time.perf_counter() - started

    print("warm-up: models, the planner's measurements (cached for this workstation)", file=sys.stderr, flush=True)
    one_by_one()
    spread()
    times: dict[str, list[float]] = {"one by one": [], "spread": []}
    where: dict[str, Counter] = {"one by one": Counter(), "spread": Counter()}
    for round_ in range(args.rounds):
        for name, run in (("one by one", one_by_one), ("spread", spread))[::1 if round_ % 2 == 0 else -1]:
            times[name].append(run())
            modes = Counter(f"{r.mode.value} on {'+'.join(r.ran_on)}" if hasattr(r, "mode") else f"failed: {r}"
                            for r in results.values())
            where[name].update(modes)
            print(f"round {round_ + 1}: {name} {times[name][-1]:.1f} s ({dict(modes)})", file=sys.stderr, flush=True)
    one, piped = statistics.median(times["one by one"]), statistics.median(times["spread"])
    setting = ("viewer (offscreen MainWindow) on CPU 0" + (f" at {quota:.0%} of it (cgroup cpu quota, "
               f"{CGROUP_PERIOD_US // 1000} ms period)" if quota is not None else "") +
               ", `edge serve` on CPU 1, loopback")
    report = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["bench/bench_gui_batch.py", *sys.argv[1:]]), "setting": setting,
              "studies": len(order), "rounds": args.rounds, "seconds": times,
              "where": {name: dict(counts) for name, counts in where.items()},
              "one_by_one_s": one, "spread_s": piped, "speed_up": one / piped}
    print(f"| {len(order)} studies | one by one {one:.1f} s | spread {piped:.1f} s | {one / piped:.2f}× |")
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
