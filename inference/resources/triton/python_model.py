"""Triton Python-backend model that serves one MedEdge edge part (`model.onnx` beside it) with onnxruntime or
OpenVINO, as the export named (`mededge_runtime`).

`python main.py edge serve` places this file next to each exported `model.onnx`: the same ONNX and the
same inputs/outputs as in the stock-Triton repository, run by the `tritonserver` of the nvidia-pytriton
wheel without Docker. onnxruntime uses CUDA when onnxruntime-gpu is installed, else the CPU; OpenVINO the CPU,
at FP32 (never BF16 behind the workstation's back).

A part loads only if its ONNX is the one exported: the bytes are read once, their SHA-256 compared with the
`mededge_onnx_sha256` the export wrote into the config, and the session made from those same bytes (nothing
can swap the file between the check and the load). The same for its tensors kept in the model's shared
`weights.bin` (see inference/edge/weights.py): the ranges the ONNX refers to are read once, checked against
`mededge_weights_sha256`, and put into the model before the session is made.
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

# The backend stub runs Python isolated (PYTHONPATH ignored): the launcher names the environment whose
# packages (numpy 1.x, onnxruntime) this model uses; they go first, before the interpreter's own.
for folder in reversed(os.environ.get("MEDEDGE_SITE_PACKAGES", "").split(os.pathsep)):
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        # `edge_compute_ms` is added by the launcher (not in the ONNX): this part's compute time, so the
        # workstation can tell edge time from transfer time for every request.
        self.outputs = [t["name"] for t in config["output"] if t["name"] != "edge_compute_ms"]
        self.report_time = any(t["name"] == "edge_compute_ms" for t in config["output"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        onnx = path.read_bytes()
        expected = config.get("parameters", {}).get("mededge_onnx_sha256", {}).get("string_value", "")
        actual = hashlib.sha256(onnx).hexdigest()
        if not expected:
            raise RuntimeError(
                f"edge part {config['name']} refused: its config records no ONNX digest (exported by an older "
                "MedEdge): re-export the repository with `python main.py edge export`")
        if actual != expected:
            raise RuntimeError(
                f"edge part {config['name']} refused: its model.onnx (sha256 {actual[:16]}) is not the one "
                f"exported (sha256 {expected[:16]}): re-export the repository")
        onnx = _with_shared_weights(config, onnx, path.parent)
        threads = int(os.environ.get("MEDEDGE_EDGE_THREADS", "0"))
        runtime = config.get("parameters", {}).get("mededge_runtime", {}).get("string_value", "onnxruntime")
        self.session = _OpenVino(onnx, threads) if runtime == "openvino" else _onnxruntime(onnx, threads)

    def execute(self, requests):
        # Requests the dynamic batcher grouped are run as one batch, then split again.
        feeds, sizes, responses = {}, [], [None] * len(requests)
        try:
            arrays = [[pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs]
                      for r in requests]
            sizes = [a[0].shape[0] for a in arrays]
            feeds = {name: np.concatenate([a[i] for a in arrays]) for i, name in enumerate(self.inputs)}
            started = time.perf_counter()
            results = self.session.run(self.outputs, feeds)
            compute_ms = (time.perf_counter() - started) * 1e3
        except Exception as exc:  # e.g. a tensor of another shape: every request gets the reason
            error = pb_utils.TritonError(f"edge part failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        start = 0
        for index, size in enumerate(sizes):
            tensors = [pb_utils.Tensor(name, result[start:start + size].copy())
                       for name, result in zip(self.outputs, results, strict=True)]
            if self.report_time:
                tensors.append(pb_utils.Tensor("edge_compute_ms", np.full((size, 1), compute_ms, np.float32)))
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += size
        return responses


def _onnxruntime(onnx: bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    available = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return onnxruntime.InferenceSession(onnx, options, providers=providers)


class _OpenVino:
    """The part compiled by OpenVINO from the checked bytes; `run` as onnxruntime's session has it."""

    def __init__(self, onnx: bytes, threads: int) -> None:
        # `import openvino` reports usage to Intel unless its telemetry package cannot be imported: an edge box in
        # a hospital sends nothing out (see inference/runtimes/openvino.py).
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
        import openvino

        settings: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(onnx), "CPU", settings)
        self.request = self.compiled.create_infer_request()  # Triton calls execute one batch at a time

    def run(self, outputs, feeds):
        self.request.infer(feeds)
        return [self.request.get_tensor(name).data.copy() for name in outputs]


def _with_shared_weights(config: dict, onnx: bytes, folder: Path) -> bytes:
    """The part with the tensors it keeps in `weights.bin` read in, once, and checked; unchanged without any."""
    import onnx as onnx_format

    model = onnx_format.load_from_string(onnx)
    external = [t for t in model.graph.initializer if t.data_location == onnx_format.TensorProto.EXTERNAL]
    if not external:
        return onnx
    expected = config.get("parameters", {}).get("mededge_weights_sha256", {}).get("string_value", "")
    used = hashlib.sha256()
    with (folder / "weights.bin").open("rb") as source:
        for tensor in external:
            fields = {entry.key: entry.value for entry in tensor.external_data}
            if fields.get("location") != "weights.bin":  # the export never points elsewhere
                raise RuntimeError(f"edge part {config['name']} refused: a tensor of its model.onnx is kept in "
                                   f"{fields.get('location')!r}, not in the shared weights.bin: re-export")
            source.seek(int(fields.get("offset", 0)))
            data = source.read(int(fields["length"]))
            used.update(data)
            tensor.raw_data = data
            del tensor.external_data[:]
            tensor.data_location = onnx_format.TensorProto.DEFAULT
    if used.hexdigest() != expected:
        raise RuntimeError(f"edge part {config['name']} refused: the weights it reads from weights.bin are not "
                           "the ones exported: re-export the repository")
    return model.SerializeToString()
