#!/bin/bash
# The GPU figures of docs/benchmarks.md in one run, on a machine with a CUDA GPU and at least 16 cores:
#   1. the whole models on the GPU beside 2 CPU threads (bench_cuda_local.py: FP32, FP16, the gate, auto's pick);
#   2. the split over links with the edge's parts in PyTorch on the GPU and the workstation on 2 CPU threads
#      (bench_links.py --edge-runtime torch: CPUs 0-1 the workstation, 2-7 the edge; namespaces and tc where `ip`
#      and `tc` exist, else loopback);
#   3. a shared GPU edge with 1-8 clients, with and without Triton's dynamic batcher (bench_shared_edge.py).
# Each step has a time limit, so one that hangs leaves the others their time; the results and one log go into OUT.
#
#     bench/run_gpu.sh OUT [LINKS]        (LINKS: bench_links.py's --links, default 1,2)
#     SMOKE=1 bench/run_gpu.sh OUT         (a minute: the set-up, and a classifier part served on the GPU)
# Other cores: WORKSTATION_CPUS (0,1), EDGE_CPUS (2-7), CLIENT_CPUS (8-15); shorter: REPEATS (3), CELL_SECONDS (4).
set -u
out=$(realpath -m "${1:?usage: bench/run_gpu.sh OUT [LINKS]}")
links=${2:-1,2}
python=${PYTHON:-python3}
workstation=${WORKSTATION_CPUS:-0,1} edge=${EDGE_CPUS:-2-7} clients=${CLIENT_CPUS:-8-15}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
MEDEDGE_DATA_DIR=$(mktemp -d)
export MEDEDGE_DATA_DIR
failed=0

step() {  # step NAME SECONDS COMMAND...: the command's output into the log, its end shown
    local name=$1 limit=$2
    shift 2
    echo "=== $name: up to ${limit} s, from $(date -u +%T)"
    timeout -k 40 "$limit" "$@" >"$out/$name.log" 2>&1
    local status=$?
    echo "=== $name: exit $status at $(date -u +%T)"
    [ "$status" = 0 ] || failed=1
    tail -n 30 "$out/$name.log"
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv 2>&1
"$python" - <<'EOF' || exit 1
import torch, numpy, onnxruntime
print("python", __import__("sys").version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
import glob, sysconfig
from inference.edge.server import Installation
print("triton", Installation.find().tritonserver, "libpython for its stub:",
      glob.glob(f"{sysconfig.get_config_var('LIBDIR')}/libpython3*.so*") or "none in LIBDIR")
EOF

if [ -n "${SMOKE:-}" ]; then
    step smoke 120 "$python" bench/bench_shared_edge.py --model classifier --cut 7 --edge-runtime torch \
        --edge-cpus "$edge" --client-cpus "$clients" --seconds 1 --delays 2000
    exit $failed
fi
step cuda_local 70 "$python" bench/bench_cuda_local.py --repeats 30 --json "$out/cuda_local.json"
if command -v ip >/dev/null && command -v tc >/dev/null && ip netns add mededge-probe 2>/dev/null; then
    ip netns del mededge-probe
    link_args=(--links "$links")
else
    echo "no network namespaces here: the links on loopback, unshaped"
    link_args=(--links 0 --loopback)
fi
step links 360 "$python" bench/bench_links.py --quick --repeats "${REPEATS:-3}" --edge-runtime torch \
    --workstation-cpus "$workstation" --workstation-threads 2 --edge-cpus "$edge" "${link_args[@]}" \
    --out "$out/links" --work "$(mktemp -d)"
step shared_edge 140 "$python" bench/bench_shared_edge.py --model detector --cut 0 --edge-runtime torch \
    --edge-cpus "$edge" --client-cpus "$clients" --seconds "${CELL_SECONDS:-4}" --delays 2000 \
    --json "$out/shared_edge.json"
cat "$out"/cuda_local.log "$out"/links.log "$out"/shared_edge.log >"$out/all.log" \
    && rm -f "$out"/cuda_local.log "$out"/links.log "$out"/shared_edge.log
exit $failed
