"""What serving every cut from one copy of a model's weights costs in latency: the same parts, with their tensors
in the model's shared `weights.bin` (as `edge export` writes them now) and with their weights inside each
`model.onnx` (as before), served by two real `edge serve` servers side by side, requests rotated each round.
Also the repositories' sizes on disk (each file once, however many hard links it has).

    .venv/bin/python bench/bench_shared_weights.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from google.protobuf import text_format  # noqa: E402

from inference.analysis.analyzer import Analyzer  # noqa: E402
from inference.edge.repository import DIGEST, PartRequest, read_config, write_checksums, write_repository  # noqa: E402
from inference.edge.server import EdgeServer, free_ports  # noqa: E402
from inference.edge.weights import INDEX_FILE, WEIGHTS_DIGEST, WEIGHTS_FILE, bytes_on_disk  # noqa: E402
from inference.models.weights import file_sha256  # noqa: E402
from inference.models.wire import WireFormat  # noqa: E402
from inference.reports.benchmark import machine_description, median_p95, rotated_ms  # noqa: E402

CUTS = {"detector": (0, 8, 24), "classifier": (0, 5, 7)}


def with_weights_inside(shared: Path, target: Path) -> None:
    """A copy of `shared` whose parts hold their own weights (the repository as exported before)."""
    shutil.copytree(shared, target)
    for config_path in target.glob("*/config.pbtxt"):
        version = config_path.parent / "1"
        if not (version / WEIGHTS_FILE).exists():
            continue
        model = onnx.load(str(version / "model.onnx"))  # reads the shared tensors in
        for tensor in model.graph.initializer:
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
        onnx.save(model, str(version / "model.onnx"))
        for name in (WEIGHTS_FILE, INDEX_FILE):
            (version / name).unlink()
        config = read_config(config_path)
        config.parameters[DIGEST].string_value = file_sha256(version / "model.onnx")
        del config.parameters[WEIGHTS_DIGEST]
        config_path.write_text(text_format.MessageToString(config))
    write_checksums(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    analyzer = Analyzer()
    models = {"detector": analyzer.detector, "classifier": analyzer.classifier}
    work = Path(tempfile.mkdtemp(prefix="mededge-shared-weights-"))
    requests = [PartRequest(models[name], analyzer.weights[name], cut, WireFormat.FP32)
                for name, cuts in CUTS.items() for cut in cuts]
    specs = write_repository(work / "shared", requests, gpu=False)
    with_weights_inside(work / "shared", work / "inside")
    servers = {}
    try:
        for kind in ("inside", "shared"):
            grpc, metrics = free_ports(2)
            servers[kind] = EdgeServer(work / kind, work / f"run-{kind}", grpc_port=grpc, metrics_port=metrics)
            servers[kind].start()
        clients = {kind: grpcclient.InferenceServerClient(server.grpc_address) for kind, server in servers.items()}
        print(f"{machine_description()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
              f"{args.repeats} rounds after 3 warm-up calls, servers rotated each round; both servers on this "
              f"machine's cores, idle but for the request timed\n")
        print(f"Repositories of these {len(specs)} parts: weights inside each part "
              f"{bytes_on_disk(work / 'inside') / 2**20:.0f} MiB, one shared copy per model "
              f"{bytes_on_disk(work / 'shared') / 2**20:.0f} MiB\n")
        print("| part | weights inside, median / p95 ms | shared weights.bin, median / p95 ms | shared / inside |")
        print("| --- | --- | --- | --- |")
        rng = np.random.default_rng(0)
        for spec in specs:
            inputs = []
            for tensor in spec.inputs:
                entry = grpcclient.InferInput(tensor.name, [1, *tensor.shape], "FP32")
                entry.set_data_from_numpy(rng.random((1, *tensor.shape), np.float32))
                inputs.append(entry)
            times = rotated_ms({kind: partial(client.infer, spec.name, inputs) for kind, client in clients.items()},
                               args.repeats, warm_up=3)
            (i_med, i_p95), (s_med, s_p95) = median_p95(times["inside"]), median_p95(times["shared"])
            print(f"| {spec.name} | {i_med:.1f} / {i_p95:.1f} | {s_med:.1f} / {s_p95:.1f} | {s_med / i_med:.3f} |",
                  flush=True)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
