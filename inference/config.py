"""The typed choices of an analysis: which model, where it is cut, how its tensors travel, where it runs.

Torch-free, so that the command line and the viewer's settings can check a choice before any model loads.
Each type parses the text a person writes (a command-line option, a stored setting) and says precisely what is
wrong with it; past that point the analysis passes these values, never their text.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

MANUFACTURER = "MedEdge"  # in what the product writes (SR, Secondary Capture), and how it knows its own images


class Choice(str, enum.Enum):
    """A named choice whose text is its value, in f-strings and str() alike on every Python version."""

    def __str__(self) -> str:
        return str(self.value)


class ModelKind(Choice):
    DETECTOR = "detector"      # COVID-19 opacity boxes (Scaled-YOLOv4)
    CLASSIFIER = "classifier"  # the 14 ChestX-ray14 findings (CheXNet)


class WireFormat(Choice):
    """How the tensors crossing a cut travel to the edge. FP16 halves the bytes; the edge computes in FP32."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # uint8 codes + per-channel scale and zero point (inference.models.wire)
    # int8, with the request deflate-compressed by gRPC itself and inflated by the server's gRPC before
    # Triton sees it: lossless, and served by the same edge part as int8 (a stock Triton needs nothing more).
    INT8_DEFLATE = "int8+deflate"

    @property
    def encoding(self) -> WireFormat:
        """The tensor encoding, which decides the edge part (compression happens below it, in gRPC)."""
        return WireFormat.INT8 if self is WireFormat.INT8_DEFLATE else self

    @property
    def compression(self) -> str | None:
        """gRPC's message compression for the request (tritonclient's `compression_algorithm`)."""
        return "deflate" if self is WireFormat.INT8_DEFLATE else None

    @property
    def triton_dtype(self) -> str:
        return {"fp32": "FP32", "fp16": "FP16", "int8": "UINT8"}[self.encoding.value]


class Runtime(Choice):
    """How a model run whole on this workstation is executed (inference.runtimes)."""

    AUTO = "auto"  # the fastest that passes the fidelity gate, measured once per model and machine
    TORCH = "torch"
    TORCH_FP16 = "torch-fp16"  # CUDA only
    ONNXRUNTIME = "onnxruntime"
    ONNXRUNTIME_INT8_DYNAMIC = "onnxruntime-int8-dynamic"
    ONNXRUNTIME_INT8_STATIC = "onnxruntime-int8-static"
    OPENVINO = "openvino"            # the same ONNX compiled by OpenVINO for this CPU, FP32
    OPENVINO_INT8 = "openvino-int8"  # NNCF post-training INT8, calibrated on the site's radiographs
    PRUNED = "pruned"                # channels removed and distilled on the site's radiographs, on OpenVINO FP32


class EdgeRuntime(Choice):
    """What runs an edge part's ONNX on the edge box: recorded in the exported repository (for the stock Triton
    container, its backend), and used by `edge serve` in Triton's Python backend."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"  # an Intel edge box's CPU
    # PyTorch on the edge box's GPU (its CPU without one), a program exported from the same part: for `edge serve`
    # where the installed onnxruntime has no CUDA; the stock container still runs the ONNX (its onnxruntime has)
    TORCH = "torch"


class DeviceKind(Choice):
    CPU = "cpu"
    CUDA = "cuda"
    AUTO = "auto"  # CUDA when present


@dataclass(frozen=True)
class Device:
    """Where the workstation's stages run: `cpu`, `cuda`, `cuda:N` or `auto`."""

    kind: DeviceKind = DeviceKind.CPU
    index: int | None = None  # a CUDA device's number

    def __post_init__(self) -> None:
        if self.index is not None and (self.kind is not DeviceKind.CUDA or self.index < 0):
            raise ValueError(f"only a CUDA device has a number (cuda:N, N ≥ 0), got {self}")

    @classmethod
    def parse(cls, text: str | Device) -> Device:
        if isinstance(text, Device):
            return text
        name, colon, number = str(text).strip().lower().partition(":")
        try:
            kind = DeviceKind(name)
        except ValueError:
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {text!r}") from None
        if colon and not number.isdigit():
            raise ValueError(f"device must be cpu, cuda, cuda:N or auto, got {text!r}")
        return cls(kind, int(number) if colon else None)

    def __str__(self) -> str:
        return self.kind.value if self.index is None else f"{self.kind.value}:{self.index}"


class SplitMode(Choice):
    AUTO = "auto"      # the planner measures the link, the edge and this workstation, and chooses
    LOCAL = "local"    # every stage here
    EDGE = "edge"      # the preprocessed image to the edge
    MANUAL = "manual"  # a cut per model, as given


SPLIT_SYNTAX = "local, edge, auto, K (both models) or detector:K,classifier:K"


@dataclass(frozen=True)
class SplitPolicy:
    """Where the models are cut: a mode, and for MANUAL a cut per model (a model not named runs here)."""

    mode: SplitMode = SplitMode.AUTO
    cuts: Mapping[ModelKind, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.mode is SplitMode.MANUAL) != bool(self.cuts):
            raise ValueError("a manual split names the cut of each model it cuts; the other modes name none")
        if negative := [f"{kind.value} {cut}" for kind, cut in self.cuts.items() if cut < 0]:
            raise ValueError(f"cuts are never negative, got {', '.join(negative)}")
        object.__setattr__(self, "cuts", MappingProxyType({ModelKind(k): int(v) for k, v in self.cuts.items()}))

    @classmethod
    def manual(cls, **cuts: int) -> SplitPolicy:
        return cls(SplitMode.MANUAL, {ModelKind(name): cut for name, cut in cuts.items()})

    @classmethod
    def parse(cls, text: str) -> SplitPolicy:
        """`local`, `edge`, `auto`, `K` (both models) or `detector:K,classifier:K`; ValueError otherwise."""
        words = text.strip().lower()
        if words in {mode.value for mode in SplitMode} - {SplitMode.MANUAL.value}:
            return cls(SplitMode(words))
        if words.isdigit():
            return cls(SplitMode.MANUAL, dict.fromkeys(ModelKind, int(words)))
        cuts = {}
        for item in words.split(","):
            name, _, value = (part.strip() for part in item.partition(":"))
            if name not in {kind.value for kind in ModelKind} or not value.isdigit():
                raise ValueError(f"split {text!r}: expected {SPLIT_SYNTAX}")
            cuts[ModelKind(name)] = int(value)
        return cls(SplitMode.MANUAL, cuts)

    def __str__(self) -> str:
        if self.mode is not SplitMode.MANUAL:
            return self.mode.value
        return ",".join(f"{kind.value}:{cut}" for kind, cut in self.cuts.items())

    def __hash__(self) -> int:
        return hash((self.mode, tuple(sorted(self.cuts.items()))))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SplitPolicy) and self.mode is other.mode
                and dict(self.cuts) == dict(other.cuts))
