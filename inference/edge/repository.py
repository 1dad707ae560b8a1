"""Triton model repositories of edge parts.

`write_repository` makes the repository for the stock NVIDIA Triton container (`<part>/1/model.onnx` +
`config.pbtxt`, platform onnxruntime_onnx, or backend openvino reading the same model.onnx). `python_backend_overlay`
turns such a repository into one the Triton shipped in the nvidia-pytriton wheel can serve (it has only the
Python backend): the same `model.onnx`, the same config but for `backend: "python"` and the runtime the export
named (`mededge_runtime`), plus a small `model.py` that runs onnxruntime or OpenVINO.

Each config records its ONNX's SHA-256 (`mededge_onnx_sha256`, also in `SHA256SUMS`): the serving side loads a
part only if its file still has that digest. The parts of one model share one copy of its weights
(`weights.bin`, hard-linked into each part's folder; see edge_weights.py), checked the same way. Nothing in the
repository is writable by group or others.
"""

from __future__ import annotations

import shutil
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from inference.config import EdgeRuntime, ModelKind, WireFormat
from inference.edge.access import OPERATOR_APIS, operator_flags
from inference.edge.weights import (
    INDEX_FILE,
    WEIGHTS_DIGEST,
    WEIGHTS_FILE,
    SharedWeights,
    find_shared,
    remove_leftovers,
    share_weights,
    used_ranges_sha256,
    write_shared,
)
from inference.models.parts import (
    EdgePartSpec,
    as_detector,
    band_part_spec,
    export_part,
    export_torch_program,
    part_name,
    part_spec,
)
from inference.models.stages import StagedModel
from inference.models.weights import file_sha256

MAX_BATCH = 8
QUEUE_DELAY_US = 2000
PYTHON_MODEL = Path(__file__).resolve().parent.parent / "resources" / "triton" / "python_model.py"  # package data
_DTYPES = {"FP32": mc.TYPE_FP32, "FP16": mc.TYPE_FP16, "UINT8": mc.TYPE_UINT8}
COMPUTE_TIME_OUTPUT = "edge_compute_ms"
SERVED_THROUGH = "mededge_served_through"  # an FP16 or int8 part's FP32 part of the same cut (python_model.py)
DIGEST = "mededge_onnx_sha256"
RUNTIME = "mededge_runtime"
TORCH_PROGRAM_FILE = "model.pt2"  # an `EdgeRuntime.TORCH` part's PyTorch exported program, beside its ONNX
TORCH_PROGRAM_DIGEST = "mededge_pt2_sha256"
TORCH_VERSION = "mededge_torch_version"  # major.minor of the PyTorch that exported the programs
# The edge moves a program to its GPU with torch.export.passes.move_to_device_pass, public since PyTorch 2.5 (the
# edge runs the exporter's release: checked once, at export). Run here with 2.11 (GPU) and 2.13 (CPU).
TORCH_EXPORT_SINCE = (2, 5)
HALO_BANDS = "mededge_halo_bands"  # a halo part's bands (python_model.py runs it with its peer channel)
HALO_ADDRESS = "mededge_halo_address"  # where the other edges reach its peer channel (`edge serve` writes it)
CHECKSUMS = "SHA256SUMS"
DOCKER_SCRIPT = "serve-with-docker.sh"
PROBE_MAX_BYTES = 4 << 20  # the link probe sends 1 MiB (EdgeClient.probe); anything up to this is legitimate
REQUEST_OVERHEAD = 64 << 10  # names, shapes and framing around a request's tensor bytes
_DTYPE_BYTES = {mc.TYPE_FP32: 4, mc.TYPE_FP16: 2, mc.TYPE_UINT8: 1, mc.TYPE_INT64: 8}


@dataclass(frozen=True)
class Batching:
    """How a part is served to many workstations at once: Triton's dynamic batcher groups requests that arrive
    within `queue_delay_us` of each other (up to `MAX_BATCH`, `preferred` sizes first) into one run of the part,
    and `instances` copies of it run side by side. `dynamic=False`: each request runs on its own."""

    dynamic: bool = True
    queue_delay_us: int = QUEUE_DELAY_US
    preferred: tuple[int, ...] = ()
    instances: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.queue_delay_us <= 1_000_000:
            raise ValueError(f"queue delay must lie in 0..1000000 µs, got {self.queue_delay_us}")
        if any(not 1 <= size <= MAX_BATCH for size in self.preferred):
            raise ValueError(f"preferred batch sizes must lie in 1..{MAX_BATCH}, got {list(self.preferred)}")
        if not 1 <= self.instances <= 64:
            raise ValueError(f"instances must lie in 1..64, got {self.instances}")

    @classmethod
    def parse(cls, dynamic: str, queue_delay_us: int, preferred: str, instances: int) -> Batching:
        """From the command line's words: `dynamic` on/off, `preferred` like "4,8"; ValueError saying what is
        wrong."""
        if dynamic not in ("on", "off"):
            raise ValueError(f"--batching must be on or off, got {dynamic!r}")
        try:
            sizes = tuple(int(size) for size in preferred.split(",") if size.strip())
        except ValueError:
            raise ValueError(f"--preferred-batch expects sizes like 4,8, got {preferred!r}") from None
        return cls(dynamic == "on", queue_delay_us, sizes, instances)


@dataclass(frozen=True)
class PartRequest:
    model: StagedModel
    weights: str   # "demo" or SHA-256: recorded in the config, checked by the client
    cut: int
    wire: WireFormat
    band_rows: int = 0  # a band part (stages [0, cut) on a band of this many input rows, FP32); 0: stages [cut, n)
    halo_bands: int = 0  # a halo part: the whole detector on one of this many bands, rows swapped (`edge serve` only)

    def spec(self) -> EdgePartSpec:
        if self.halo_bands:
            from inference.models.halo import HaloBand, halo_part_spec

            return halo_part_spec(HaloBand(as_detector(self.model)), self.halo_bands, self.weights)
        if self.band_rows:
            return band_part_spec(self.model, self.cut, self.band_rows, self.weights)
        return part_spec(self.model, self.cut, self.wire, self.weights)


def model_config(spec: EdgePartSpec, onnx_sha256: str, weights_sha256: str, *, gpu: bool,
                 runtime: EdgeRuntime = EdgeRuntime.ONNXRUNTIME, batching: Batching = Batching(),
                 torch_program_sha256: str = "") -> mc.ModelConfig:
    """A part's config for the stock container; `edge serve` reads the runtime (and a PyTorch program's digest) from
    its `mededge_` parameters. The stock container runs a TORCH part's ONNX (its onnxruntime has CUDA)."""
    config = mc.ModelConfig(name=spec.name, max_batch_size=MAX_BATCH)
    if runtime is EdgeRuntime.OPENVINO:  # Triton's OpenVINO backend reads the ONNX (and its weights.bin) itself
        config.backend = "openvino"
        config.default_model_filename = "model.onnx"
    else:
        config.platform = "onnxruntime_onnx"
    for tensor in spec.inputs:
        entry = config.input.add()
        entry.name, entry.data_type = tensor.name, _DTYPES[tensor.dtype]
        entry.dims.extend(tensor.shape)
    for tensor in spec.outputs:
        entry = config.output.add()
        entry.name, entry.data_type = tensor.name, _DTYPES[tensor.dtype]
        entry.dims.extend(tensor.shape)
    if batching.dynamic:
        config.dynamic_batching.max_queue_delay_microseconds = batching.queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred)
    group = config.instance_group.add()
    group.count = batching.instances
    group.kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    config.parameters["mededge_fingerprint"].string_value = spec.fingerprint
    for key, value in spec.identity:
        config.parameters[f"mededge_{key}"].string_value = value
    config.parameters["mededge_cut"].string_value = str(spec.cut)
    if spec.band_rows:
        config.parameters["mededge_band_rows"].string_value = str(spec.band_rows)
    if spec.halo_bands:
        config.parameters[HALO_BANDS].string_value = str(spec.halo_bands)
    config.parameters["mededge_wire"].string_value = spec.wire.value
    config.parameters[DIGEST].string_value = onnx_sha256
    config.parameters[WEIGHTS_DIGEST].string_value = weights_sha256
    config.parameters[RUNTIME].string_value = runtime.value
    if torch_program_sha256:
        config.parameters[TORCH_PROGRAM_DIGEST].string_value = torch_program_sha256
        # a program loads only into the PyTorch release that exported it (the format is not promised across them)
        config.parameters[TORCH_VERSION].string_value = torch_release()
    return config


def read_config(path: Path) -> mc.ModelConfig:
    """A Triton model config; ValueError with the reason when the file is not one."""
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{path} is not a Triton model config: {exc}") from None


def write_repository(root: Path, requests: list[PartRequest], *, gpu: bool = True, batching: Batching = Batching(),
                     runtime: EdgeRuntime = EdgeRuntime.ONNXRUNTIME, progress=lambda message: None,
                     exactly: bool = False) -> list[EdgePartSpec]:
    """Export each requested edge part into `root` (existing parts with the same fingerprint are kept), each
    served with `batching` by `runtime` (OpenVINO on the CPU: Triton's OpenVINO backend runs nothing else; PyTorch
    from an exported program of each part beside its ONNX). With `exactly` (`edge export --out`) the repository
    holds the requested parts only (those of an earlier export into it are removed: their configs would keep the
    earlier options), and a folder that holds anything but an earlier export is refused."""
    gpu = gpu and runtime is not EdgeRuntime.OPENVINO
    if runtime is EdgeRuntime.TORCH and tuple(int(n) for n in torch_release().split(".")) < TORCH_EXPORT_SINCE:
        raise ValueError(f"the edge runtime torch needs PyTorch {'.'.join(map(str, TORCH_EXPORT_SINCE))} or later "
                         f"(this one is {torch_release()}); upgrade it, or export for onnxruntime")
    if exactly and (others := sorted(p.name for p in root.glob("*") if not _exported_here(p))):
        raise ValueError(f"{root} holds other files than an export ({', '.join(others[:3])}"
                         f"{', …' if len(others) > 3 else ''}): export into an empty folder, or over an earlier export")
    root.mkdir(parents=True, exist_ok=True)
    for path in remove_leftovers(root):
        progress(f"removed {path.relative_to(root)}, left by an interrupted export")
    if exactly:
        wanted = {request.spec().name for request in requests}
        for part in sorted(p for p in root.glob("*") if p.is_dir() and p.name not in wanted | {PROBE_MODEL}):
            shutil.rmtree(part)  # (its weights are hard links: the parts kept keep theirs)
            progress(f"removed {part.name}, of an earlier export, not asked for now")
    specs = []
    shared: dict[str, SharedWeights] = {}  # model fingerprint → its weights in this repository
    for request in requests:
        spec = request.spec()
        if spec.halo_bands:
            _write_halo_part(root / spec.name, request, spec, progress)
            specs.append(spec)
            continue
        folder = root / spec.name
        onnx_path = folder / "1" / "model.onnx"
        config_path = folder / "config.pbtxt"
        recorded = read_config(config_path).parameters if config_path.exists() else {}
        digest, weights_digest = _current_digests(onnx_path, recorded, spec.fingerprint)
        if not digest:
            progress(f"exporting {spec.name} ({spec.input_bytes / 2**20:.2f} MiB per image on the wire)")
            export_part(request.model, spec, onnx_path)
            if spec.fingerprint not in shared:
                shared[spec.fingerprint] = (find_shared(root, spec.fingerprint)
                                            or _new_shared(request, spec, onnx_path))
            weights_digest = share_weights(onnx_path, shared[spec.fingerprint])
            digest = file_sha256(onnx_path)
        torch_program_digest = _torch_program(request, spec, onnx_path.with_name(TORCH_PROGRAM_FILE), recorded,
                                              runtime is EdgeRuntime.TORCH, progress)
        config_path.write_text(text_format.MessageToString(model_config(
            spec, digest, weights_digest, gpu=gpu, runtime=runtime, batching=batching,
            torch_program_sha256=torch_program_digest)))
        specs.append(spec)
    write_probe(root)
    (root / "README.md").write_text(repository_readme(specs, gpu, runtime))
    (root / DOCKER_SCRIPT).write_text(docker_script(gpu))
    (root / DOCKER_SCRIPT).chmod(0o755)
    write_checksums(root, checked={spec.name for spec in specs})
    for path in (root, *root.rglob("*")):  # only the owner may change what the server will run
        path.chmod(path.stat().st_mode & ~0o022)
    return specs


def _write_halo_part(folder: Path, request: PartRequest, spec: EdgePartSpec, progress) -> None:
    """A halo part: its exported program only (it runs on `edge serve`'s PyTorch, its peer channel in model.py; the
    stock container cannot serve it), exported again unless the one there is this part's as recorded."""
    from inference.models.halo import export_halo_program

    program = folder / "1" / TORCH_PROGRAM_FILE
    config_path = folder / "config.pbtxt"
    recorded = read_config(config_path).parameters if config_path.exists() else {}
    digest = file_sha256(program) if program.exists() else ""
    if not (digest and all(key in recorded for key in (TORCH_PROGRAM_DIGEST, TORCH_VERSION, "mededge_fingerprint"))
            and recorded[TORCH_PROGRAM_DIGEST].string_value == digest
            and recorded["mededge_fingerprint"].string_value == spec.fingerprint
            and recorded[TORCH_VERSION].string_value == torch_release()):
        progress(f"exporting {spec.name} for PyTorch (a band of {spec.halo_bands}, rows swapped with its peers)")
        export_halo_program(as_detector(request.model), spec, program)
        digest = file_sha256(program)
    config = model_config(spec, "", "", gpu=False, runtime=EdgeRuntime.TORCH, batching=Batching(dynamic=False),
                          torch_program_sha256=digest)
    config.max_batch_size = 1  # one band of one image per request: a session's rows come in the order it runs
    config.model_transaction_policy.decoupled = True  # answered from the band's thread: bands of studies overlap
    config_path.write_text(text_format.MessageToString(config))


def _exported_here(path: Path) -> bool:
    """What an export writes at a repository's top: its files, the probe, and the parts' folders (named after their
    model: another Triton repository's models are not taken for an earlier export's, to be removed)."""
    return path.name in ("README.md", CHECKSUMS, DOCKER_SCRIPT, PROBE_MODEL) or (  # (a part, or one half-written)
        path.is_dir() and path.name.startswith(tuple(f"{kind.value}_" for kind in ModelKind)))


def _torch_program(request: PartRequest, spec: EdgePartSpec, path: Path, recorded, wanted: bool, progress) -> str:
    """The digest of the part's PyTorch exported program at `path`, exported (again) unless the one there is this
    part's as recorded; without `wanted` (another runtime), none, and any left from an earlier export removed."""
    if not wanted:
        path.unlink(missing_ok=True)
        return ""
    digest = file_sha256(path) if path.exists() else ""
    if not (digest and TORCH_PROGRAM_DIGEST in recorded and TORCH_VERSION in recorded
            and recorded["mededge_fingerprint"].string_value == spec.fingerprint
            and recorded[TORCH_VERSION].string_value == torch_release()
            and recorded[TORCH_PROGRAM_DIGEST].string_value == digest):
        progress(f"exporting {spec.name} for PyTorch")
        export_torch_program(request.model, spec, path, MAX_BATCH)
        digest = file_sha256(path)
    return digest


def torch_release() -> str:
    """This PyTorch's major.minor (python_model.py computes the same on the edge)."""
    import torch

    return ".".join(torch.__version__.split(".")[:2])


def _current_digests(onnx_path: Path, recorded, fingerprint: str) -> tuple[str, str]:
    """(ONNX digest, weights digest) of the part already at `onnx_path` if it is the one to serve: of this
    model, its files as exported and its weights shared; ("", "") when it must be exported (again)."""
    if not onnx_path.exists() or any(key not in recorded for key in ("mededge_fingerprint", DIGEST, WEIGHTS_DIGEST)):
        return "", ""
    digest = file_sha256(onnx_path)
    if recorded["mededge_fingerprint"].string_value != fingerprint or recorded[DIGEST].string_value != digest:
        return "", ""
    weights_digest = recorded[WEIGHTS_DIGEST].string_value
    return (digest, weights_digest) if _weights_match(onnx_path, weights_digest) else ("", "")


def _weights_match(onnx_path: Path, weights_digest: str) -> bool:
    """The ranges of `weights.bin` the part at `onnx_path` reads are the ones its export recorded."""
    try:
        return used_ranges_sha256(onnx_path.read_bytes(), onnx_path.parent / WEIGHTS_FILE) == weights_digest
    except (OSError, ValueError, KeyError):
        return False


def _new_shared(request: PartRequest, spec: EdgePartSpec, exported: Path) -> SharedWeights:
    """The model's weights written once beside `exported` (the part just exported for `spec`), from its
    whole-model part (cut 0), which holds every tensor a part of it can use: that part itself when it is
    one, else an unchecked export of it (parts take its tensors only where their bytes match)."""
    import tempfile

    if spec.cut == 0 and spec.wire is WireFormat.FP32 and not spec.band_rows:
        return write_shared(exported.parent, spec.fingerprint, exported)
    whole = part_spec(request.model, 0, WireFormat.FP32, request.weights)
    with tempfile.TemporaryDirectory() as scratch:  # not in the repository: a killed export leaves nothing there
        export_part(request.model, whole, Path(scratch) / "model.onnx", check=False)
        return write_shared(exported.parent, whole.fingerprint, Path(scratch) / "model.onnx")


def write_checksums(root: Path, checked: AbstractSet[str] = frozenset()) -> None:
    """`SHA256SUMS` (what `sha256sum --check` reads) of every file the server loads: each part's config, its
    ONNX (the digest recorded in the config at export) and its links to the model's weights (hashed once).
    A part whose weights no longer match its export is left unlisted (the container script then refuses it);
    `checked` names the parts whose weights the caller has just checked."""
    lines: list[str] = []
    by_file: dict[tuple[int, int], str] = {}  # (device, inode) → digest
    for path in sorted(root.glob("*/config.pbtxt")):
        parameters = read_config(path).parameters
        lines.append(f"{file_sha256(path)}  {path.parent.name}/config.pbtxt")
        if parameters[DIGEST].string_value:  # (a halo part has its exported program only)
            lines.append(f"{parameters[DIGEST].string_value}  {path.parent.name}/1/model.onnx")
        if TORCH_PROGRAM_DIGEST in parameters:
            lines.append(f"{parameters[TORCH_PROGRAM_DIGEST].string_value}  {path.parent.name}/1/{TORCH_PROGRAM_FILE}")
        if (parameters[WEIGHTS_DIGEST].string_value and path.parent.name not in checked
                and not _weights_match(path.parent / "1" / "model.onnx", parameters[WEIGHTS_DIGEST].string_value)):
            continue
        for name in (WEIGHTS_FILE, INDEX_FILE):
            shared = path.parent / "1" / name
            if shared.exists():
                key = (shared.stat().st_dev, shared.stat().st_ino)  # hard links: one file, hashed once
                by_file.setdefault(key, file_sha256(shared))
                lines.append(f"{by_file[key]}  {path.parent.name}/1/{name}")
    (root / CHECKSUMS).write_text("\n".join(lines) + "\n")


def largest_request_bytes(repository: Path) -> int:
    """The largest legitimate request to any model of `repository`: one image's tensors at its cut (the
    workstation sends one study per request), or the link probe's payload."""
    largest = PROBE_MAX_BYTES
    for path in repository.glob("*/config.pbtxt"):
        config = read_config(path)
        if config.name == PROBE_MODEL:
            continue
        for tensor in config.input:
            if tensor.data_type not in _DTYPE_BYTES or any(d < 1 for d in tensor.dims):
                raise ValueError(f"{config.name}: input {tensor.name} is {mc.DataType.Name(tensor.data_type)} "
                                 f"{list(tensor.dims)}, not a MedEdge edge part's (fixed FP32, FP16 or UINT8)")
        largest = max(largest, sum(int(np.prod(list(t.dims))) * _DTYPE_BYTES[t.data_type] for t in config.input))
    return largest + REQUEST_OVERHEAD


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
    config.parameters[DIGEST].string_value = file_sha256(folder / "1" / "model.onnx")
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
    target.mkdir(parents=True, mode=0o700)
    return [overlay_part(config_path, target) for config_path in sorted(repository.glob("*/config.pbtxt"))]


def overlay_part(config_path: Path, target: Path) -> str:
    """(Re)make one part's entry of the overlay in `target` from its exported `config_path`; its name."""
    config = read_config(config_path)
    exported = config.parameters[RUNTIME].string_value if RUNTIME in config.parameters else ""
    runtime = EdgeRuntime(exported or ("openvino" if config.backend == "openvino" else "onnxruntime"))  # as exported
    config.ClearField("platform")
    config.ClearField("default_model_filename")
    config.backend = "python"
    for key in [k for k in config.parameters if not k.startswith("mededge_")]:
        del config.parameters[key]  # only ours: Python-backend parameters such as EXECUTION_ENV_PATH run code
    config.parameters[RUNTIME].string_value = runtime.value
    for group in config.instance_group:
        group.kind = mc.ModelInstanceGroup.KIND_CPU  # the Python process picks CUDA itself if it can
    config.parameters.pop(SERVED_THROUGH, None)  # decided here, from the repository as it is now
    through = fp32_sibling(config_path)
    if through:
        config.parameters[SERVED_THROUGH].string_value = through
        if config.HasField("dynamic_batching"):  # the FP32 part's batcher waits for more requests: not twice
            config.dynamic_batching.max_queue_delay_microseconds = 0
    if config.name != PROBE_MODEL:
        timing = config.output.add()  # model.py reports its compute time per request (see python_model.py)
        timing.name, timing.data_type = COMPUTE_TIME_OUTPUT, mc.TYPE_FP32
        timing.dims.append(1)
    folder = target / config.name
    if folder.exists():  # (made again by the operator's load: where its peers reach a halo part stays)
        before = read_config(folder / "config.pbtxt").parameters if (folder / "config.pbtxt").exists() else {}
        if HALO_ADDRESS in before and HALO_BANDS in config.parameters:
            config.parameters[HALO_ADDRESS].string_value = before[HALO_ADDRESS].string_value
        shutil.rmtree(folder)
    version = folder / "1"
    version.mkdir(parents=True)
    for name in ("model.onnx", WEIGHTS_FILE, TORCH_PROGRAM_FILE):  # the exported files (the model checks them)
        if (config_path.parent / "1" / name).exists():
            (version / name).symlink_to((config_path.parent / "1" / name).resolve())
    shutil.copyfile(PYTHON_MODEL, version / "model.py")
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return config.name


def fp32_sibling(config_path: Path) -> str:
    """The FP32 part of the same cut, model and runtime beside the FP16 or int8 part exported at `config_path`, which
    `edge serve` runs the stages through (model.py decodes the wire format and calls it within Triton), so that the
    weights are held once for every wire format of a cut; "" for any other part, or where there is none."""
    config = read_config(config_path)
    parameters = config.parameters
    wires = {WireFormat.FP16.value, WireFormat.INT8.value}
    if ("mededge_band_rows" in parameters or "mededge_cut" not in parameters or "mededge_wire" not in parameters
            or parameters["mededge_wire"].string_value not in wires):
        return ""  # (the probe, a band part, a part of another MedEdge: each served on its own)
    wire, cut = WireFormat(parameters["mededge_wire"].string_value), int(parameters["mededge_cut"].string_value)
    kind = next((kind for kind in ModelKind if part_name(kind, cut, wire) == config.name), None)
    if kind is None:
        return ""
    sibling = part_name(kind, cut, WireFormat.FP32)
    sibling_config = config_path.parent.parent / sibling / "config.pbtxt"
    if not sibling_config.is_file():
        return ""
    theirs = read_config(sibling_config).parameters
    same = all(key in theirs and theirs[key].string_value == parameters[key].string_value
               for key in ("mededge_fingerprint", RUNTIME))
    return sibling if same else ""


def served_through(config_path: Path) -> str:
    """The part a served part (its config in the overlay at `config_path`) runs its stages in; "" for none."""
    if not config_path.is_file():
        return ""
    parameters = read_config(config_path).parameters
    return parameters[SERVED_THROUGH].string_value if SERVED_THROUGH in parameters else ""


TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.08-py3"


def docker_script(gpu: bool) -> str:
    """The stock-container set-up, secured as `edge serve` is (see the repository's README)."""
    flags = " \\\n    ".join(f'"{flag}"' for flag in operator_flags("$credential"))
    return f"""#!/bin/sh
# Serve this repository with the stock NVIDIA Triton container, secured like `python main.py edge serve`:
#   - gRPC (what the workstations use) on MEDEDGE_GRPC_ADDRESS (default every interface) over TLS, with the
#     certificate and key in MEDEDGE_TLS_DIR (default /etc/mededge/tls: server.pem, server.key; with
#     client-ca.pem there, mutual TLS). Plaintext gRPC beyond loopback only with MEDEDGE_INSECURE=1.
#   - HTTP (8000) and metrics (8002) published on this machine's loopback only.
#   - No model can be loaded, unloaded or changed while it runs (--model-control-mode=none; restart the container
#     after a re-export), and Triton refuses every {", ".join(OPERATOR_APIS)}
#     call without a credential made here at each start (this script keeps no copy; docker holds the container's
#     arguments while it runs — with model control off, the credential opens nothing that loads code).
#   - The repository is mounted read-only, must hold no links and nothing group or others may write, and its model
#     folders exactly the files SHA256SUMS lists, each with its digest.
# Ports: MEDEDGE_GRPC_PORT (8001), MEDEDGE_HTTP_PORT (8000), MEDEDGE_METRICS_PORT (8002). Image: MEDEDGE_TRITON_IMAGE.
set -eu
cd "$(dirname "$0")"
fail() {{ echo "{DOCKER_SCRIPT}: $*" >&2; exit 1; }}
sha256sum --check --quiet {CHECKSUMS} || fail "a part is not the one exported (above): re-export"
[ "$(sed 's/^[0-9a-f]*  //' {CHECKSUMS} | sort)" = "$(find . -mindepth 2 ! -type d | sed 's|^\\./||' | sort)" ] \\
    || fail "the model folders hold files {CHECKSUMS} does not list (or lack some): re-export"
unsafe=$(find . \\( -type l -o -perm -g+w -o -perm -o+w \\) -print | head -n 1)
[ -z "$unsafe" ] || fail "$unsafe is a link or can be changed by other users: chmod -R go-w $(pwd), no links"
address=${{MEDEDGE_GRPC_ADDRESS:-0.0.0.0}}
tls_dir=${{MEDEDGE_TLS_DIR:-/etc/mededge/tls}}
set --
if [ -f "$tls_dir/server.pem" ] && [ -f "$tls_dir/server.key" ]; then
    set -- -v "$tls_dir:/tls:ro"
    tls="--grpc-use-ssl=true --grpc-server-cert=/tls/server.pem --grpc-server-key=/tls/server.key"
    [ -f "$tls_dir/client-ca.pem" ] && tls="$tls --grpc-use-ssl-mutual=true --grpc-root-cert=/tls/client-ca.pem"
else
    tls=""
    case "$address" in
        127.*|::1|localhost) ;;
        *) [ "${{MEDEDGE_INSECURE:-}}" = 1 ] || fail "no $tls_dir/server.pem and server.key:" \\
               "refusing plaintext gRPC on $address (put them there, or MEDEDGE_INSECURE=1)"
           echo "{DOCKER_SCRIPT}: warning: insecure: gRPC on $address is plaintext," \\
               "readable and writable by anyone on that network" >&2 ;;
    esac
fi
published=$address
case "$address" in *:*) published="[$address]";; esac  # an IPv6 address, as docker's -p takes it
credential=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')
exec docker run --rm {"--gpus all " if gpu else ""}--shm-size=1g \\
    -p "$published:${{MEDEDGE_GRPC_PORT:-8001}}:8001" \\
    -p "127.0.0.1:${{MEDEDGE_HTTP_PORT:-8000}}:8000" -p "127.0.0.1:${{MEDEDGE_METRICS_PORT:-8002}}:8002" \\
    -v "$(pwd):/models:ro" "$@" "${{MEDEDGE_TRITON_IMAGE:-{TRITON_IMAGE}}}" \\
    tritonserver --model-repository=/models --model-control-mode=none --strict-readiness=true \\
    --exit-timeout-secs=10 $tls \\
    {flags}
"""


def repository_readme(specs: list[EdgePartSpec], gpu: bool, runtime: EdgeRuntime = EdgeRuntime.ONNXRUNTIME) -> str:
    rows = "\n".join(f"| `{s.name}` | {s.kind.value} | {s.cut} | {s.wire.value} | "
                     f"{', '.join(f'{t.name} {list(t.shape)}' for t in s.inputs)} | "
                     f"{s.input_bytes / 2**20:.2f} |" for s in specs)
    kind = "KIND_GPU" if gpu else "KIND_CPU"
    serving = ("backend `openvino` reading the same `model.onnx`" if runtime is EdgeRuntime.OPENVINO
               else "platform `onnxruntime_onnx`")
    torch_note = ("\n\nExported for PyTorch (`--runtime torch`): `1/model.pt2` beside each `model.onnx` is the same "
                  f"part as a PyTorch exported program (its digest `{TORCH_PROGRAM_DIGEST}`), which `edge serve` "
                  "runs on the edge's GPU; the stock container runs the ONNX (on the GPU unless exported `--cpu`)."
                  if runtime is EdgeRuntime.TORCH else "")
    backend = "OpenVINO" if runtime is EdgeRuntime.OPENVINO else "ONNX Runtime"
    return f"""# MedEdge edge parts — Triton model repository

Written by `python main.py edge export`. Each folder is one edge part: stages [k, n) of a model as
ONNX (`1/model.onnx`, dynamic batch, fixed image size) and its `config.pbtxt` ({serving}, dynamic
batching, instance group {kind}). The workstation checks each part's
`mededge_fingerprint` (model, size, classes and weights) before using it: re-export after changing weights.
The server side loads a part only if its `model.onnx` matches the SHA-256 in its config (`{DIGEST}`, also in
`{CHECKSUMS}`). A `…_bandKK_NNrows` part is the other side of a spatial split over several edges: stages
[0, k) of the detector on a horizontal band of NN input rows (its halo included); its outputs are the tensors
crossing cut k for that band, and the `…_cutKK_fp32` part runs the rest.{torch_note}

| part | model | cut | wire | inputs (per image) | MiB per image |
| --- | --- | --- | --- | --- | --- |
{rows}

`{PROBE_MODEL}` is a tiny model the workstation uses to measure round-trip time and bandwidth.

## Run it with the stock NVIDIA Triton container

On the edge box (NVIDIA driver + NVIDIA Container Toolkit installed), with the edge's TLS certificate and key in
`/etc/mededge/tls/server.pem` and `server.key` (and `client-ca.pem` for mutual TLS):

```sh
./{DOCKER_SCRIPT}
```

It checks every `model.onnx` against `{CHECKSUMS}` and that nothing here is writable by group or others, then runs
`{TRITON_IMAGE}` with this folder mounted read-only, gRPC 8001 over TLS on every interface, HTTP 8000 (health:
`curl 127.0.0.1:8000/v2/health/ready`) and metrics 8002 on the box's loopback only, no model loading, unloading or
changing while it runs (restart it after a re-export), and Triton's repository, shared-memory, trace and logging
APIs closed. Its first lines say which environment variables change the address, ports, TLS folder and image;
plaintext gRPC beyond loopback needs `MEDEDGE_INSECURE=1` and is warned about on every start. Set
`EDGE-HOST:8001` in the viewer's Settings → Edge with TLS on. Unlike `edge serve`, the stock container has no
gateway in front of Triton: Triton accepts a gRPC message of up to 2 GiB before refusing a wrong one, so keep
8001 open to the workstations only (mutual TLS keeps out anyone without a workstation certificate). Any Triton
release with the {backend} backend works; pick the tag matching the edge box's driver. (Exported with
`--runtime openvino`, the parts run on Triton's OpenVINO backend instead, on the CPU of an Intel edge box; its
precision is the backend's default, which may be BF16 on CPUs that have it — `edge serve` pins FP32.)

CPU-only edge box: export with `--cpu` (instance groups `KIND_CPU`, no `--gpus all` in the script).

Without Docker: `python main.py edge serve --repository THIS_FOLDER` runs the Triton shipped in the
nvidia-pytriton wheel on the same files, with the runtime this export names ({backend}).
"""
