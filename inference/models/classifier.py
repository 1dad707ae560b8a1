"""CheXNet: DenseNet-121 (growth 32, blocks 6/12/24/16, bottleneck 4) + Linear(1024, 14) + sigmoid.

Module names follow torchvision's DenseNet (`features.denseblock1.denselayer1.norm1`, …,
`classifier`), so torchvision-layout state dicts load as they are. Every block and transition
boundary is a one-tensor cut.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from inference.models.settings import MODEL_SETTINGS
from inference.models.stages import INPUT, StagedModel, chain

_C = MODEL_SETTINGS["classifier"]
CHESTXRAY14: tuple[str, ...] = tuple(_C["classes"])  # the 14 findings shown, in ChestX-ray14 order
GROWTH, BLOCKS, BOTTLENECK, STEM = 32, (6, 12, 24, 16), 4, 64


@dataclass(frozen=True)
class ClassifierConfig:
    classes: tuple[str, ...] = CHESTXRAY14   # names of the model's outputs, in output order
    input_size: int = _C["input_size"]
    resize: int = _C["resize"]
    ten_crop: bool = _C["ten_crop"]
    in_channels: int = 3                     # 1 for torchxrayvision weights
    normalisation: str = "imagenet"          # "imagenet" (CheXNet) or "xrv" (torchxrayvision: ±1024)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("the classifier needs at least one output class")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.normalisation not in ("imagenet", "xrv"):
            raise ValueError(f"unknown normalisation {self.normalisation!r}")
        if self.input_size < 32 or self.resize < self.input_size:
            raise ValueError(f"need 32 <= input_size <= resize, got {self.input_size}, {self.resize}")


class _DenseLayer(nn.Module):
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(c_in, BOTTLENECK * GROWTH, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(BOTTLENECK * GROWTH)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(BOTTLENECK * GROWTH, GROWTH, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(y)))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, c_in: int) -> None:
        super().__init__({f"denselayer{i + 1}": _DenseLayer(c_in + i * GROWTH) for i in range(layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(OrderedDict(norm=nn.BatchNorm2d(c_in), relu=nn.ReLU(inplace=True),
                                     conv=nn.Conv2d(c_in, c_out, 1, bias=False), pool=nn.AvgPool2d(2, 2)))


class CheXNet(StagedModel):
    """Input [B, C, S, S] normalised; output [B, classes] probabilities. Stage `features` gives the CAM maps."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        features: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(config.in_channels, STEM, 7, 2, 3, bias=False),
            norm0=nn.BatchNorm2d(STEM), relu0=nn.ReLU(inplace=True), pool0=nn.MaxPool2d(3, 2, 1))
        channels = STEM
        for number, layers in enumerate(BLOCKS, start=1):
            features[f"denseblock{number}"] = _DenseBlock(layers, channels)
            channels += layers * GROWTH
            if number < len(BLOCKS):
                features[f"transition{number}"] = _Transition(channels, channels // 2)
                channels //= 2
        features["norm5"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(features)
        self.classifier = nn.Linear(channels, len(config.classes))

        names = ["stem"] + [n for n in features if n.startswith(("denseblock", "transition"))] + ["features", "head"]
        runs = [self._stem] + [getattr(self.features, n) for n in names[1:-2]] + [self._last_features, self._head]
        self.stages = chain(names, runs)
        self.features_stage = names.index("features")  # its output is what the heat maps weigh

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("conv0", "norm0", "relu0", "pool0"):  # by name: attribute lookup types them Tensor | Module
            x = self.features.get_submodule(name)(x)
        return x

    def _last_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features.get_submodule("norm5")(x))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return torch.sigmoid(self.classifier(pooled))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.run_stages({INPUT: images}, 0, self.stage_count)[self.stage_count - 1]

    def class_activation_maps(self, features: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """CheXNet's localisation: last dense features weighted by each classifier row → [B, classes, h, w].
        `weight`: another head's rows, for features of a pruned copy (fewer channels)."""
        return torch.einsum("bchw,kc->bkhw", features, self.classifier.weight if weight is None else weight)
