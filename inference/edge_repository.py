"""Triton model repositories of edge parts.

`write_repository` makes the repository for the stock NVIDIA Triton container (`<part>/1/model.onnx` +
`config.pbtxt`, platform onnxruntime_onnx). `python_backend_overlay` turns such a repository into one the
Triton shipped in the nvidia-pytriton wheel can serve (it has only the Python backend): the same
`model.onnx`, the same config but for `backend: "python"`, plus a small `model.py` that runs onnxruntime.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from inference.edge_parts import EdgePartSpec, WireFormat, export_part, part_spec
from inference.stages import StagedModel

MAX_BATCH = 8
QUEUE_DELAY_US = 2000
PYTHON_MODEL = Path(__file__).resolve().parent.parent / "packaging" / "triton" / "python_model.py"
_DTYPES = {"FP32": mc.TYPE_FP32, "FP16": mc.TYPE_FP16, "UINT8": mc.TYPE_UINT8}
COMPUTE_TIME_OUTPUT = "edge_compute_ms"


@dataclass(frozen=True)
class PartRequest:
    model: StagedModel
    weights: str   # "demo" or SHA-256: recorded in the config, checked by the client
    cut: int
    wire: WireFormat


def model_config(spec: EdgePartSpec, *, gpu: bool, backend: str = "onnxruntime") -> mc.ModelConfig:
    config = mc.ModelConfig(name=spec.name, max_batch_size=MAX_BATCH)
    if backend == "onnxruntime":
        config.platform = "onnxruntime_onnx"
    else:
        config.backend = backend
    for tensor in spec.inputs:
        entry = config.input.add()
        entry.name, entry.data_type = tensor.name, _DTYPES[tensor.dtype]
        entry.dims.extend(tensor.shape)
    for tensor in spec.outputs:
        entry = config.output.add()
        entry.name, entry.data_type = tensor.name, _DTYPES[tensor.dtype]
        entry.dims.extend(tensor.shape)
    config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    group = config.instance_group.add()
    group.count = 1
    group.kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    config.parameters["mededge_fingerprint"].string_value = spec.fingerprint
    for key, value in spec.identity:
        config.parameters[f"mededge_{key}"].string_value = value
    config.parameters["mededge_cut"].string_value = str(spec.cut)
    config.parameters["mededge_wire"].string_value = spec.wire.value
    return config


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_repository(root: Path, requests: list[PartRequest], *, gpu: bool = True,
                     progress=lambda message: None) -> list[EdgePartSpec]:
    """Export each requested edge part into `root` (existing parts with the same fingerprint are kept)."""
    root.mkdir(parents=True, exist_ok=True)
    specs = []
    for request in requests:
        spec = part_spec(request.model, request.cut, request.wire, request.weights)
        folder = root / spec.name
        onnx_path = folder / "1" / "model.onnx"
        config_path = folder / "config.pbtxt"
        current = (config_path.exists() and onnx_path.exists()
                   and read_config(config_path).parameters["mededge_fingerprint"].string_value == spec.fingerprint)
        if not current:
            progress(f"exporting {spec.name} ({spec.input_bytes / 2**20:.2f} MiB per image on the wire)")
            export_part(request.model, spec, onnx_path)
        config_path.write_text(text_format.MessageToString(model_config(spec, gpu=gpu)))
        specs.append(spec)
    write_probe(root)
    (root / "README.md").write_text(repository_readme(specs, gpu))
    return specs


PROBE_MODEL = "mededge_probe"


def write_probe(root: Path) -> None:
    """A tiny model for the link probe: takes any number of bytes, returns their sum (an integrity check).

    The workstation times it with 1 byte (round trip) and with ~1 MiB (upload bandwidth).
    """
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["payload"], ["wide"], to=TensorProto.INT64),
         helper.make_node("ReduceSum", ["wide", "axes"], ["checksum"], keepdims=1)],
        PROBE_MODEL,
        [helper.make_tensor_value_info("payload", TensorProto.UINT8, ["batch", "bytes"])],
        [helper.make_tensor_value_info("checksum", TensorProto.INT64, ["batch", 1])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime of older Triton containers too
    folder = root / PROBE_MODEL
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    config = mc.ModelConfig(name=PROBE_MODEL, platform="onnxruntime_onnx", max_batch_size=1)
    entry = config.input.add()
    entry.name, entry.data_type = "payload", mc.TYPE_UINT8
    entry.dims.append(-1)
    entry = config.output.add()
    entry.name, entry.data_type = "checksum", mc.TYPE_INT64
    entry.dims.append(1)
    group = config.instance_group.add()
    group.count, group.kind = 1, mc.ModelInstanceGroup.KIND_CPU
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))


def python_backend_overlay(repository: Path, target: Path) -> list[str]:
    """A repository for the wheel's Triton: links to the same ONNX files, configs for the Python backend."""
    if target.exists():
        shutil.rmtree(target)
    names = []
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = read_config(config_path)
        config.ClearField("platform")
        config.backend = "python"
        for group in config.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU  # the Python process picks CUDA itself if it can
        if config.name != PROBE_MODEL:
            timing = config.output.add()  # model.py reports its compute time per request (see python_model.py)
            timing.name, timing.data_type = COMPUTE_TIME_OUTPUT, mc.TYPE_FP32
            timing.dims.append(1)
        version = target / config.name / "1"
        version.mkdir(parents=True)
        (version / "model.onnx").symlink_to((config_path.parent / "1" / "model.onnx").resolve())
        shutil.copyfile(PYTHON_MODEL, version / "model.py")
        (target / config.name / "config.pbtxt").write_text(text_format.MessageToString(config))
        names.append(config.name)
    return names


def repository_readme(specs: list[EdgePartSpec], gpu: bool) -> str:
    rows = "\n".join(f"| `{s.name}` | {s.kind.value} | {s.cut} | {s.wire.value} | "
                     f"{', '.join(f'{t.name} {list(t.shape)}' for t in s.inputs)} | "
                     f"{s.input_bytes / 2**20:.2f} |" for s in specs)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    return f"""# MedEdge edge parts — Triton model repository

Written by `python main.py edge export`. Each folder is one edge part: stages [k, n) of a model as
ONNX (`1/model.onnx`, dynamic batch, fixed image size) and its `config.pbtxt` (platform
`onnxruntime_onnx`, dynamic batching, instance group {kind}). The workstation checks each part's
`mededge_fingerprint` (model, size, classes and weights) before using it: re-export after changing weights.

| part | model | cut | wire | inputs (per image) | MiB per image |
| --- | --- | --- | --- | --- | --- |
{rows}

`{PROBE_MODEL}` is a tiny model the workstation uses to measure round-trip time and bandwidth.

## Run it with the stock NVIDIA Triton container

On the edge box (NVIDIA driver + NVIDIA Container Toolkit installed), from this folder:

```sh
docker run --rm --gpus all --shm-size=1g \\
  -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
  -v "$PWD":/models nvcr.io/nvidia/tritonserver:24.08-py3 \\
  tritonserver --model-repository=/models --exit-timeout-secs=10
```

Ports: 8001 gRPC (what MedEdge Viewer uses: set `EDGE-HOST:8001` in Settings → Edge), 8000 HTTP
(health: `curl EDGE-HOST:8000/v2/health/ready`), 8002 Prometheus metrics. Open 8001 in the firewall to the
workstations only. Any Triton release with the ONNX Runtime backend works; pick the tag matching the
edge box's driver.

CPU-only edge box: drop `--gpus all` and export with `--cpu` (instance groups `KIND_CPU`), or edit
`kind: KIND_GPU` to `kind: KIND_CPU` in each `config.pbtxt`.

Without Docker: `python main.py edge serve --repository THIS_FOLDER` runs the Triton shipped in the
nvidia-pytriton wheel on the same files.
"""
