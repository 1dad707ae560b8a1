"""Scaled-YOLOv4 building blocks, with the attribute names of the original implementation.

The names (`conv`, `bn`, `act`, `cv1`…`cv7`, `m`) are what a trained checkpoint's keys use,
so they must not change. Mish is torch's own (the original used the MishCuda extension).
"""

from __future__ import annotations

import torch
from torch import nn

BN_EPS = 1e-3  # the original sets eps=1e-3, momentum=0.03 on every BatchNorm2d
BN_MOMENTUM = 0.03


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv(nn.Module):
    """Convolution + BatchNorm + Mish, 'same' padding."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = _bn(c_out)
        self.act = nn.Mish() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c_in: int, c_out: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c_in, c_out, 1)
        self.cv2 = Conv(c_out, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    """Cross-stage-partial block of the backbone: a residual branch and a plain 1×1 branch."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.cv3 = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.cv4 = Conv(2 * hidden, c_out, 1)
        self.bn = _bn(2 * hidden)
        self.act = nn.Mish()
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut=True) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), dim=1))))


class BottleneckCSP2(nn.Module):
    """Cross-stage-partial block of the neck (no residual in its bottlenecks)."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        hidden = c_out
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = nn.Conv2d(hidden, hidden, 1, bias=False)
        self.cv3 = Conv(2 * hidden, c_out, 1)
        self.bn = _bn(2 * hidden)
        self.act = nn.Mish()
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut=False) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv1(x)
        y1 = self.m(x1)
        y2 = self.cv2(x1)
        return self.cv3(self.act(self.bn(torch.cat((y1, y2), dim=1))))


class SPPCSP(nn.Module):
    """Spatial pyramid pooling (5, 9, 13) inside a cross-stage-partial block."""

    def __init__(self, c_in: int, c_out: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c_out
        self.cv1 = Conv(c_in, hidden, 1)
        self.cv2 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.cv3 = Conv(hidden, hidden, 3)
        self.cv4 = Conv(hidden, hidden, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernels)
        self.cv5 = Conv((len(kernels) + 1) * hidden, hidden, 1)
        self.cv6 = Conv(hidden, hidden, 3)
        self.bn = _bn(2 * hidden)
        self.act = nn.Mish()
        self.cv7 = Conv(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], dim=1)))
        y2 = self.cv2(x)
        return self.cv7(self.act(self.bn(torch.cat((y1, y2), dim=1))))


class Upsample(nn.Module):
    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=float(self.factor), mode="nearest")


class Concat(nn.Module):
    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(xs, self.dim)


class Detect(nn.Module):
    """YOLO head: a 1×1 conv per level, decoded to [B, N, 5 + classes] in input pixels.

    xy = (σ·2 − 0.5 + grid)·stride, wh = (σ·2)²·anchor; objectness and class scores are σ.
    Buffers `anchors` (in stride units) and `anchor_grid` (pixels) are named as in trained checkpoints.
    """

    # the buffers registered below (nn.Module's attribute lookup types them as Tensor | Module)
    stride: torch.Tensor
    anchors: torch.Tensor
    anchor_grid: torch.Tensor

    def __init__(self, classes: int, anchors: list[list[float]], channels: list[int], strides: list[int]) -> None:
        super().__init__()
        self.classes = classes
        self.outputs = classes + 5
        self.levels = len(anchors)
        self.per_level = len(anchors[0]) // 2
        pixels = torch.tensor(anchors, dtype=torch.float32).view(self.levels, -1, 2)
        stride = torch.tensor(strides, dtype=torch.float32)
        self.register_buffer("stride", stride, persistent=False)
        self.register_buffer("anchors", pixels / stride.view(-1, 1, 1))
        self.register_buffer("anchor_grid", pixels.clone().view(self.levels, 1, -1, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.outputs * self.per_level, 1) for c in channels)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        return self.decode([conv(x) for conv, x in zip(self.m, xs, strict=True)])

    def decode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The raw maps of the 1×1 convolutions, one per level, as boxes in input pixels."""
        decoded = []
        for level, x in enumerate(maps):
            batch, _, ny, nx = x.shape
            y = x.view(batch, self.per_level, self.outputs, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
            gy, gx = torch.meshgrid(torch.arange(ny, device=x.device, dtype=y.dtype),
                                    torch.arange(nx, device=x.device, dtype=y.dtype), indexing="ij")
            grid = torch.stack((gx, gy), dim=2).view(1, 1, ny, nx, 2)
            xy = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.stride[level]
            wh = (y[..., 2:4] * 2.0) ** 2 * self.anchor_grid[level]
            decoded.append(torch.cat((xy, wh, y[..., 4:]), dim=-1).view(batch, -1, self.outputs))
        return torch.cat(decoded, dim=1)
