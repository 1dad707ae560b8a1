"""How long `infer FOLDER --split auto` takes to its first result on a workstation weaker than its edge (issue 19),
against `--split edge` (no planning), with the planner's measurements cold (a new data folder), then warm (kept)
twice: a first start on a machine leaves some of what it measures to the next (the stages before a cut are built on
the chosen runtime when a study first runs them there).

Set-up, built and removed here (root): the edge (`edge serve`, its default parts at --detector-size, one compute
thread) pinned to CPU 1; each `infer` pinned to CPU 0 in a cgroup (v1 `cpu` controller) limited to --quota of
that core, 10 ms period; loopback. The folder holds --studies copies of a real radiograph. `infer` writes a JSON
line per study in the order given; the time to the first line, to the last and to its exit (a first start
finishes auto's choice after its last result) are taken from its start (model loading included, the same in
every run). --roots compares checkouts side by side (e.g. the code before the
planner moved to the background, from `git worktree add`), each with this .venv.

    .venv/bin/python bench/bench_first_result.py --roots .,/tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_links import CGROUP_PERIOD_US  # noqa: E402
from bench.bench_spread import CXR, make_cgroup, remove_cgroup, serve  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402

IMAGE = "raster/txv_nih_00027426_000_512px.png"


def infer(root: Path, folder: Path, address: str, split: str, size: int, data: Path, group: Path) -> dict:
    """One `infer` run: seconds to its first and last result line, and each study's mode and split."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MEDEDGE_DATA_DIR=str(data), PYTHONPATH=str(root))
    command = ["sh", "-c", f'echo $$ > {group / "cgroup.procs"} && exec "$@"', "sh", "taskset", "-c", "0",
               sys.executable, str(root / "main.py"), "infer", str(folder), "--edge", address, "--split", split,
               "--detector-size", str(size), "--timeout", "60"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               cwd=root)
    assert process.stdout is not None
    times, lines = [], []
    for line in process.stdout:
        times.append(time.perf_counter() - started)
        lines.append(json.loads(line))
    if process.wait() != 0 or not lines:
        raise RuntimeError(f"infer exited {process.returncode} in {root} ({split})")
    return {"first_s": times[0], "last_s": times[-1], "exit_s": time.perf_counter() - started,
            "modes": [r["mode"] for r in lines],
            "splits": [r["split"] for r in lines]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roots", default=".", help="checkouts to compare, comma-separated (default this one)")
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--quota", type=float, default=0.25, metavar="F")
    parser.add_argument("--detector-size", type=int, default=256, metavar="PX")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the quota needs root (cgroups)", file=sys.stderr)
        return 2
    roots = [Path(r).resolve() for r in args.roots.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mededge-first-"))
    group = make_cgroup("mededge-workstation", args.quota)
    server = None
    try:
        folder = work / "studies"
        folder.mkdir()
        for i in range(args.studies):
            shutil.copy(CXR / IMAGE, folder / f"{i:02d}-{Path(IMAGE).name}")
        repository = work / "repository"
        subprocess.run([sys.executable, str(ROOT / "main.py"), "edge", "export", "--out", str(repository), "--cpu",
                        "--wire", "fp32,int8", "--detector-size", str(args.detector_size)], check=True,
                       stdout=subprocess.DEVNULL)
        server, address = serve(work / "edge", repository, 1, None)
        runs = {}
        for root in roots:
            data = work / f"data-{roots.index(root)}"  # each checkout its own planner's measurements
            for label, split in (("auto, cold", "auto"), ("auto, warm", "auto"), ("auto, third", "auto"),
                                 ("edge", "edge")):
                name = f"{root.name or root} · {label}"
                runs[name] = infer(root, folder, address, split, args.detector_size, data, group)
                print(f"{name}: first {runs[name]['first_s']:.1f} s, last {runs[name]['last_s']:.1f} s, "
                      f"exit {runs[name]['exit_s']:.1f} s, "
                      f"{runs[name]['splits'][0]} … {runs[name]['splits'][-1]}", file=sys.stderr, flush=True)
        report = {"machine": machine_description(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "command": " ".join(["bench/bench_first_result.py", *sys.argv[1:]]),
                  "setting": (f"infer on CPU 0 at {args.quota:.0%} of it (cgroup cpu quota, {CGROUP_PERIOD_US // 1000}"
                              f" ms period); edge serve alone on CPU 1, one thread; loopback; {args.studies} copies "
                              f"of {IMAGE}; detector {args.detector_size} px"),
                  "runs": runs}
        print(json.dumps(report, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
        remove_cgroup(group)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
