"""Local runtimes for a whole model on this workstation, and for the workstation's stages of a split.

- `torch`: PyTorch eager in inference mode, channels-last (the Analyzer converts the models; measured faster
  on this CPU, see bench/bench_torch_eager.py), on torch's default thread count (all cores, the fastest measured).
- `torch-fp16`: PyTorch eager at half precision on the model's device — meant for CUDA, where FP16 runs on
  the tensor cores; `auto` considers it only there (on a CPU it runs, slowly, which the tests use).
- `onnxruntime`: the same ONNX graph an edge part uses for full offload (stages [0, n)), FP32; exported and
  checked against PyTorch (1e-4) on first use.
- `onnxruntime-int8-dynamic`: that graph with INT8 weights (`quantize_dynamic`); activations are quantised
  per run, so it needs no calibration and is built on demand; `auto` weighs it only once gated on the site's
  radiographs (`models quantize --runtime onnxruntime-int8-dynamic --images DIR`).
- `onnxruntime-int8-static`: INT8 QDQ (`quantize_static`, per-channel weights, UINT8 activations) calibrated
  on model inputs made by the product's own preprocessing from images the user gives
  (`python main.py models quantize --images DIR`); used only once built.
- `openvino`, `openvino-int8`: the same FP32 graph compiled by OpenVINO, and its NNCF INT8 build calibrated
  like the static one (`models quantize --runtime openvino-int8 --images DIR`); see openvino.py.
- `pruned`: a copy with channels removed and distilled on the site's radiographs (`models prune`), kept only
  if it passed the gate on held-back ones, on OpenVINO FP32; see pruning.py.

The INT8 files are built from the FP32 file and cached beside it in data_dir()/"local-onnx", named after
the FP32 file's fingerprint (model, size, classes, weights) and the method; a calibrated build (static,
OpenVINO INT8) also after its calibration set, the latest one of each method recorded as current. The tail
after the last convolutions (the detector's box decode, the classifier's pooling head and sigmoid) stays FP32:
one 8-bit scale cannot hold box pixels and scores together.

Fidelity gate (`gate`): the planner's wire gate, same constants — probabilities (and the detector's
confidences) within PROBABILITY_TOLERANCE and every box matched at IoU >= BOX_IOU (both ways: no box lost,
none added) against PyTorch FP32, on the site's radiographs held back from calibration (`models quantize`
calibrates on three quarters of them and gates on the rest; see fidelity.split_held_back), or, for a dynamic
build nobody calibrated, on the images given or the deterministic sample input. The verdict is cached beside the
file, per runtime; a pass holds only for the library version that gave it (after an upgrade it is gated again), a
failure stands. `auto` never picks a runtime that fails it; asking for one explicitly raises `RuntimeRefused` (a
ValueError, so the CLI prints one line) rather than quietly analysing with it or with something else — a clinician
must not get degraded numbers unasked.

The FP32 runtimes (onnxruntime, OpenVINO) and the calibrated INT8 ones (HEAD_RUNTIMES) also run stages [0, cut)
of a split (`head_session`): the graph of those stages, exported and checked like an edge part, its outputs the
tensors crossing the cut. An INT8 head is quantised like the whole model, on the same radiographs (read again from
the folder `models quantize` was given, which its record keeps: no copy of the site's images is made), and passes
the same gate, on the same held-back ones, as a whole split computes it — its tensors through each wire encoding,
the rest of the model in PyTorch FP32 — or PyTorch runs those stages. A study meeting such a cut before it is built
runs those stages in PyTorch while the analyzer builds it in the background. The pruned model does not: its
tensors at a cut are not the unpruned model's, which the edge's parts compute with.

`auto` (`choose_runtime`) measures, per model, every runtime that passes the gate on this machine (the close ones
timed in turns, so that a load beside them weighs on each alike), keeps the fastest and caches the choice with the
candidates it saw: a new calibrated build or a new verdict makes it measure again; a candidate this machine's
library cannot load or compile is left out. `known_runtime` reads a kept choice without building anything: the
Analyzer runs a model on PyTorch while its first choice is made in the background. On a CUDA device the
candidates are `torch` and `torch-fp16` (onnxruntime and OpenVINO here are CPU-only).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import platform
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from inference.config import ModelKind, Runtime, WireFormat
from inference.models.classifier import CheXNet
from inference.models.parts import (
    EdgePartSpec,
    as_detector,
    band_part_spec,
    export_part,
    identity_of,
    kind_of,
    model_input_shape,
    output_names,
    part_difference,
    part_spec,
    sample_input,
    tensor_name,
)
from inference.models.stages import INPUT, StagedModel
from inference.models.wire import round_trip
from inference.runtimes import openvino
from inference.runtimes.fidelity import BOX_IOU, PROBABILITY_TOLERANCE, boxes_match, split_held_back
from inference.runtimes.openvino import OpenVinoModel
from inference.runtimes.pruning import cam_weight

TORCH = Runtime.TORCH
HALF = Runtime.TORCH_FP16
FP32 = Runtime.ONNXRUNTIME
DYNAMIC = Runtime.ONNXRUNTIME_INT8_DYNAMIC
STATIC = Runtime.ONNXRUNTIME_INT8_STATIC
OV_FP32 = openvino.FP32
OV_INT8 = openvino.INT8
RUNTIMES = tuple(Runtime)
PRUNED = Runtime.PRUNED
CALIBRATED = (STATIC, OV_INT8)  # built from the site's radiographs by `models quantize`, used once built
SITE_BUILT = (*CALIBRATED, PRUNED)  # … and by `models prune`
# The runtimes that also run the workstation's stages of a split: FP32 ones, equal to PyTorch at 1e-4 (checked at
# export), so the planner's wire gate, measured with PyTorch stages, holds for them; and the calibrated INT8 ones,
# each cut gated as the split computes it (`head_session`). A pruned model's tensors at a cut are not the ones
# the edge's parts compute with.
HEAD_RUNTIMES = (FP32, OV_FP32, *CALIBRATED)
SLOWER = 4.0  # in `auto`, a candidate whose first run is this much slower than the best so far is not timed further
_K = TypeVar("_K")
TIMED_RUNS = 3  # in `auto`, timed runs of each candidate after its first (the median counts)


# model → {weights: spec of stages [0, n)}
_WHOLE_SPECS: weakref.WeakKeyDictionary[StagedModel, dict[str, EdgePartSpec]] = weakref.WeakKeyDictionary()


class RuntimeRefused(ValueError):
    """An explicitly requested local runtime cannot be used: not built, or it fails the fidelity gate."""


class NotBuilt(RuntimeRefused):
    """… because its site build (`models quantize`, `models prune`) was never made for this model."""


class BuildPending(Exception):
    """The stages before a cut are not built for this calibrated INT8 runtime yet, and were not asked to be built
    now (`head_session(..., build=False)`): quantising and gating them runs the model on the site's radiographs."""


class ChoiceStopped(Exception):
    """`auto`'s choice was asked to stop (its process is ending); what it built so far is kept."""


def _partial(path: Path, suffix: str) -> Path:
    """Where a file is written before it is renamed to `path` (a killed writer's is never reused): its own per
    process and thread, as two writers may make the same file at once. Those a killed process left are removed."""
    for left in path.parent.glob(f"{path.stem}.*.*{suffix}"):
        pid = left.name[len(path.stem) + 1:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            left.unlink(missing_ok=True)
    return path.with_suffix(f".{os.getpid()}.{threading.get_ident()}{suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


# ---------------------------------------------------------------- files


def fp32_file(model: StagedModel, weights: str, folder: Path, export: bool = True) -> tuple[Path, tuple[str, ...]]:
    """The FP32 ONNX of the whole model (exported and checked on first use unless `export` is False) and
    its output names."""
    specs = _WHOLE_SPECS.setdefault(model, {})
    if weights not in specs:  # a spec costs a forward pass: once per model and weights
        specs[weights] = part_spec(model, 0, WireFormat.FP32, weights)
    spec = specs[weights]
    path = folder / f"{spec.name}-{spec.fingerprint}.onnx"
    if export and not path.exists():
        partial = _partial(path, ".partial.onnx")
        try:
            export_part(model, spec, partial)  # checked against PyTorch there
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    return path, tuple(t.name for t in spec.outputs)


def quantized_file(fp32: Path, runtime: Runtime, calibration: str | None = None) -> Path:
    """Where the INT8 build of `fp32` lives (static: per calibration set)."""
    if runtime == DYNAMIC:
        return fp32.with_name(f"{fp32.stem}-int8-dynamic.onnx")
    if calibration is None:
        raise ValueError("a static INT8 file is named after its calibration set")
    return fp32.with_name(f"{fp32.stem}-int8-static-{calibration}.onnx")


def _current_record(fp32: Path, runtime: Runtime) -> Path:
    """Which site build of `fp32` for `runtime` is current (the one made last)."""
    return fp32.with_name(f"{fp32.stem}-{'int8-static' if runtime == STATIC else runtime}.json")


def _current(fp32: Path, runtime: Runtime) -> dict | None:
    try:
        record = json.loads(_current_record(fp32, runtime).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("file"), str) else None


def current_build(fp32: Path, runtime: Runtime) -> Path | None:
    """The site build (static INT8, OpenVINO INT8, pruned) made current last for this FP32 file, or None (also for
    a calibrated build an earlier version gated on its own calibration images: `_gated_on_its_calibration`)."""
    record = _current(fp32, runtime)
    if record is None or _gated_on_its_calibration(record, runtime):
        return None
    path = fp32.with_name(record["file"])
    return path if path.exists() else None


def _gated_on_its_calibration(record: dict, runtime: Runtime) -> bool:
    """A calibrated build recorded before `models quantize` held radiographs back for its gate (no `held_back`)."""
    return runtime in CALIBRATED and "held_back" not in record


def _rebuild_message(runtime: Runtime, model: ModelKind) -> str:
    return (f"the {runtime} build of the {model.value} was recorded by an earlier version, which gated it on the "
            f"radiographs it was calibrated on: build it again with {site_build_command(runtime, model)}, which "
            "holds a quarter of them back for the gate")


def make_current(fp32: Path, runtime: Runtime, path: Path, images: int, calibration: str | None = None,
                 images_folder: Path | None = None, held_back: int = 0) -> None:
    """Record `path` as the current site build; a calibrated one with its calibration set's fingerprint, the
    folder its radiographs were read from (where the stages before a cut are calibrated again) and how many of
    them were held back for its gate."""
    record = {"file": path.name, "images": images, "calibration": calibration}
    record |= {"held_back": held_back} if runtime in CALIBRATED else {}
    _current_record(fp32, runtime).write_text(json.dumps(
        record | ({"images_folder": str(images_folder.resolve())} if images_folder else {})))


def site_radiographs(folder: Path,
                     convert: Callable[[np.ndarray], _K] = lambda grey: grey,  # type: ignore[assignment,return-value]
                     ) -> tuple[list[_K], list[tuple[Path, str]]]:
    """`convert` of the display-ready grey image of each readable radiograph in `folder` and its sub-folders (a PACS
    export, a CD), made as each file is read (a site's hundreds of full-size radiographs are never held at once: the
    model inputs are a fraction of their size), and (file, why) for those skipped (a report or a damaged file among
    the images)."""
    from viewer.display import render_8bit
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph
    from viewer.media import files_to_open

    converted, skipped = [], []
    for path in files_to_open([str(folder)], recursive=True).files:
        try:
            converted.append(convert(render_8bit(load_radiograph(path))))
        except RadiographError as error:
            skipped.append((Path(path), error.reason))
    return converted, skipped


def calibration_fingerprint(images: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for image in images:
        array = np.ascontiguousarray(image, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:12]


class _Unhandled(logging.Handler):
    """On a root logger that had no handler: a record goes where Python would have sent it — to stderr (from
    WARNING) only where no logger on its way had a handler (pydicom's, grpc's … have a NullHandler: silent) — and
    its presence keeps `logging.warning` from installing a handler for good."""

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None and logger is not logger.root:
            if logger.handlers:
                return
            logger = logger.parent
        resort = logging.lastResort
        if resort is not None and record.levelno >= resort.level:
            resort.handle(record)


class _Quiet:
    """onnxruntime.quantization logs advice and per-tensor warnings through `logging.warning`, on the root logger
    itself, which also installs a stderr handler there when it has none (and from then on every library's logged
    traceback, e.g. pydicom's on a damaged file, reaches the user's terminal). While a quantisation runs (in a
    background thread too, minutes long, and two may overlap): what is logged on the root logger itself below ERROR
    is dropped, and a root logger without handlers gets `_Unhandled`; every other logger's records go where they
    went. Counted, so that the last one to end puts the root logger back as it was."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._filter = lambda record: record.levelno >= logging.ERROR  # on the root logger itself
        self._handler: logging.Handler | None = None

    @contextlib.contextmanager
    def __call__(self):
        root = logging.getLogger()
        with self._lock:
            if self._users == 0:
                root.addFilter(self._filter)
                self._handler = None if root.handlers else _Unhandled()
                if self._handler is not None:
                    root.addHandler(self._handler)
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    root.removeFilter(self._filter)
                    if self._handler is not None:
                        root.removeHandler(self._handler)


_quiet = _Quiet()


def _fp32_tail(path: Path) -> list[str]:
    """Names of the nodes from which no convolution is reachable: decode, pooling head, sigmoid."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {name: node for node in graph.node for name in node.output}
    before: set[str] = set()
    stack = [node for node in graph.node if node.op_type == "Conv"]
    while stack:
        node = stack.pop()
        if node.name not in before:
            before.add(node.name)
            stack.extend(producer[name] for name in node.input if name in producer)
    return [node.name for node in graph.node if node.name not in before]


class _Reader:
    """CalibrationDataReader over model inputs (each a batch [K, C, H, W])."""

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self._images = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {"image": np.ascontiguousarray(image, dtype=np.float32)}


def build_quantized(fp32: Path, runtime: Runtime, images: Sequence[np.ndarray] | None = None) -> Path:
    """Write the INT8 build of `fp32` (reused when already there) and return its path."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    static_images: Sequence[np.ndarray] = ()  # the calibration set: only a static build has one
    if runtime == STATIC:
        if not images:
            raise RuntimeRefused("static INT8 needs calibration images: build it with "
                                 "`python main.py models quantize --images DIR`")
        static_images = images
    target = quantized_file(fp32, runtime, calibration_fingerprint(static_images) if runtime == STATIC else None)
    if not target.exists():
        prepared = _partial(target, ".pre.tmp")
        partial = _partial(target, ".tmp")
        try:
            with _quiet():
                quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # folds what it can first
                keep_fp32 = _fp32_tail(prepared)
                if runtime == DYNAMIC:
                    # Per-channel weight scales hold the accuracy; UINT8 weights have the fast ConvInteger kernel.
                    quantize_dynamic(str(prepared), str(partial), per_channel=True, weight_type=QuantType.QUInt8,
                                     nodes_to_exclude=keep_fp32)
                else:
                    quantize_static(str(prepared), str(partial), _Reader(static_images), quant_format=QuantFormat.QDQ,
                                    per_channel=True, activation_type=QuantType.QUInt8,
                                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                                    nodes_to_exclude=keep_fp32)
            os.replace(partial, target)
        finally:
            for leftover in (prepared, partial):
                leftover.unlink(missing_ok=True)
    return target


def calibrated_build(fp32: Path, runtime: Runtime, calibration: Sequence[np.ndarray]) -> Path:
    """The INT8 build of `fp32` (a whole model or the stages before a cut) for a calibrated runtime, quantised on
    `calibration` (model inputs); reused when already there."""
    if runtime not in CALIBRATED:
        raise ValueError(f"{runtime} is not calibrated")
    with _QUANTISING:
        if runtime == STATIC:
            return build_quantized(fp32, STATIC, calibration)
        return openvino.build_int8(fp32, calibration, _fp32_tail(fp32), calibration_fingerprint(calibration))


# One calibrated build at a time in a process: each holds the site's radiographs and runs the model on them.
_QUANTISING = threading.Lock()


def site_file(model: StagedModel, fp32: Path, runtime: Runtime, calibration: Sequence[np.ndarray] | None = None,
              images_folder: Path | None = None, held_back: int = 0) -> Path:
    """The site build of `fp32` for `runtime`: a calibrated one built on `calibration` (model inputs, read from
    `images_folder` where given, `held_back` others kept apart for its gate) and made current, or without it the
    current one (`RuntimeRefused` when none was made)."""
    if calibration:
        if runtime not in CALIBRATED:
            raise ValueError(f"{runtime} is built by `models prune`, not calibrated")
        path = calibrated_build(fp32, runtime, calibration)
        make_current(fp32, runtime, path, len(calibration), calibration_fingerprint(calibration), images_folder,
                     held_back)
        return path
    current = current_build(fp32, runtime)
    record = _current(fp32, runtime)
    if record is not None and _gated_on_its_calibration(record, runtime):
        raise RuntimeRefused(_rebuild_message(runtime, kind_of(model)))
    if current is None:
        raise NotBuilt(f"no {runtime} build of the {kind_of(model).value} yet: make one with "
                       f"{site_build_command(runtime, kind_of(model))} (the site's radiographs)")
    return current


def site_build_command(runtime: Runtime, model: ModelKind) -> str:
    """The command that builds (and gates, on the site's radiographs) `runtime`'s copy of `model`."""
    what = f"prune --models {model}" if runtime == PRUNED else f"quantize --runtime {runtime} --models {model}"
    return f"`python main.py models {what} --images DIR`"


# ---------------------------------------------------------------- sessions


class OnnxModel:
    """A model file run by one onnxruntime session; outputs by name (`output`, or `probabilities`+`features`)."""

    cam_weight = None  # the model's own classifier head weighs its features

    def __init__(self, path: Path, outputs: Sequence[str], runtime: Runtime) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path, self.outputs, self.runtime = path, tuple(outputs), Runtime(runtime)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.session.run(list(self.outputs), {"image": batch.astype(np.float32)})
        return dict(zip(self.outputs, results, strict=True))


def file_session(model: StagedModel, weights: str, folder: Path, runtime: Runtime = FP32,
                 calibration: Sequence[np.ndarray] | None = None, images_folder: Path | None = None,
                 held_back: int = 0) -> OnnxModel | OpenVinoModel:
    """The session of a runtime that runs a model file (onnxruntime FP32, dynamic INT8 built on demand, the
    site builds — see `site_file`; OpenVINO); `calibration` builds a calibrated one (its radiographs read from
    `images_folder`, kept for its stages before a cut, `held_back` of them kept apart for its gate)."""
    if runtime not in (FP32, DYNAMIC, *SITE_BUILT, OV_FP32):
        raise ValueError(f"{runtime} does not run a model file")
    # A site build is only read here: no export just to refuse when it was never made.
    fp32, outputs = fp32_file(model, weights, folder, export=runtime not in SITE_BUILT or bool(calibration))
    if runtime in (FP32, OV_FP32):
        path = fp32
    elif runtime == DYNAMIC:
        path = build_quantized(fp32, DYNAMIC)
    else:
        path = site_file(model, fp32, runtime, calibration, images_folder, held_back)
    if runtime in (FP32, DYNAMIC, STATIC):
        return OnnxModel(path, outputs, runtime)
    # a pruned CheXNet's heat maps weigh its own (fewer) features by its own head
    return OpenVinoModel(path, outputs, runtime, cam_weight(path) if runtime == PRUNED else None)


def head_session(model: StagedModel, weights: str, folder: Path, runtime: Runtime, cut: int, build: bool = True
                 ) -> OnnxModel | OpenVinoModel:
    """Stages [0, cut) of `model` (0 < cut < n) on `runtime`, one of HEAD_RUNTIMES: the workstation's side of a
    split, its outputs the tensors crossing the cut (`tNN`, FP32). Exported as ONNX and checked against PyTorch
    (1e-4) on first use, kept beside the whole model's file; for an INT8 runtime quantised and gated too
    (`_calibrated_head`: RuntimeRefused, saying why, where it fails) — without `build`, BuildPending where that
    is still to do."""
    if runtime not in HEAD_RUNTIMES:
        raise ValueError(f"{runtime} does not run the stages before a cut")
    spec = band_part_spec(model, cut, model_input_shape(model)[1], weights)  # a band as high as the image
    path = folder / f"{kind_of(model).value}_head{cut:02d}-{spec.fingerprint}.onnx"
    if not path.exists() and not build and runtime in CALIBRATED:
        raise BuildPending(f"the stages before cut {cut} of the {kind_of(model).value} are not built for {runtime}")
    if not path.exists():
        partial = _partial(path, ".partial.onnx")
        try:
            export_part(model, spec, partial)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
    outputs = tuple(t.name for t in spec.outputs)
    if runtime in CALIBRATED:
        return _calibrated_head(model, weights, folder, path, outputs, runtime, cut, build)
    return _head_model(path, outputs, runtime)


def _head_model(path: Path, outputs: tuple[str, ...], runtime: Runtime) -> OnnxModel | OpenVinoModel:
    return OnnxModel(path, outputs, runtime) if runtime in (FP32, STATIC) else OpenVinoModel(path, outputs, runtime)


def _calibrated_head(model: StagedModel, weights: str, folder: Path, head: Path, outputs: tuple[str, ...],
                     runtime: Runtime, cut: int, build: bool = True) -> OnnxModel | OpenVinoModel:
    """The INT8 build of the stages before `cut` (FP32 graph `head`), quantised on the radiographs the whole
    model's current build was calibrated on, once it passed the gate as a split computes it on those held back
    (`gated_int8_head`);
    RuntimeRefused, saying why, where it cannot be built or fails (PyTorch then runs those stages)."""
    kind = kind_of(model)
    whole, _ = fp32_file(model, weights, folder, export=False)
    record = _current(whole, runtime)
    if record is None or not whole.with_name(record["file"]).exists():
        raise NotBuilt(f"no {runtime} build of the {kind.value} yet: make one with "
                       f"{site_build_command(runtime, kind)} (the site's radiographs)")
    calibration, images_folder = record.get("calibration"), record.get("images_folder")
    if _gated_on_its_calibration(record, runtime):
        raise RuntimeRefused(_rebuild_message(runtime, kind))
    if not (isinstance(calibration, str) and isinstance(images_folder, str)):
        raise RuntimeRefused(f"the {runtime} build of the {kind.value} does not say which radiographs calibrated "
                             f"it: build it again with {site_build_command(runtime, kind)}")
    target = quantized_file(head, STATIC, calibration) if runtime == STATIC else openvino.int8_file(head, calibration)
    kept = _cached_verdict(target, runtime, kind) if target.exists() else None
    where = f"the stages before cut {cut} of the {kind.value}"
    session = None
    if kept is None or "stale" in kept:  # gated again under this library: its radiographs are at hand
        if not build:
            raise BuildPending(f"{where} are not built and gated for {runtime} yet")
        inputs, held_back = _calibration_inputs(model, Path(images_folder), calibration, runtime)
        try:
            session, kept = gated_int8_head(model, cut, head, outputs, runtime, inputs, held_back)
        except Exception as error:  # noqa: BLE001 — whatever the quantiser raises on this graph: PyTorch runs them
            raise RuntimeRefused(f"{runtime} could not build {where}: {type(error).__name__}: "
                                 f"{(str(error).splitlines() or [''])[0][:200]}") from error
    if not kept["passes"]:
        raise RuntimeRefused(f"{runtime} fails the fidelity gate for {where} (largest difference "
                             f"{kept['max_difference']:.3g} vs PyTorch FP32 on {kept['images']} image(s))")
    return session or _head_model(target, outputs, runtime)


def _calibration_inputs(model: StagedModel, images_folder: Path, calibration: str, runtime: Runtime
                        ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The model inputs a calibrated build was made from and those held back for its gate, read again from its
    folder; RuntimeRefused where they are no longer there as they were (a head calibrated on other images would not
    be the model's)."""
    kind = kind_of(model)
    inputs = (site_radiographs(images_folder, lambda grey: model_input(model, grey))[0] if images_folder.is_dir()
              else [])
    if len(inputs) >= 2:
        built_from, held_back = split_held_back(inputs)
        if calibration_fingerprint(built_from) == calibration:
            return built_from, held_back
    raise RuntimeRefused(f"the radiographs the {runtime} build of the {kind.value} was calibrated on are no "
                         f"longer as they were in {images_folder}: build it again with "
                         f"{site_build_command(runtime, kind)}")


class _Split:
    """A split as the workstation and the edge compute it, for the gate: stages [0, cut) on `head`, the tensors
    crossing the cut through `wire`'s round trip, the rest of the model in PyTorch FP32 (what the edge's parts
    compute, to 1e-4)."""

    def __init__(self, model: StagedModel, cut: int, head: OnnxModel | OpenVinoModel, wire: WireFormat) -> None:
        self.model, self.cut, self.head, self.wire = model, cut, head, wire
        self.path, self.runtime = head.path, head.runtime

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        crossing = self.head.run(batch)
        moved = {i: round_trip(self.wire, torch.from_numpy(crossing[tensor_name(i)]))
                 for i in self.model.crossing(self.cut)}
        result = self.model.run_stages(moved, self.cut, self.model.stage_count)[self.model.stage_count - 1]
        return {output_names(self.model, 0)[0]: result.numpy()}


HEAD_GATE_WIRES = tuple(dict.fromkeys(wire.encoding for wire in WireFormat))  # fp32, fp16, int8


def gated_int8_head(model: StagedModel, cut: int, head: Path, outputs: tuple[str, ...], runtime: Runtime,
                    calibration: Sequence[np.ndarray], held_back: Sequence[np.ndarray]
                    ) -> tuple[OnnxModel | OpenVinoModel, dict]:
    """The INT8 build of the stages before `cut` (FP32 graph `head`, outputs `outputs`) quantised on `calibration`,
    and its gate verdict on `held_back`, kept beside it: the split it makes, with each wire encoding the planner may
    choose (the head's error and the wire's add up), must pass on those radiographs; a failing one's figures are
    kept, else the largest difference's."""
    session = _head_model(calibrated_build(head, runtime, calibration), outputs, runtime)
    with torch.inference_mode():
        references = [_reference(model, image) for image in held_back]  # once for the three encodings
    results = {wire: gate(model, _Split(model, cut, session, wire), held_back, references)
               for wire in HEAD_GATE_WIRES}
    worst = max(results.values(), key=lambda result: (not result["passes"], result["max_difference"]))
    verdict = worst | {"passes": all(result["passes"] for result in results.values()), "cut": cut,
                       "wires": {wire.value: result["passes"] for wire, result in results.items()}}
    _verdict_file(session.path, runtime).write_text(json.dumps(verdict))
    return session, verdict


class TorchHalf:
    """A whole model in PyTorch at half precision on `device` (a copy: the FP32 model still runs the stages
    before a cut); outputs by name and in FP32, like OnnxModel's."""

    path = None  # nothing on disk: its gate verdict is not cached
    cam_weight = None  # the model's own classifier head weighs its features

    def __init__(self, model: StagedModel, device: torch.device) -> None:
        import copy

        self.model = copy.deepcopy(model).to(device=device, dtype=torch.float16).eval()
        self.device = device
        self.outputs = output_names(model, 0)
        self.runtime = HALF

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        model, last = self.model, self.model.stage_count - 1
        features = getattr(model, "features_stage", None) if "features" in self.outputs else None
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, torch.float16)
            result = model.run_stages({INPUT: image}, 0, last + 1, keep=[features] if features is not None else [])
            tensors = (result[last],) if features is None else (result[last], result[features])
        return {name: t.float().cpu().numpy() for name, t in zip(self.outputs, tensors, strict=True)}


LocalSession = OnnxModel | OpenVinoModel | TorchHalf  # a whole model run here on another runtime than PyTorch FP32


# ---------------------------------------------------------------- fidelity gate


def model_input(model: StagedModel, grey: np.ndarray) -> np.ndarray:
    """The model's input batch from a display-ready grey image, exactly as `analyze` makes it."""
    from inference.models.preprocess import classifier_crops, letterbox

    if isinstance(model, CheXNet):
        config = model.config
        return classifier_crops(grey, config.resize, config.input_size, config.ten_crop, config.in_channels,
                                config.normalisation)[0]
    return letterbox(grey, as_detector(model).config.input_size)[0]


def detections_in_input(model: StagedModel, raw: np.ndarray) -> list:
    """Detections in input pixels from the detector's raw output [1, N, 5 + classes]."""
    from inference.models.postprocess import decode_detections
    from inference.models.preprocess import Letterbox

    config = as_detector(model).config
    size = config.input_size
    return decode_detections(np.asarray(raw)[0], Letterbox((size, size), size, 1.0, 1.0, 0, 0), config.classes,
                             config.confidence, config.iou, config.max_detections)


def gate(model: StagedModel, session: LocalSession | _Split, images: Iterable[np.ndarray],
         references: Sequence[np.ndarray] | None = None) -> dict:
    """The planner's fidelity gate for a local runtime against PyTorch FP32 on `images` (model inputs); the
    model's outputs on them computed here, or given as `references` where one set gates several sessions.

    Classifier: probabilities within PROBABILITY_TOLERANCE. Detector: every box matched both ways at
    IoU >= BOX_IOU, and every anchor's confidence within PROBABILITY_TOLERANCE. Returns the verdict
    (`passes`) with what it saw, including the largest difference as `part_difference` measures it
    (probabilities; detector scores and box coordinates as a fraction of the input).
    """
    detector = kind_of(model) is ModelKind.DETECTOR
    name = "output" if detector else "probabilities"
    worst, boxes, scores, count = 0.0, True, 0.0, 0
    with torch.inference_mode():
        for index, image in enumerate(images):
            reference = references[index] if references is not None else _reference(model, image)
            got = session.run(image)[name]
            worst = max(worst, part_difference(kind_of(model), name, reference, got, image.shape[-1]))
            if detector:
                want, have = detections_in_input(model, reference), detections_in_input(model, got)
                boxes &= boxes_match(want, have) and boxes_match(have, want)
                # Box matching alone is vacuous where nothing crosses the threshold: every anchor's confidence
                # (objectness × class score, what the threshold and NMS see) is held to the probability tolerance.
                scores = max(scores, float(np.abs(reference[..., 4:5] * reference[..., 5:]
                                                  - got[..., 4:5] * got[..., 5:]).max()))
            count += 1
    passes = (boxes and scores <= PROBABILITY_TOLERANCE) if detector else worst <= PROBABILITY_TOLERANCE
    verdict = {"runtime": session.runtime, "passes": bool(passes), "images": count, "max_difference": worst,
               "probability_tolerance": PROBABILITY_TOLERANCE}
    if session.path is not None:  # a file's runtime (not PyTorch FP16): the library that ran it
        verdict["library"] = library_version(session.runtime)
    if detector:
        verdict |= {"boxes_match": bool(boxes), "box_iou": BOX_IOU, "max_confidence_difference": scores}
    return verdict


def _reference(model: StagedModel, image: np.ndarray) -> np.ndarray:
    """The model's output in PyTorch FP32 on one input (inference mode: called within it)."""
    device = next(model.parameters()).device  # CUDA too: the FP16 runtime is gated there
    return model(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)).cpu().numpy()


def _verdict_file(path: Path, runtime: Runtime) -> Path:
    return path.with_name(f"{path.stem}.{runtime}.gate.json")  # per runtime: OpenVINO FP32 reads the ONNX FP32 too


OPENVINO_RUNS = (OV_FP32, OV_INT8, PRUNED)  # the runtimes whose results OpenVINO computes


def library_version(runtime: Runtime) -> str:
    """The version of the library that computes `runtime`'s results: a gate verdict holds for it only."""
    if runtime in OPENVINO_RUNS:
        try:
            import openvino
        except ImportError:  # its runtimes are then left out, each saying why
            return "not installed"
        return str(openvino.get_version())
    import onnxruntime  # whichever distribution provides it (onnxruntime-gpu, -openvino …)

    return str(onnxruntime.__version__)


def _cached_verdict(path: Path, runtime: Runtime, model: ModelKind) -> dict | None:
    """The verdict kept for `path` on `runtime`. A failure stands; a pass by another version of the library is not
    trusted: gated again (None), except a site build's or a dynamic INT8 build's gated on radiographs — the site's
    radiographs are not here, and the sample input alone must not pass it: it fails, saying how to gate it again
    (`stale`). An
    onnxruntime INT8 build's verdict may be under its earlier name (one per file, no version)."""
    legacy = [path.with_suffix(".gate.json")] if runtime in (DYNAMIC, STATIC) else []
    for candidate in (_verdict_file(path, runtime), *legacy):
        try:
            kept = json.loads(candidate.read_text())
        except (ValueError, OSError):
            continue
        if not isinstance(kept, dict) or not isinstance(kept.get("passes"), bool):
            continue
        if kept["passes"] and kept.get("library") != library_version(runtime):
            # gated again on the sample input, unless only the site's radiographs count (`_auto_files`)
            if runtime not in SITE_BUILT and not (runtime == DYNAMIC and kept.get("radiographs")):
                return None
            return kept | {"passes": False, "stale": (
                f"was gated on the site's radiographs with {'OpenVINO' if runtime in OPENVINO_RUNS else 'onnxruntime'} "
                f"{kept.get('library') or 'of an unknown version'}, this workstation has {library_version(runtime)}: "
                f"build and gate it again with {site_build_command(runtime, model)}")}
        return kept
    return None


def verdict(model: StagedModel, session: LocalSession, images: Sequence[np.ndarray] | None = None) -> dict:
    """The gate verdict for `session`: computed on `images` when given (and cached beside the file), else
    the cached one, else computed on the deterministic sample input. onnxruntime FP32 passes by construction
    (it is checked against PyTorch at 1e-4 when exported)."""
    if session.runtime == FP32:
        return {"runtime": FP32, "passes": True}
    path = session.path
    cached = _cached_verdict(path, session.runtime, kind_of(model)) if images is None and path is not None else None
    if cached is not None:
        return cached
    result = gate(model, session, images if images is not None else [sample_input(model).numpy()])
    result["radiographs"] = images is not None  # not the synthetic sample alone (`_auto_files`)
    if path is not None:
        _verdict_file(path, session.runtime).write_text(json.dumps(result))
    return result


# ---------------------------------------------------------------- choice


def median_ms(function: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of `function()` in ms, after one warm-up call."""
    function()  # warm-up
    return medians_in_turns({0: function}, repeats)[0]


def medians_in_turns(runs: Mapping[_K, Callable[[], object]], repeats: int = TIMED_RUNS,
                     before_each_turn: Callable[[], None] = lambda: None) -> dict[_K, float]:
    """Median wall time in ms of each of `runs` (warmed up already), timed in turns rather than one after
    another: a load beside them (studies analysed meanwhile) weighs on each alike."""
    rounds: dict[_K, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        before_each_turn()
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            rounds[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.median(taken) for name, taken in rounds.items()}


def machine_key() -> str:
    """This machine, for the measurements kept on disk (stage profiles, runtime choices): they hold for it."""
    return f"{platform.node()}-{platform.machine()}-torch{torch.__version__}-threads{torch.get_num_threads()}"


def timed_with() -> dict[str, str]:
    """The libraries a kept timing was measured with: under another version the runtimes are timed again."""
    return {"onnxruntime": library_version(FP32), "openvino": library_version(OV_FP32)}


def _head_timing_file(session: LocalSession) -> Path:
    if session.path is None:  # a session with no file (PyTorch FP16) never runs a split's first stages
        raise ValueError(f"{session.runtime} keeps no timing of the stages before a cut")
    name = f"{session.path.stem}.{session.runtime}.timing-{machine_key()}.json"
    return session.path.with_name(name.replace("/", "_"))


def kept_head_timing(session: LocalSession) -> tuple[float, float] | None:
    """(ms on its runtime, ms in PyTorch) of the stages before a cut in `session`, as auto measured them on this
    machine with these libraries; None when not measured so. Kept so that auto decides a close case once, not
    again in every process, and a restart does not pay the timing."""
    try:
        record = json.loads(_head_timing_file(session).read_text())
        if record["libraries"] == timed_with():
            return float(record["runtime_ms"]), float(record["torch_ms"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def keep_head_timing(session: LocalSession, runtime_ms: float, torch_ms: float) -> None:
    path = _head_timing_file(session)
    partial = _partial(path, ".tmp")
    try:
        partial.write_text(json.dumps({"runtime_ms": runtime_ms, "torch_ms": torch_ms, "libraries": timed_with()}))
        os.replace(partial, path)
    except OSError as error:  # a cache: unwritable, the next process times the stages again
        logging.getLogger(__name__).warning("the timing of %s was not kept: %s", path.name, error)
        partial.unlink(missing_ok=True)


def _choice_file(model: StagedModel, weights: str, folder: Path) -> Path:
    # Weights are part of the key: the gate verdicts depend on them (the timings do not).
    key = f"runtime-{machine_key()}-{kind_of(model).value}-" + "-".join(
        v for k, v in identity_of(model, weights) if k != "classes")
    return folder / (key.replace("/", "_") + ".json")


def known_runtime(model: StagedModel, weights: str, folder: Path
                  ) -> tuple[Runtime, OnnxModel | OpenVinoModel | None] | None:
    """`auto`'s choice as kept on disk, when nothing needs building, gating or timing for it (quick); else None."""
    fp32, _ = fp32_file(model, weights, folder, export=False)
    if not fp32.exists():
        return None
    files = _auto_files(fp32, kind_of(model))
    if any(_cached_verdict(path, name, kind_of(model)) is None for name, path in files.items() if name != FP32):
        return None
    return _auto_choice(model, weights, folder, measure=False)


_TOLD_TO_REBUILD: set[tuple[Path, Runtime]] = set()


def _auto_files(fp32: Path, model: ModelKind) -> dict[Runtime, Path]:
    """The files of the runtimes auto weighs besides PyTorch: the FP32 ones, the site builds made current, and the
    dynamic INT8 build once it was gated on radiographs (`models quantize --runtime onnxruntime-int8-dynamic
    --images DIR`): on the synthetic sample input alone CheXNet's passed (0.006) where ten real radiographs moved
    its probabilities by 0.04, twice the tolerance (docs/benchmarks.md)."""
    files = {FP32: fp32, OV_FP32: fp32}
    dynamic = quantized_file(fp32, DYNAMIC)
    kept = _cached_verdict(dynamic, DYNAMIC, model) if dynamic.exists() else None
    if kept is not None and kept.get("radiographs"):
        files[DYNAMIC] = dynamic
    for name in CALIBRATED:
        if ((record := _current(fp32, name)) is not None and _gated_on_its_calibration(record, name)
                and (fp32, name) not in _TOLD_TO_REBUILD):  # once per process: read at start and by the choice
            _TOLD_TO_REBUILD.add((fp32, name))
            logging.getLogger(__name__).warning("auto: %s left out: %s", name, _rebuild_message(name, model))
    return files | {name: path for name in SITE_BUILT if (path := current_build(fp32, name)) is not None}


_CHOOSING: dict[Path, threading.Lock] = {}  # a choice being made in this process (two analyzers: one measures)
_CHOOSING_LOCK = threading.Lock()


def choose_runtime(model: StagedModel, weights: str, folder: Path, stop: threading.Event | None = None
                   ) -> tuple[Runtime, OnnxModel | OpenVinoModel | None]:
    """`auto`: the fastest runtime on this machine among those that pass the gate (measured once per
    set of candidates, then read from the cache); with its session, None for PyTorch. Setting `stop` ends it with
    ChoiceStopped before its next step."""
    with _CHOOSING_LOCK:
        choosing = _CHOOSING.setdefault(_choice_file(model, weights, folder), threading.Lock())
    with choosing:
        chosen = _auto_choice(model, weights, folder, measure=True, stop=stop)
    assert chosen is not None  # measured
    return chosen


def _auto_choice(model: StagedModel, weights: str, folder: Path, measure: bool, stop: threading.Event | None = None
                 ) -> tuple[Runtime, OnnxModel | OpenVinoModel | None] | None:
    """`choose_runtime`; without `measure`, None where the kept choice does not hold."""
    def step() -> None:
        if stop is not None and stop.is_set():
            raise ChoiceStopped("auto's choice stopped")

    step()
    fp32, _ = fp32_file(model, weights, folder)
    step()
    files = _auto_files(fp32, kind_of(model))
    sessions: dict[Runtime, OnnxModel | OpenVinoModel] = {}
    broken: dict[Runtime, str] = {}

    def session(name: Runtime) -> OnnxModel | OpenVinoModel | None:
        """Opened only when needed (the detector's are large); None where this machine's onnxruntime or OpenVINO
        cannot load or compile the file: auto goes on without that candidate rather than failing the analysis."""
        if name not in sessions and name not in broken:
            try:
                sessions[name] = file_session(model, weights, folder, name)
            except Exception as error:  # noqa: BLE001 — whatever either library raises for one candidate
                broken[name] = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"
                logging.getLogger(__name__).warning("auto: %s left out for the %s: %s", name,
                                                    kind_of(model).value, broken[name])
        return sessions.get(name)

    def gated(name: Runtime, path: Path) -> dict:
        kept = _cached_verdict(path, name, kind_of(model))
        if kept is not None and "stale" in kept:
            logging.getLogger(__name__).warning("auto: %s left out for the %s: it %s", name, kind_of(model).value,
                                                kept["stale"])
        if kept is not None:
            return kept
        step()
        opened = session(name)
        return verdict(model, opened) if opened is not None else {"runtime": name, "passes": False,
                                                                  "error": broken[name]}

    verdicts = {FP32: {"runtime": FP32, "passes": True}}  # checked against PyTorch when exported
    verdicts |= {name: gated(name, path) for name, path in files.items() if name != FP32}
    usable = [TORCH] + [name for name in files if verdicts[name]["passes"]]
    candidates = {name: [path.name, verdicts[name]["passes"]] for name, path in files.items()}
    libraries = timed_with()
    record_path = _choice_file(model, weights, folder)
    try:
        record = json.loads(record_path.read_text())
        if (record["candidates"] == candidates and record.get("libraries") == libraries
                and record["runtime"] in usable):
            chosen = Runtime(record["runtime"])
            if chosen is TORCH or session(chosen) is not None:
                return chosen, None if chosen is TORCH else session(chosen)
    except (OSError, ValueError, KeyError):
        pass
    if not measure:
        return None
    image = sample_input(model)
    times: dict[Runtime, float] = {}
    runs = {}
    with torch.inference_mode():
        for name in usable:
            step()
            opened = None if name == TORCH else session(name)
            if name != TORCH and opened is None:
                continue
            run = (lambda: model(image)) if opened is None else functools.partial(opened.run, image.numpy())
            started = time.perf_counter()
            run()  # warm-up, and a first look
            times[name] = (time.perf_counter() - started) * 1e3
            if times[name] <= SLOWER * min(times.values()):
                runs[name] = run
        times |= medians_in_turns(runs, before_each_turn=step)  # the close ones (the studies may run beside them)
    runtime = min(times, key=times.__getitem__)  # every key is present (times.get would type as Optional)
    record_path.write_text(json.dumps({"runtime": runtime, "candidates": candidates, "libraries": libraries,
                                       "gate": verdicts}
                                      | {f"{name}_ms": ms for name, ms in times.items()}))
    return runtime, None if runtime == TORCH else session(runtime)


def choose_on_cuda(model: StagedModel, device: torch.device) -> TorchHalf | None:
    """`auto` on a CUDA device: FP16 when it passes the gate and is faster than FP32, else None (PyTorch)."""
    half = TorchHalf(model, device)
    if not verdict(model, half)["passes"]:
        return None
    image = sample_input(model).to(device)
    with torch.inference_mode():
        fp32_ms = median_ms(lambda: model(image).cpu())
    return half if median_ms(lambda: half.run(image.cpu().numpy())) < fp32_ms else None


def open_runtime(model: StagedModel, weights: str, folder: Path, runtime: Runtime,
                 device: torch.device | None = None) -> LocalSession | None:
    """The session that runs `model` whole for `runtime` (`auto` resolved by `choose_runtime`, or on CUDA by
    `choose_on_cuda`); None for PyTorch FP32. An explicit runtime that is not built (a calibrated one) or fails
    the gate raises RuntimeRefused. onnxruntime and OpenVINO run here on the CPU only: on a CUDA device their
    names mean PyTorch."""
    device = device or torch.device("cpu")
    runtime = Runtime(runtime)  # ValueError for a name that is none
    if runtime == TORCH:
        return None
    if runtime == Runtime.AUTO:
        return choose_on_cuda(model, device) if device.type == "cuda" else choose_runtime(model, weights, folder)[1]
    if runtime != HALF and device.type == "cuda":
        return None
    session = TorchHalf(model, device) if runtime == HALF else file_session(model, weights, folder, runtime)
    result = verdict(model, session)
    if "stale" in result:
        raise RuntimeRefused(f"{runtime} for the {kind_of(model).value} {result['stale']}")
    if not result["passes"]:
        raise RuntimeRefused(f"{runtime} fails the fidelity gate for the {kind_of(model).value} "
                             f"(largest difference {result['max_difference']:.3g} vs PyTorch FP32 on "
                             f"{result['images']} image(s)); use auto, onnxruntime or torch")
    return session
