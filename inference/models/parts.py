"""Edge parts: stages [k, n) of a model as one ONNX graph with named inputs and outputs.

The inputs are the tensors crossing cut k (`image` at cut 0, else `tNN` for stage NN's output), in the
chosen wire precision; the outputs are the model's results in FP32: the detector's decoded `output`
[N, 5 + classes], the classifier's `probabilities` and (when computed there) its last `features` for
the heat maps. Every dimension but the batch is fixed.

A band part is the other side of a spatial split (bands.py): stages [0, k) on one horizontal band of the
input (`image` [C, rows, size], FP32), its outputs the tensors crossing cut k for that band (`tNN`, FP32).
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference.config import ModelKind, WireFormat
from inference.models.classifier import CheXNet
from inference.models.detector import YoloDetector
from inference.models.stages import INPUT, StagedModel
from inference.models.wire import dequantize_torch, encode

ONNX_OPSET = 17
_EXPORTING = threading.Lock()  # TorchScript's exporter keeps global state: one export at a time in a process
FP32_TOLERANCE = 1e-4  # scores and probabilities; box coordinates relative to the input size


def part_name(kind: ModelKind, cut: int, wire: WireFormat) -> str:
    """The Triton model name of an edge part (int8+deflate is served by the int8 part)."""
    return f"{kind.value}_cut{cut:02d}_{wire.encoding.value}"


def band_part_name(kind: ModelKind, cut: int, rows: int) -> str:
    """The Triton model name of a band part: stages [0, cut) on a band of `rows` input rows, in FP32."""
    return f"{band_parts_prefix(kind, cut)}{rows}rows"


def band_parts_prefix(kind: ModelKind, cut: int) -> str:
    """What the names of the band parts at `cut` begin with, whatever their height."""
    return f"{kind.value}_band{cut:02d}_"


def halo_part_name(kind: ModelKind, bands: int) -> str:
    """The Triton model name of a halo part: the whole model on one of `bands` bands, rows swapped with the edges
    running the others (halo.py)."""
    return f"{kind.value}_halo{bands}"


def tensor_name(index: int) -> str:
    return "image" if index == INPUT else f"t{index:02d}"


def kind_of(model: StagedModel) -> ModelKind:
    return ModelKind.DETECTOR if isinstance(model, YoloDetector) else ModelKind.CLASSIFIER


def as_detector(model: StagedModel) -> YoloDetector:
    """`model` as the detector, for code that has already told the two models apart."""
    if not isinstance(model, YoloDetector):
        raise TypeError(f"expected the detector, got {type(model).__name__}")
    return model


def as_classifier(model: StagedModel) -> CheXNet:
    """`model` as the classifier: every staged model that is not the detector is one."""
    if not isinstance(model, CheXNet):
        raise TypeError(f"expected the detector or the classifier, got {type(model).__name__}")
    return model


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # without the batch dimension
    dtype: str              # Triton data type: FP32 or FP16


@dataclass(frozen=True)
class EdgePartSpec:
    """Everything the workstation and the edge must agree on for one edge part."""

    kind: ModelKind
    cut: int
    wire: WireFormat
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    identity: tuple[tuple[str, str], ...]  # architecture, input size, classes, weights: the model it belongs to
    band_rows: int = 0  # a band part's input rows (stages [0, cut) on a band); 0: stages [cut, n)
    halo_bands: int = 0  # a halo part's bands (the whole detector on one of them, rows swapped: halo.py)

    @property
    def name(self) -> str:
        if self.halo_bands:
            return halo_part_name(self.kind, self.halo_bands)
        return band_part_name(self.kind, self.cut, self.band_rows) if self.band_rows else \
            part_name(self.kind, self.cut, self.wire)

    @property
    def fingerprint(self) -> str:
        """Short hash of the identity: a stale repository (other weights, size or classes) shows here."""
        return fingerprint_of(self.identity)

    @property
    def input_bytes(self) -> int:
        """Bytes sent per image at this cut in this wire format (int8: codes plus scales and zero points)."""
        sizes = {"FP32": 4, "FP16": 2, "UINT8": 1}
        return sum(int(np.prod(t.shape)) * sizes[t.dtype] for t in self.inputs)


def model_input_shape(model: StagedModel) -> tuple[int, ...]:
    if isinstance(model, YoloDetector):
        return (3, model.config.input_size, model.config.input_size)
    config = as_classifier(model).config
    return (config.in_channels, config.input_size, config.input_size)


def output_names(model: StagedModel, cut: int) -> tuple[str, ...]:
    if isinstance(model, YoloDetector):
        return ("output",)
    # The heat maps need the last dense features; the edge returns them when it computed them.
    return ("probabilities", "features") if cut <= as_classifier(model).features_stage else ("probabilities",)


def fingerprint_of(identity: tuple[tuple[str, str], ...]) -> str:
    """Short hash of a model's identity (`identity_of`): the same for every part of that model."""
    return hashlib.sha256(";".join(f"{k}={v}" for k, v in identity).encode()).hexdigest()[:16]


def identity_of(model: StagedModel, weights: str) -> tuple[tuple[str, str], ...]:
    if isinstance(model, YoloDetector):
        detector = model.config
        return (("model", "detector"), ("architecture", detector.architecture),
                ("width", str(detector.width_multiple or "")), ("depth", str(detector.depth_multiple or "")),
                ("input_size", str(detector.input_size)), ("classes", ",".join(detector.classes)),
                ("weights", weights))
    classifier = as_classifier(model).config
    return (("model", "classifier"), ("architecture", "densenet121"), ("input_size", str(classifier.input_size)),
            ("in_channels", str(classifier.in_channels)), ("classes", ",".join(classifier.classes)),
            ("weights", weights))


def sample_input(model: StagedModel, batch: int = 1) -> torch.Tensor:
    """A deterministic smooth image in the model's input scale (real radiographs are smooth too;
    white noise drives untrained weights far outside their range)."""
    generator = torch.Generator().manual_seed(3)
    channels, rows, cols = model_input_shape(model)
    coarse = torch.rand(batch, 1, 8, 8, generator=generator)
    image = nn.functional.interpolate(coarse, size=(rows, cols), mode="bilinear", align_corners=False)
    if isinstance(model, CheXNet):
        image = (image - 0.449) / 0.226 if model.config.normalisation == "imagenet" else image * 2048 - 1024
    return image.expand(batch, channels, rows, cols).contiguous()


def part_spec(model: StagedModel, cut: int, wire: WireFormat, weights: str) -> EdgePartSpec:
    """The spec of stages [cut, n): input and output shapes measured by running the model once."""
    if not 0 <= cut < model.stage_count:
        raise ValueError(f"cut {cut}: an edge part needs 0 <= cut < {model.stage_count} for this model")
    wire = wire.encoding
    device = next(model.parameters()).device
    with torch.inference_mode():
        crossing = model.run_stages({INPUT: sample_input(model).to(device)}, 0, cut)
        outputs = EdgePart(model, cut, WireFormat.FP32)(*crossing.values())
    inputs: list[TensorSpec] = []
    for index, tensor in crossing.items():
        inputs.append(TensorSpec(tensor_name(index), tuple(tensor.shape[1:]), wire.triton_dtype))
        if wire is WireFormat.INT8:  # per-channel scale and zero point travel beside the codes
            channels = (tensor.shape[1],)
            inputs += [TensorSpec(tensor_name(index) + "_scale", channels, "FP32"),
                       TensorSpec(tensor_name(index) + "_zero", channels, "FP32")]
    outs = tuple(TensorSpec(name, tuple(t.shape[1:]), "FP32")
                 for name, t in zip(output_names(model, cut), outputs, strict=True))
    return EdgePartSpec(kind_of(model), cut, wire, tuple(inputs), outs, identity_of(model, weights))


def band_part_spec(model: StagedModel, cut: int, rows: int, weights: str) -> EdgePartSpec:
    """The spec of stages [0, cut) on a band of `rows` input rows: the tensors crossing the cut, band-high."""
    if not 0 < cut < model.stage_count:
        raise ValueError(f"cut {cut}: a band part needs 0 < cut < {model.stage_count} for this model")
    channels, _, cols = model_input_shape(model)
    device = next(model.parameters()).device
    with torch.inference_mode():
        crossing = BandPart(model, cut)(sample_input(model)[:, :, :rows].to(device))
    outputs = tuple(TensorSpec(tensor_name(index), tuple(tensor.shape[1:]), "FP32")
                    for index, tensor in zip(model.crossing(cut), crossing, strict=True))
    return EdgePartSpec(kind_of(model), cut, WireFormat.FP32, (TensorSpec("image", (channels, rows, cols), "FP32"),),
                        outputs, identity_of(model, weights), band_rows=rows)


class BandPart(nn.Module):
    """Stages [0, cut) of `model` on a band of its input: the tensors crossing the cut out, in FP32."""

    def __init__(self, model: StagedModel, cut: int) -> None:
        super().__init__()
        self.model = model
        self.cut = cut

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        crossing = self.model.run_stages({INPUT: image.float()}, 0, self.cut)
        return tuple(crossing[index] for index in self.model.crossing(self.cut))


class EdgePart(nn.Module):
    """Stages [cut, n) of `model`: crossing tensors in (in `wire` precision), FP32 results out."""

    def __init__(self, model: StagedModel, cut: int, wire: WireFormat) -> None:
        super().__init__()
        self.model = model
        self.cut = cut
        self.wire = wire.encoding
        self.crossing = model.crossing(cut)
        self.names = output_names(model, cut)
        # Only the classifier has features; its stage index, when this part returns them.
        self.features_stage = as_classifier(model).features_stage if "features" in self.names else None

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.wire is WireFormat.INT8:  # (codes, scale, zero) per crossing tensor
            tensors = tuple(dequantize_torch(*tensors[i:i + 3]) for i in range(0, len(tensors), 3))
        else:
            tensors = tuple(t.float() for t in tensors)  # FP16 on the wire, FP32 arithmetic
        last = self.model.stage_count - 1
        features = self.features_stage
        keep = [features] if features is not None else []
        result = self.model.run_stages(dict(zip(self.crossing, tensors, strict=True)), self.cut, last + 1, keep=keep)
        if features is not None:
            return result[last], result[features]
        return (result[last],)


def _part_and_sample(model: StagedModel, spec: EdgePartSpec) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module an edge part runs, and a batch of two of its inputs (the sample exports are traced on)."""
    if spec.band_rows:
        return _part_module(model, spec), (sample_input(model, batch=2)[:, :, :spec.band_rows].contiguous(),)
    with torch.inference_mode():
        crossing = model.run_stages({INPUT: sample_input(model, batch=2)}, 0, spec.cut)
    encoded = encode(spec.wire, {tensor_name(i): t.cpu().numpy() for i, t in crossing.items()})
    return _part_module(model, spec), tuple(torch.from_numpy(encoded[t.name]) for t in spec.inputs)


def _part_module(model: StagedModel, spec: EdgePartSpec) -> nn.Module:
    return (BandPart(model, spec.cut) if spec.band_rows else EdgePart(model, spec.cut, spec.wire)).eval()


def export_part(model: StagedModel, spec: EdgePartSpec, path: Path, *, check: bool = True) -> None:
    """Write the edge part as ONNX and check it against PyTorch on a sample; raise if they differ. Unchecked
    (`check=False`) only where nothing runs the file: a source of weights that parts take byte for byte."""
    import onnxruntime

    names_in = [t.name for t in spec.inputs]
    part, args = _part_and_sample(model, spec)
    names_out = [t.name for t in spec.outputs]
    path.parent.mkdir(parents=True, exist_ok=True)
    with _EXPORTING, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) on purpose: the dynamo one needs onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(part, args, str(path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=names_in, output_names=names_out,
                          dynamic_axes={name: {0: "batch"} for name in names_in + names_out})
        if not check:
            return
        expected = part(*args)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(names_out, {n: a.numpy() for n, a in zip(names_in, args, strict=True)})
    _check_outputs(spec, model, "ONNX", expected, got)


def export_torch_program(model: StagedModel, spec: EdgePartSpec, path: Path, max_batch: int) -> None:
    """Write the edge part as a PyTorch exported program (`torch.export`, from the module the ONNX is exported
    from; any batch up to `max_batch`) for an edge that runs it with PyTorch, on its GPU where it has one. Checked
    against PyTorch on a sample, at two batch sizes; raise if they differ."""
    whole, args = _part_and_sample(model, spec)
    part = _part_module(_without_unused_weights(model, whole, args), spec)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    # a band part takes one image; an edge part one tensor per crossing (its forward's *tensors)
    dynamic = ({0: batch},) if spec.band_rows else (tuple({0: batch} for _ in args),)
    with torch.no_grad(), warnings.catch_warnings():
        # tensors that share storage warn on saving and loading (harmless for weights on the CPU)
        warnings.filterwarnings("ignore", "No complete tensor found in the group", UserWarning)
        program = torch.export.export(part, args, dynamic_shapes=dynamic)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
        for sample in (args, tuple(a[:1] for a in args)):
            _check_outputs(spec, model, "exported program", whole(*sample), [t.numpy() for t in loaded(*sample)])


def _without_unused_weights(model: StagedModel, part: nn.Module, args: tuple[torch.Tensor, ...]) -> StagedModel:
    """A copy of `model` whose modules that `part` (of `model`) never calls on `args` hold empty weights: an
    exported program keeps every weight of the module it is exported from, used or not (the whole model in each
    part). The program is checked against the whole model's part after."""
    import copy

    called: set[int] = set()
    hooks = [module.register_forward_pre_hook(lambda m, _: called.add(id(m))) for module in model.modules()]
    try:
        with torch.inference_mode():
            part(*args)
    finally:
        for hook in hooks:
            hook.remove()
    trimmed = copy.deepcopy(model)
    for original, module in zip(model.modules(), trimmed.modules(), strict=True):
        if id(original) not in called:
            for name, parameter in list(module.named_parameters(recurse=False)):
                setattr(module, name, nn.Parameter(parameter.new_empty(0), requires_grad=False))
    return trimmed


def _check_outputs(spec: EdgePartSpec, model: StagedModel, what: str, expected, got) -> None:
    for output, want, have in zip(spec.outputs, expected, got, strict=True):
        difference = part_difference(spec.kind, output.name, want.numpy(), have, model_input_shape(model)[-1])
        if difference > FP32_TOLERANCE:
            raise RuntimeError(f"{spec.name}: {what} output {output.name!r} differs from PyTorch by {difference:.2e}")


def part_difference(kind: ModelKind, name: str, a: np.ndarray, b: np.ndarray, input_size: int) -> float:
    """Largest difference on the scale results are judged on: box coordinates as a fraction of the
    input size, scores and probabilities as they are, features relative to their range."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if kind is ModelKind.DETECTOR and name == "output":
        boxes = np.abs(a[..., :4] - b[..., :4]).max() / input_size
        return float(max(boxes, np.abs(a[..., 4:] - b[..., 4:]).max()))
    if name == "features" or name.startswith("t"):  # features, and a band part's crossing tensors
        return float(np.abs(a - b).max() / max(np.abs(a).max(), 1.0))
    return float(np.abs(a - b).max())
