"""Models as ordered stages, so they can be cut: stages [0, k) run here, [k, n) elsewhere.

A stage reads the outputs of earlier stages (or the model input, index -1) and produces one
tensor. The tensors that cross cut k are the outputs of stages before k that a stage at or after
k still reads — one tensor for a plain chain, several where a network has skip connections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

INPUT = -1  # index of the model input among stage outputs


@dataclass(frozen=True)
class Stage:
    name: str
    sources: tuple[int, ...]  # absolute indices of the stage outputs it reads (INPUT = the image)
    run: Callable[..., torch.Tensor]  # called with one tensor, or a list when it reads several
    many_inputs: bool = False  # True when `run` takes a list (Concat, Detect)


class StagedModel(nn.Module):
    """Base of the detector and the classifier: subclasses register their modules and fill `stages`."""

    stages: list[Stage]

    @property
    def stage_count(self) -> int:
        return len(self.stages)

    @property
    def cut_points(self) -> range:
        """0 = before the first stage (full offload) … n = after the last (local only)."""
        return range(self.stage_count + 1)

    def crossing(self, cut: int) -> tuple[int, ...]:
        """Indices of the tensors that cross `cut`, in ascending order."""
        self._check_cut(cut)
        if cut == 0:
            return (INPUT,)
        if cut == self.stage_count:
            return (self.stage_count - 1,)
        needed = {source for stage in self.stages[cut:] for source in stage.sources if source < cut}
        return tuple(sorted(needed))

    def run_stages(self, tensors: dict[int, torch.Tensor], start: int, stop: int,
                   keep: Iterable[int] = (), before_stage: Callable[[], None] | None = None) -> dict[int, torch.Tensor]:
        """Run stages [start, stop) from the tensors crossing `start`; return those crossing `stop`.

        `keep` names extra stage outputs to return as well (e.g. the classifier's last features
        for its heat maps). Tensors no later stage reads are dropped as soon as possible.
        `before_stage` is called before each stage: it may raise to stop (cancellation).
        """
        self._check_cut(start)
        self._check_cut(stop)
        if stop < start:
            raise ValueError(f"stop {stop} is before start {start}")
        missing = [i for i in self.crossing(start) if i not in tensors]
        if missing:
            raise ValueError(f"cut {start} needs tensors {missing}, got {sorted(tensors)}")
        wanted = set(self.crossing(stop)) | set(keep)
        live = dict(tensors)
        last_use = self._last_use()
        for index in range(start, stop):
            if before_stage is not None:
                before_stage()
            stage = self.stages[index]
            inputs = [live[source] for source in stage.sources]
            live[index] = stage.run(inputs if stage.many_inputs else inputs[0])
            for source in stage.sources:
                if last_use.get(source, -2) <= index and source not in wanted:
                    live.pop(source, None)
        return {i: live[i] for i in sorted(wanted) if i in live}

    def _last_use(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for index, stage in enumerate(self.stages):
            for source in stage.sources:
                last[source] = index
        return last

    def _check_cut(self, cut: int) -> None:
        if not 0 <= cut <= self.stage_count:
            raise ValueError(f"cut {cut} is outside 0..{self.stage_count}")


def chain(names: Sequence[str], runs: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> list[Stage]:
    """Stages that each read only the previous stage's output."""
    return [Stage(name, (index - 1,), run) for index, (name, run) in enumerate(zip(names, runs, strict=True))]
