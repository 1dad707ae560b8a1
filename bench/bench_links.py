"""Benchmark over emulated links: the edge in its own network namespace, the link shaped with tc.

Needs root (network namespaces, veth, tc). Builds, for the run only:

    workstation (this namespace, CPU 0) ── relay on 127.0.0.1 (adds the one-way delay each way)
        ── veth mededge-ws 10.203.0.1 ══ tbf rate ══ mededge-eg 10.203.0.2 (namespace mededge-edge)
        ── `main.py edge serve` pinned to CPU 1

`tbf` on both ends of the veth sets the rate (this kernel has no netem, so the delay comes from the
relay; round trip = 2 × the link's one-way delay). Each workstation and edge gets one core of this
2-core machine, so neither competes with the other. `--workstation-quota F` makes the workstation weaker
than the edge, as a hospital PC is beside an edge box: its process runs in a cgroup (v1 `cpu` controller)
limited to F of its core, with a 10 ms period so that the throttling is smooth; the ratio this gives is
measured, not assumed (whole-model local time / the edge's compute on the full-offload part). On a machine with
a GPU, `--edge-runtime torch` serves the parts with PyTorch on it, and `--workstation-cpus 0,1` with
`--workstation-threads 2` gives the workstation two CPU threads (`--edge-cpus` for the edge's). Where `ip` is
missing (a container), `--loopback` serves on 127.0.0.1 without a namespace: the links' delays still come from the
relay, their rates are not shaped (only link 0). For every
link, `main.py bench --edge` measures local only, every served cut × wire format and auto in one run.
Writes links.json, links.md and latency-vs-cut.png into --out, and removes the namespace, veth, cgroup
and server at the end.

    sudo .venv/bin/python bench/bench_links.py [--quick] [--repeats N] [--out DIR] [--work DIR] [--links 1,2,3]
                                               [--workstation-quota 0.25] [--edge-runtime openvino|torch]
                                               [--workstation-cpus 0,1 --workstation-threads 2 --edge-cpus 2-7]
                                               [--loopback]
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.relay import Relay  # noqa: E402
from inference.reports.benchmark import EDGE_PROCESS, QUICK_CUTS, markdown  # noqa: E402

NAMESPACE = "mededge-edge"
HOST_SIDE, EDGE_SIDE = "mededge-ws", "mededge-eg"
HOST_IP, EDGE_IP = "10.203.0.1", "10.203.0.2"
GRPC_PORT = 8001
# (label, Mbit/s or None for unshaped, one-way delay ms)
LINKS = (("veth, unshaped", None, 0.0), ("1 Gbit/s, 1 ms", 1000, 1.0), ("100 Mbit/s, 5 ms", 100, 5.0),
         ("20 Mbit/s, 20 ms", 20, 20.0))
LINK_CUTS = {"detector": (0, 4, 6, 8, 15, 22), "classifier": tuple(range(10))}
CGROUP = Path("/sys/fs/cgroup/cpu/mededge-workstation")
CGROUP_PERIOD_US = 10_000  # short: the quota throttles smoothly instead of in 100 ms stalls


def sh(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True)


def remove_network(namespace: str = NAMESPACE, host_side: str = HOST_SIDE) -> None:
    sh("ip", "netns", "del", namespace, check=False)
    sh("ip", "link", "del", host_side, check=False)


def make_network(namespace: str = NAMESPACE, host_side: str = HOST_SIDE, edge_side: str = EDGE_SIDE,
                 host_ip: str = HOST_IP, edge_ip: str = EDGE_IP) -> None:
    """`namespace` behind a veth pair: `host_side` (`host_ip`/30) here, `edge_side` (`edge_ip`) there."""
    remove_network(namespace, host_side)
    sh("ip", "netns", "add", namespace)
    sh("ip", "link", "add", host_side, "type", "veth", "peer", "name", edge_side)
    sh("ip", "link", "set", edge_side, "netns", namespace)
    sh("ip", "addr", "add", f"{host_ip}/30", "dev", host_side)
    sh("ip", "link", "set", host_side, "up")
    inside = ("ip", "netns", "exec", namespace)
    sh(*inside, "ip", "addr", "add", f"{edge_ip}/30", "dev", edge_side)
    sh(*inside, "ip", "link", "set", edge_side, "up")
    sh(*inside, "ip", "link", "set", "lo", "up")


def shape(mbit: int | None, namespace: str = NAMESPACE, host_side: str = HOST_SIDE, edge_side: str = EDGE_SIDE) -> None:
    """Rate-limit both directions with tbf (or remove the limit); the bucket holds 1 ms at that rate."""
    for prefix, device in (((), host_side), (("ip", "netns", "exec", namespace), edge_side)):
        sh(*prefix, "tc", "qdisc", "del", "dev", device, "root", check=False)
        if mbit is not None:
            burst = max(mbit * 1_000_000 // 8 // 1000, 16 * 1024)
            sh(*prefix, "tc", "qdisc", "add", "dev", device, "root", "tbf", "rate", f"{mbit}mbit",
               "burst", str(burst), "latency", "100ms")


def make_cgroup(quota: float) -> None:
    """The workstation's CPU quota: `quota` of one core (cgroup v1 cpu controller)."""
    remove_cgroup()
    CGROUP.mkdir()
    (CGROUP / "cpu.cfs_period_us").write_text(str(CGROUP_PERIOD_US))
    (CGROUP / "cpu.cfs_quota_us").write_text(str(round(quota * CGROUP_PERIOD_US)))


def remove_cgroup() -> None:
    if CGROUP.exists():
        for pid in (CGROUP / "cgroup.procs").read_text().split():  # any left: back to the root group
            (CGROUP.parent / "cgroup.procs").write_text(pid)
        CGROUP.rmdir()


def export(work: Path, quick: bool, python: str, runtime: str) -> Path:
    """The edge parts for `runtime`, exported once (kept across runs in --work)."""
    repository = work / ("repository" if runtime == "onnxruntime" else f"repository-{runtime}")
    size = ["--detector-size", "256"] if quick else []
    for name, cuts in (QUICK_CUTS if quick else LINK_CUTS).items():
        wires = "fp32,int8" if quick else "fp32,fp16,int8"
        subprocess.run([python, str(ROOT / "main.py"), "edge", "export", "--out", str(repository), "--cpu",
                        "--runtime", runtime,
                        "--models", name, "--cuts", ",".join(map(str, cuts)), "--wire", wires, *size],
                       check=True, stdout=subprocess.DEVNULL)
    return repository


def serve(repository: Path, work: Path, python: str, cpus: str, loopback: bool) -> subprocess.Popen:
    env = dict(os.environ, MEDEDGE_EDGE_THREADS="1", OMP_NUM_THREADS="1", MEDEDGE_DATA_DIR=str(work / "edge-data"))
    log = open(work / "edge-serve.log", "w")
    command = ["taskset", "-c", cpus, python, str(ROOT / "main.py"), "edge", "serve", "--repository",
               str(repository), "--grpc-port", str(GRPC_PORT)]
    if not loopback:  # plaintext on purpose: a link inside namespaces this script made and removes
        command = ["ip", "netns", "exec", NAMESPACE, *command, "--host", EDGE_IP, "--insecure"]
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"edge serve stopped: see {work / 'edge-serve.log'}")
            if "stop with Ctrl-C" in (work / "edge-serve.log").read_text():
                return server
            time.sleep(1)
        raise RuntimeError("edge serve did not start within 10 minutes")
    except BaseException:  # stopped while it starts (a time limit too): its process group goes with it
        os.killpg(server.pid, signal.SIGKILL)
        raise


def measure(label: str, relay: Relay, work: Path, quick: bool, repeats: int, python: str,
            quota: float | None, image: str, cpus: str, threads: int, edge: subprocess.Popen) -> dict:
    out = work / f"link-{len(list(work.glob('link-*.json')))}.json"
    size = ["--detector-size", "256"] if quick else []
    # its own data folder per quota: the stage profiles cached there are this (throttled) workstation's; the
    # edge's process, for its CPU (and its children's) in the series' bound
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MEDEDGE_DATA_DIR=str(work / f"workstation-data-{quota or 1}"),
               **{EDGE_PROCESS: str(edge.pid)})
    command = ["taskset", "-c", cpus, python, str(ROOT / "main.py"), "bench", "--edge", relay.address,
               "--link", label, "--repeats", str(repeats), "--json", str(out), "--timeout", "60", "--image", image,
               *size]
    if quota is not None:  # the shell joins the cgroup, then becomes the benchmark
        command = ["sh", "-c", f'echo $$ > {CGROUP / "cgroup.procs"} && exec "$@"', "sh", *command]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m["model"] for m in reports[0]["models"]]
    figure, axes = plt.subplots(len(models), len(reports), figsize=(4.2 * len(reports), 3.4 * len(models)),
                                squeeze=False)
    for column, report in enumerate(reports):
        for row, model in enumerate(report["models"]):
            axis = axes[row][column]
            rows = [r for r in model["rows"] if r["option"].startswith("cut ")]
            for wire in sorted({r["wire"] for r in rows}):
                mine = sorted((r for r in rows if r["wire"] == wire), key=lambda r: r["cut"])
                line, = axis.plot([r["cut"] for r in mine], [r["median_ms"] for r in mine], marker="o", label=wire)
                floor = [r for r in mine if r.get("predicted_ms")]  # local stages + bytes / bandwidth + RTT + edge:
                axis.plot([r["cut"] for r in floor],  # the prediction less the part's serving beyond the probe's
                          [r["predicted_ms"] - r.get("serving_ms", 0.0) for r in floor], linestyle=":",
                          color=line.get_color(), label=f"{wire} floor")
            axis.axhline(model["rows"][0]["median_ms"], color="grey", linestyle="--", label="local only")
            auto = model["rows"][-1]
            axis.plot([auto["cut"]], [auto["median_ms"]], marker="*", markersize=14, color="black", linestyle="",
                      label="auto")
            axis.set_title(f"{model['model']} · {report['link'].split(';')[0]}", fontsize=9)
            axis.set_xlabel("cut (stages before it run on the workstation)", fontsize=8)
            axis.set_ylabel("median ms", fontsize=8)
            axis.set_ylim(bottom=0)
            axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 px detector, three detector cuts, fp32/int8")
    parser.add_argument("--repeats", type=int, default=5, help="analyses per option after a warm-up (default 5)")
    parser.add_argument("--out", default="bench-links", help="folder for links.json, links.md, latency-vs-cut.png")
    parser.add_argument("--edge-runtime", choices=("onnxruntime", "openvino", "torch"), default="onnxruntime",
                        help="what runs the parts on the edge (default onnxruntime; torch: PyTorch, on a GPU if any)")
    parser.add_argument("--workstation-cpus", default="0", help="the workstation's CPUs (taskset list, default 0)")
    parser.add_argument("--workstation-threads", type=int, default=1, help="its compute threads (default 1)")
    parser.add_argument("--edge-cpus", default="1", help="the edge's CPUs (taskset list, default 1)")
    parser.add_argument("--loopback", action="store_true",
                        help="no namespace (where `ip` is missing): the edge on 127.0.0.1, links unshaped (only 0)")
    parser.add_argument("--work", help="folder for the exported repository (kept; default a temporary folder)")
    parser.add_argument("--links", default=",".join(str(i) for i in range(len(LINKS))),
                        help="which links, by number: " + ", ".join(f"{i} = {label}" for i, (label, _, _) in
                                                                   enumerate(LINKS)) + " (default all)")
    parser.add_argument("--image", default=str(ROOT.parent / "shared/data/cxr/raster/txv_nih_00027426_000_512px.png"),
                        help="the chest radiograph each run analyses (default: the real one the docs' figures used)")
    parser.add_argument("--workstation-quota", type=float, metavar="F",
                        help="the workstation limited to this fraction of its core (e.g. 0.25), the edge on a full one")
    args = parser.parse_args()
    if args.workstation_quota is not None and not 0.01 <= args.workstation_quota <= 1:
        parser.error("--workstation-quota: a fraction of one core, 0.01 to 1")
    try:
        links = [LINKS[int(i)] for i in args.links.split(",")]
    except (ValueError, IndexError):
        parser.error(f"--links: numbers from 0 to {len(LINKS) - 1}, comma-separated")
    if os.geteuid() != 0 and not (args.loopback and args.workstation_quota is None):
        print("bench_links.py needs root: it creates a network namespace, a veth pair and tc qdiscs "
              "(run it as root, e.g. sudo .venv/bin/python bench/bench_links.py)", file=sys.stderr)
        return 2
    if args.loopback and any(mbit is not None for _, mbit, _ in links):
        parser.error("--loopback shapes no link: --links 0 only")
    for tool in ("taskset",) if args.loopback else ("ip", "tc", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench_links.py needs `{tool}` (Debian: iproute2 / util-linux)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped (a time limit): clean up all the same
    python = sys.executable
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mededge-links-"))
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("link-*.json"):
        old.unlink()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    repository = export(work, args.quick, python, args.edge_runtime)
    print(f"edge parts in {repository}", file=sys.stderr, flush=True)
    server = None
    reports = []
    quota = args.workstation_quota
    edge = f"edge on CPUs {args.edge_cpus}" + (", its parts in PyTorch on the GPU where there is one"
                                                if args.edge_runtime == "torch" else "")
    threads = f"{args.workstation_threads} thread{'s' if args.workstation_threads > 1 else ''}"
    setting = (f"workstation at {quota:.0%} of CPU {args.workstation_cpus} (cgroup cpu quota, "
               f"{CGROUP_PERIOD_US // 1000} ms period), {threads}, {edge}" if quota is not None
               else f"workstation on CPUs {args.workstation_cpus}, {threads}; {edge}")
    if args.edge_runtime == "openvino":
        setting += ", the edge on openvino"
    if args.loopback:
        setting += "; loopback (no namespace), the delay from the relay"
    try:
        if not args.loopback:
            make_network()
        if quota is not None:
            make_cgroup(quota)
        server = serve(repository, work, python, args.edge_cpus, args.loopback)
        for label, mbit, delay_ms in links:
            label = "loopback, unshaped" if args.loopback and mbit is None and not delay_ms else label
            print(f"link: {label}", file=sys.stderr, flush=True)
            if not args.loopback:
                shape(mbit)
            with Relay(("127.0.0.1" if args.loopback else EDGE_IP, GRPC_PORT), delay_ms=delay_ms) as relay:
                reports.append(measure(f"{label}; {setting}", relay, work, args.quick, args.repeats, python, quota,
                                       args.image, args.workstation_cpus, args.workstation_threads, server))
            write(reports, out)  # after each link: a run stopped later keeps those measured
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        if not args.loopback:
            remove_network()
        remove_cgroup()
    plot(reports, out / "latency-vs-cut.png")
    print((out / "links.md").read_text())
    return 0


def write(reports: list[dict], out: Path) -> None:
    (out / "links.json").write_text(json.dumps(reports, indent=2))
    (out / "links.md").write_text("\n".join(f"### {r['link']}\n\n{markdown(r)}" for r in reports))


if __name__ == "__main__":
    sys.exit(main())
