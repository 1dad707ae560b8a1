"""EdgeDI's spatial split with halo exchange: each device holds one horizontal band of the image through the
whole detector, and before every layer whose kernel reaches beyond its row (a 3×3 convolution, the SPP's
max-pools) the devices swap the rows it reaches across their bands' edges. So each device computes its own rows
and nothing twice — unlike a band that carries its whole receptive field as halo (inference/models/bands.py),
which grows to the image's height within a few stages.

In the band's program every such layer is preceded by the operator `mededge::halo_rows`, which pads its input
along the rows with the neighbours' rows (or the layer's own padding at the image's top and bottom: zeros for a
convolution, −∞ for a max-pool); the layer then runs with no row padding. Band edges lie on multiples of the
detector's largest stride, so every strided layer samples the rows it samples in the whole image, and the joined
heads equal the unsplit model's. The operator asks the `Neighbours` this thread runs for: here, other threads
(`LocalNeighbours`); on an edge server, the edges holding the adjacent bands (the part's own implementation,
inference/resources/triton/python_model.py).

A band stops before the heads' decoding: it returns its rows of the raw head maps (the 1×1 convolutions'
outputs, a few channels), which are joined and decoded as the whole image's (`Detect.decode`).
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from inference.config import ModelKind, WireFormat
from inference.models.bands import check_bands
from inference.models.detector import YoloDetector
from inference.models.parts import (
    FP32_TOLERANCE,
    EdgePartSpec,
    TensorSpec,
    identity_of,
    part_difference,
    sample_input,
)
from inference.models.stages import INPUT

OPERATOR = "mededge::halo_rows"  # the edge registers the same schema (python_model.py)
SWAP_TIMEOUT_S = 60.0  # a band waits this long for a neighbour's rows (one that failed sends none)


class Neighbours(Protocol):
    """How a band trades rows with the bands above and below it: once per layer that reaches beyond its row, in
    the same order on every band. `first`/`last` are this band's top and bottom rows as far as the layer
    reaches; returned: the band above's last rows and the band below's first rows, None at the image's edge."""

    def swap(self, first: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]: ...


_RUNNING = threading.local()  # the Neighbours of the band this thread runs


@contextlib.contextmanager
def trading_with(neighbours: Neighbours) -> Iterator[None]:
    """Run a band's program in this block: its `mededge::halo_rows` trade with `neighbours`."""
    _RUNNING.neighbours = neighbours
    try:
        yield
    finally:
        _RUNNING.neighbours = None


@torch.library.custom_op(OPERATOR, mutates_args=())
def halo_rows(x: torch.Tensor, reach: int, edge: float) -> torch.Tensor:
    """`x` with `reach` rows above and below from the neighbouring bands, or filled with `edge` at the image's."""
    neighbours: Neighbours | None = getattr(_RUNNING, "neighbours", None)
    if neighbours is None:
        raise RuntimeError("a band of a halo split runs outside trading_with(neighbours)")
    first, last = x[:, :, :reach], x[:, :, -reach:]
    above, below = neighbours.swap(first.contiguous(), last.contiguous())
    return torch.cat([above if above is not None else torch.full_like(first, edge), x,
                      below if below is not None else torch.full_like(last, edge)], dim=2)


@halo_rows.register_fake
def _(x: torch.Tensor, reach: int, edge: float) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1], x.shape[2] + 2 * reach, x.shape[3])


@dataclass(frozen=True)
class HaloSplit:
    """A `size`-row input in `count` bands of equal height, each edge on a multiple of `align` rows."""

    size: int
    count: int
    align: int

    def __post_init__(self) -> None:
        check_bands(self.size, self.count, self.align)

    @property
    def rows(self) -> int:
        return self.size // self.count

    def bands(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [band.contiguous() for band in image.split(self.rows, dim=2)]

    def join(self, parts: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Each head map whole, from every band's rows of it (in band order)."""
        return [torch.cat(maps, dim=2) for maps in zip(*parts, strict=True)]


class HaloBand(nn.Module):
    """The detector as one band runs it: every layer that reaches beyond its row takes its rows from
    `mededge::halo_rows`; input a band [B, 3, rows, W], output its rows of the raw head maps."""

    def __init__(self, detector: YoloDetector) -> None:
        super().__init__()
        self.detector = copy.deepcopy(detector).eval()
        self.swapping: dict[str, _Swap] = {}  # the layers that swap rows, by name
        size = detector.config.input_size
        strides = _input_strides(self.detector, size)
        for name, module in list(self.detector.named_modules()):
            if reach := _rows_reached(module):
                parent, _, attribute = name.rpartition(".")
                setattr(self.detector.get_submodule(parent), attribute, _Padded(module, reach))
                self.swapping[name] = _Swap(reach, strides[name])

    @property
    def exchanges(self) -> int:
        """How many times the bands swap rows in one run."""
        return len(self.swapping)

    def split(self, count: int) -> HaloSplit:
        """The input in `count` bands; ValueError where a band is too thin for a layer (its neighbour must hold
        every row the layer reaches: the SPP's widest pool reaches 6 rows at the largest stride)."""
        config = self.detector.config
        split = HaloSplit(config.input_size, count, config.max_stride)
        thin = [name for name, swap in self.swapping.items() if split.rows // swap.stride < swap.rows]
        if thin:
            swap = self.swapping[thin[0]]
            raise ValueError(f"{count} bands of {split.rows} rows are too thin for the detector: its layer "
                             f"{thin[0]} reaches {swap.rows} rows at stride {swap.stride}")
        return split

    def forward(self, band: torch.Tensor) -> list[torch.Tensor]:
        detector = self.detector
        last = detector.stage_count - 1
        tensors = detector.run_stages({INPUT: band}, 0, last)
        sources = detector.stages[last].sources
        return [conv(tensors[source]) for conv, source in zip(detector.detect.m, sources, strict=True)]

    def decode(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The whole image's detections from its joined head maps, as the detector's forward returns them."""
        return self.detector.detect.decode(maps)


class _Swap(NamedTuple):
    rows: int    # rows its kernel reaches each way
    stride: int  # image rows per row of its input


class _Padded(nn.Module):
    """A layer whose rows come padded by the neighbours: it keeps only its column padding."""

    def __init__(self, layer: nn.Conv2d | nn.MaxPool2d, reach: int) -> None:
        super().__init__()
        self.layer = layer  # (its weights keep their place in the state dict, one level down)
        self.reach = reach
        self.edge = float("-inf") if isinstance(layer, nn.MaxPool2d) else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = halo_rows(x, self.reach, self.edge)
        layer = self.layer
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(x, layer.weight, layer.bias, layer.stride, (0, _columns(layer.padding)), layer.dilation,
                            layer.groups)
        return F.max_pool2d(x, layer.kernel_size, layer.stride, (0, _columns(layer.padding)), layer.dilation,
                            layer.ceil_mode)


def _columns(padding) -> int:
    return int(padding[1] if isinstance(padding, tuple) else padding)


def _rows_reached(module: nn.Module) -> int:
    if not isinstance(module, nn.Conv2d | nn.MaxPool2d):
        return 0
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":  # the exchange fills zeros at the image's edge
        raise ValueError(f"a convolution padded by {module.padding_mode!r} cannot run on bands")
    padding = module.padding
    if isinstance(padding, str):
        raise ValueError(f"{type(module).__name__} with padding={padding!r} cannot run on bands")
    return int(padding[0] if isinstance(padding, tuple) else padding)


def _input_strides(detector: YoloDetector, size: int) -> dict[str, int]:
    """Each layer's input stride (image rows per row of its input), seen on an image one stride wide."""
    strides: dict[str, int] = {}

    def seen(name: str, args: tuple) -> None:
        strides[name] = size // args[0].shape[2]

    hooks = [module.register_forward_pre_hook(lambda _, args, name=name: seen(name, args))
             for name, module in detector.named_modules() if _rows_reached(module)]
    try:
        with torch.inference_mode():
            detector(torch.zeros(1, 3, size, detector.config.max_stride))
    finally:
        for hook in hooks:
            hook.remove()
    return strides


class LocalNeighbours:
    """Bands run by threads of this process, trading rows through queues: `of(i)` is band i's side."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._mail = {(a, b): queue.Queue[torch.Tensor]() for a in range(count) for b in (a - 1, a + 1)
                      if 0 <= b < count}

    def of(self, index: int) -> Neighbours:
        mail, count = self._mail, self.count

        class _Side:
            def swap(self, first, last):
                if index > 0:
                    mail[index, index - 1].put(first)
                if index < count - 1:
                    mail[index, index + 1].put(last)
                above = mail[index - 1, index].get(timeout=SWAP_TIMEOUT_S) if index > 0 else None
                below = mail[index + 1, index].get(timeout=SWAP_TIMEOUT_S) if index < count - 1 else None
                return above, below

        return _Side()


def run_bands_here(band: HaloBand, image: torch.Tensor, count: int, program: nn.Module | None = None) -> torch.Tensor:
    """The detections of `image` from `count` bands, each run by a thread of this process with `band` (or its
    exported `program`): equal to the whole detector's."""
    split = band.split(count)
    neighbours = LocalNeighbours(count)
    maps: list[list[torch.Tensor] | BaseException | None] = [None] * count

    def run(index: int, rows: torch.Tensor) -> None:
        try:
            with torch.inference_mode(), trading_with(neighbours.of(index)):
                maps[index] = list((program or band)(rows))
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the caller's thread
            maps[index] = exc

    threads = [threading.Thread(target=run, args=(i, rows), daemon=True) for i, rows in enumerate(split.bands(image))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in maps:
        if isinstance(result, BaseException):
            raise result
    with torch.inference_mode():
        return band.decode(split.join([m for m in maps if isinstance(m, list)]))


HEAD_MAPS = ("head0", "head1", "head2")  # a halo part's outputs: its band's rows of each level's raw map


def halo_part_spec(band: HaloBand, count: int, weights: str) -> EdgePartSpec:
    """The spec of the detector's halo part for `count` bands: a band in (`image` [3, rows, size], FP32), its rows
    of the raw head maps out (FP32). ValueError where the detector cannot run on that many bands."""
    split = band.split(count)
    sample = sample_input(band.detector)[:, :, :split.rows]
    with torch.inference_mode(), trading_with(_Alone()):
        maps = band(sample)
    return EdgePartSpec(ModelKind.DETECTOR, 0, WireFormat.FP32, (TensorSpec("image", tuple(sample.shape[1:]), "FP32"),),
                        tuple(TensorSpec(name, tuple(m.shape[1:]), "FP32") for name, m in zip(HEAD_MAPS, maps,
                                                                                             strict=True)),
                        identity_of(band.detector, weights), halo_bands=count)


def export_halo_program(detector: YoloDetector, spec: EdgePartSpec, path: Path) -> None:
    """Write the halo part as a PyTorch exported program (one band of one image, `mededge::halo_rows` before each
    layer that reaches beyond its row), checked: its bands run here, joined and decoded, against the detector's
    forward on a sample; raise if they differ."""
    band = HaloBand(detector)
    image = sample_input(detector)
    split = band.split(spec.halo_bands)
    with torch.no_grad(), warnings.catch_warnings():
        # tensors that share storage warn on saving and loading (harmless for weights on the CPU)
        warnings.filterwarnings("ignore", "No complete tensor found in the group", UserWarning)
        program = torch.export.export(band, (split.bands(image)[0],))
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
    with torch.inference_mode():
        expected = detector(image)
    got = run_bands_here(band, image, spec.halo_bands, program=loaded)
    difference = part_difference(ModelKind.DETECTOR, "output", expected.numpy(), got.numpy(),
                                 detector.config.input_size)
    if difference > FP32_TOLERANCE:
        raise RuntimeError(f"{spec.name}: the exported program's bands differ from PyTorch by {difference:.2e}")


class _Alone:
    """A band with no neighbours (a shape's worth of rows: the part's spec is measured on it)."""

    def swap(self, first, last):
        return torch.zeros_like(last), torch.zeros_like(first)
