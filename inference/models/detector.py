"""Scaled-YOLOv4 opacity detector (YOLOv4-P5/P6/P7) built from its published layer list.

Each yaml row is one stage and one `model.{i}` entry, so the state-dict keys match checkpoints
trained with the original code, and every layer boundary is a cut point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import yaml
from torch import nn

from inference.models import yolo_layers as L
from inference.models.settings import MODEL_SETTINGS, RESOURCES
from inference.models.stages import INPUT, Stage, StagedModel

ARCHITECTURES = ("yolov4-p5", "yolov4-p6", "yolov4-p7")
_BLOCKS = {"Conv": L.Conv, "BottleneckCSP": L.BottleneckCSP, "BottleneckCSP2": L.BottleneckCSP2,
           "SPPCSP": L.SPPCSP}


_D = MODEL_SETTINGS["detector"]


@dataclass(frozen=True)
class DetectorConfig:
    architecture: str = _D["architecture"]
    classes: tuple[str, ...] = tuple(_D["classes"])
    input_size: int = _D["input_size"]
    confidence: float = _D["confidence"]
    iou: float = _D["iou"]
    max_detections: int = _D["max_detections"]
    width_multiple: float | None = None  # override the yaml's channel/depth multiples: a scaled variant
    depth_multiple: float | None = None  # (the tests use a narrow, shallow P5 to keep every cut cheap)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown detector architecture {self.architecture!r}; one of {ARCHITECTURES}")
        if not self.classes:
            raise ValueError("the detector needs at least one class")
        stride = self.max_stride
        if self.input_size < stride or self.input_size % stride:
            raise ValueError(f"{self.architecture} input size must be a multiple of {stride}, got {self.input_size}")
        if not (0 < self.confidence < 1 and 0 < self.iou < 1):
            raise ValueError(f"confidence and IoU thresholds must lie in (0, 1), got {self.confidence}, {self.iou}")

    @property
    def max_stride(self) -> int:
        return {"yolov4-p5": 32, "yolov4-p6": 64, "yolov4-p7": 128}[self.architecture]


def _channels(value: int, width: float) -> int:
    return int(math.ceil(value * width / 8) * 8)  # the original's make_divisible(c * width, 8)


def _absolute(source: int, index: int) -> int:
    return index + source if source < 0 else source


class YoloDetector(StagedModel):
    """Input [B, 3, S, S] in [0, 1]; output [B, N, 5 + classes]: cx, cy, w, h (pixels), objectness, scores."""

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        super().__init__()
        self.config = config
        spec = yaml.safe_load((RESOURCES / f"{config.architecture}.yaml").read_text())
        width = float(config.width_multiple or spec["width_multiple"])
        depth = float(config.depth_multiple or spec["depth_multiple"])
        channels: dict[int, int] = {INPUT: 3}
        strides: dict[int, int] = {INPUT: 1}
        modules: list[nn.Module] = []
        self.stages = []
        for index, (source, number, kind, args) in enumerate(spec["layers"]):
            sources = tuple(_absolute(s, index) for s in (source if isinstance(source, list) else [source]))
            number = max(round(number * depth), 1) if number > 1 else number
            first = sources[0]
            if kind in _BLOCKS:
                out = _channels(args[0], width)
                extra = {"Conv": args[1:], "SPPCSP": []}.get(kind, [number])
                module = _BLOCKS[kind](channels[first], out, *extra)
                stride = strides[first] * (args[2] if kind == "Conv" and len(args) > 2 else 1)
            elif kind == "Upsample":
                module, out, stride = L.Upsample(args[0]), channels[first], strides[first] // args[0]
            elif kind == "Concat":
                module, out, stride = L.Concat(args[0]), sum(channels[s] for s in sources), strides[first]
            elif kind == "Detect":
                module = L.Detect(len(config.classes), spec["anchors"], [channels[s] for s in sources],
                                  [strides[s] for s in sources])
                out, stride = 0, 0
            else:
                raise ValueError(f"{config.architecture}: unknown module {kind!r} in layer {index}")
            channels[index], strides[index] = out, stride
            modules.append(module)
            self.stages.append(Stage(f"{index}:{kind}", sources, partial(_call, module),
                                     many_inputs=len(sources) > 1))
        self.model = nn.ModuleList(modules)  # keys model.{i}.…, as in trained checkpoints
        self._initialise_like_original()

    @property
    def detect(self) -> L.Detect:
        head = self.model[-1]
        if not isinstance(head, L.Detect):  # the layer list ends with its Detect row
            raise TypeError(f"{self.config.architecture}: the last layer is {type(head).__name__}, not Detect")
        return head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run_stages({INPUT: images}, 0, self.stage_count)[self.stage_count - 1]

    def _initialise_like_original(self) -> None:
        """Detect biases as the original initialises them (few objects per image); used for demo weights."""
        detect = self.detect
        with torch.no_grad():
            for conv, stride in zip(detect.m, detect.stride.tolist(), strict=True):
                assert isinstance(conv, nn.Conv2d) and conv.bias is not None  # Detect's 1×1 convs, with biases
                bias = conv.bias.view(detect.per_level, -1)
                bias[:, 4] += math.log(8 / (640 / stride) ** 2)
                bias[:, 5:] += math.log(0.6 / (detect.classes - 0.99))


def _call(module: nn.Module, x):
    return module(x)
