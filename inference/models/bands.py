"""A spatial split of a model's first stages (EdgeDI, DeepThings): stages [0, cut) run on horizontal bands of
the input, each band on another device, and the tensors crossing the cut are joined from the bands.

Each band carries a halo — the rows above and below it that the receptive field of stages [0, cut) reaches —
so the rows it keeps are exactly those of the unsplit model (a convolution's zero padding at a band's inner
edge only reaches into the halo, which is cropped). Band edges lie on multiples of the largest stride before
the cut, so every strided layer samples the rows it samples in the whole image. All bands have one height
(one served part runs any of them); a band at the image's top or bottom has its halo on one side only.

The halo is measured, not derived from a layer list: the gradient of one row of each crossing tensor with
respect to the input (in float64) is non-zero exactly on the rows that row depends on.
"""

from __future__ import annotations

import copy
import math
import weakref
from dataclasses import dataclass

import torch

from inference.models.stages import INPUT, StagedModel


@dataclass(frozen=True)
class BandSplit:
    """Stages [0, cut) of a model with a square input of `size` rows, run on `count` bands."""

    cut: int
    count: int
    size: int    # input rows
    halo: int    # rows each band reaches beyond the rows it keeps (a multiple of `align`)
    align: int   # band edges lie on multiples of this: the largest stride before the cut

    def __post_init__(self) -> None:
        check_bands(self.size, self.count, self.align)

    @property
    def kept(self) -> list[tuple[int, int]]:
        """The input rows each band's results are kept for: the image in `count` equal parts."""
        step = self.size // self.count
        return [(i * step, (i + 1) * step) for i in range(self.count)]

    @property
    def rows(self) -> int:
        """The height of every band: its kept rows and the halo on each side that lies inside the image."""
        return max(min(stop + self.halo, self.size) - max(start - self.halo, 0) for start, stop in self.kept)

    @property
    def starts(self) -> list[int]:
        """Each band's first input row."""
        return [min(max(start - self.halo, 0), self.size - self.rows) for start, _ in self.kept]

    @property
    def band_share(self) -> float:
        """Each band's compute as a share of the unsplit stages [0, cut): the halo's overhead on top of 1/count."""
        return self.rows / self.size

    def bands(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The input [B, C, size, W] cut into its bands (views)."""
        return [image[:, :, start:start + self.rows] for start in self.starts]

    def join(self, parts: list[dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
        """The tensors crossing the cut, from each band's own (same keys, same order as the bands)."""
        joined = {}
        for index in parts[0]:
            pieces = []
            for (start, stop), band_start, part in zip(self.kept, self.starts, parts, strict=True):
                tensor = part[index]
                stride = self.rows // tensor.shape[2]
                pieces.append(tensor[:, :, (start - band_start) // stride:(stop - band_start) // stride])
            joined[index] = torch.cat(pieces, dim=2)
        return joined


def check_bands(size: int, count: int, align: int) -> None:
    """ValueError unless `size` rows split into `count` (≥ 2) equal bands whose edges lie on multiples of `align`."""
    if count < 2:
        raise ValueError(f"a spatial split needs at least two bands, got {count}")
    if size % (count * align):
        raise ValueError(f"{size} rows do not split into {count} bands on multiples of {align}")


def band_split(model: StagedModel, cut: int, count: int, size: int) -> BandSplit | None:
    """The split of stages [0, cut) into `count` bands of a `size`-row input, or None when it cannot help or be
    trusted: the cut is the whole model or none of it, the size does not divide, the halo makes a band as tall
    as the image, or the joined bands differ from the unsplit stages on a sample image (a dependence the
    gradient did not show, e.g. through a max-pool). Worked out once per model (kept while the model is)."""
    if not 0 < cut < model.stage_count:
        return None
    known = _SPLITS.setdefault(model, {})
    if (cut, count, size) not in known:
        known[cut, count, size] = _checked_split(model, cut, count, size)
    return known[cut, count, size]


_SPLITS: weakref.WeakKeyDictionary[StagedModel, dict[tuple[int, int, int], BandSplit | None]] = \
    weakref.WeakKeyDictionary()
AGREEMENT = 1e-5  # joined bands against the unsplit stages, relative to each tensor's largest value


def _checked_split(model: StagedModel, cut: int, count: int, size: int) -> BandSplit | None:
    halo, align = _measured_halo(model, cut, size)
    if size % (count * align):
        return None
    split = BandSplit(cut, count, size, math.ceil(halo / align) * align, align)
    if split.rows >= size:
        return None
    channels = next(p for p in model.parameters() if p.dim() == 4).shape[1]
    device = next(model.parameters()).device
    image = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(5)).to(device)
    with torch.inference_mode():
        whole = model.run_stages({INPUT: image}, 0, cut)
        joined = split.join([model.run_stages({INPUT: band}, 0, cut) for band in split.bands(image)])
    agree = all(float((joined[i] - t).abs().max()) <= AGREEMENT * max(float(t.abs().max()), 1e-30)
                for i, t in whole.items())
    return split if agree else None


def _measured_halo(model: StagedModel, cut: int, size: int) -> tuple[int, int]:
    """(rows the receptive field of stages [0, cut) reaches beyond a row, largest stride before the cut)."""
    model = copy.deepcopy(model).to(torch.float64).to("cpu").eval()
    channels = next(p for p in model.parameters() if p.dim() == 4).shape[1]
    image = torch.rand(1, channels, size, size, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        outputs = model.run_stages({INPUT: image}, 0, cut, keep=range(cut))
        align = max(size // tensor.shape[2] for tensor in outputs.values())  # every stage's, not only those crossing
        halo = 0
        for index in model.crossing(cut):
            tensor = outputs[index]
            stride = size // tensor.shape[2]
            row = tensor.shape[2] // 2
            (gradient,) = torch.autograd.grad(tensor[:, :, row].abs().sum(), image, retain_graph=True)
            reached = torch.nonzero(gradient.abs().sum(dim=(0, 1, 3))).flatten()
            first, last = int(reached.min()), int(reached.max())
            halo = max(halo, row * stride - first, last - (row * stride + stride - 1))
    return halo, align
