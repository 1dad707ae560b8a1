"""Pruned copies of a model, made on the site from its own unlabelled radiographs (`models prune`).

Structured (the `pruned` runtime): whole channels are removed — torch-pruning does the dependency bookkeeping
(a DenseNet's concatenations, a CSP block's shortcuts) — ranked by the L2 magnitude of their weights, except the
layers whose outputs the product reads (CheXNet's 14 findings, the detector's head). The pruned copy then
learns to answer like the unpruned one (distillation: the unpruned model is the teacher, so no labels are
needed) on the radiographs not held back, and is kept only if it passes the fidelity gate against the unpruned
model on the held-back ones. It is exported as ONNX (checked against its PyTorch self) and run by OpenVINO FP32:
the fastest FP32 runtime measured here for the detector, on a par with onnxruntime for CheXNet
(docs/benchmarks.md).

Unstructured (size only, as the LibreHealth low-power work did): the smallest weights of every convolution
set to zero, sparsity rising from 50 % to the target with a polynomial schedule while distilling, then INT8
weights (onnxruntime dynamic); zeros do not make a CPU faster, only the file smaller once compressed, which is
what it reports.

Batch normalisation keeps its statistics while distilling (eval mode): a few radiographs per step would
otherwise overwrite what the unpruned model learned from many.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.config import ModelKind, WireFormat
from inference.models.classifier import CheXNet
from inference.models.detector import YoloDetector
from inference.models.parts import export_part, kind_of, part_spec
from inference.models.stages import StagedModel
from inference.runtimes.fidelity import split_held_back


@dataclass(frozen=True)
class Distillation:
    steps: int = 200     # optimiser steps (CheXNet at 50 %: ~150 bring the demo weights within the gate)
    batch: int = 4       # inputs per step
    learning_rate: float = 3e-4  # Adam's (a trial on the demo CheXNet at 50 %: 150 steps reached the gate)
    seed: int = 0        # which inputs, flips and order: a build can be repeated


@dataclass(frozen=True)
class PruneRecord:
    """What a pruned build is, kept beside it (and printed by `models prune`)."""

    file: str
    ratio: float              # of each prunable layer's channels removed
    parameters: int           # after
    parameters_before: int
    training_images: int
    held_back_images: int
    steps: int
    loss_first: float         # distillation loss over the first and the last tenth of the steps
    loss_last: float


def _outputs_read(model: StagedModel) -> list[nn.Module]:
    """The layers whose outputs the product reads: their output channels stay."""
    if isinstance(model, CheXNet):
        return [model.classifier]
    if isinstance(model, YoloDetector):
        return list(model.detect.m)
    raise TypeError(f"cannot prune a {type(model).__name__}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune_channels(model: StagedModel, ratio: float, example: torch.Tensor) -> StagedModel:
    """A copy of `model` with `ratio` of each prunable layer's channels removed (L2 magnitude)."""
    import torch_pruning

    if not 0 < ratio < 1:
        raise ValueError(f"a pruning ratio is between 0 and 1 (exclusive), got {ratio}")
    student = copy.deepcopy(model).eval()
    read = {id(module) for module in _outputs_read(model)}
    ignored = [student.get_submodule(name) for name, module in model.named_modules() if id(module) in read]
    pruner = torch_pruning.pruner.MetaPruner(
        student, example, importance=torch_pruning.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=ignored, round_to=8)  # multiples of 8 channels: what vectorised kernels like
    pruner.step()
    return student


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p, eps=1e-6)


def _loss(kind: ModelKind, student: torch.Tensor, teacher: torch.Tensor, size: int) -> torch.Tensor:
    """How far the student's answers are from the teacher's: scores compared as logits (a probability near 0.5
    moves little for a large change of the network, so its gradient would be weak), boxes in input fractions."""
    if kind is ModelKind.CLASSIFIER:
        return F.mse_loss(_logit(student), _logit(teacher))
    boxes = F.smooth_l1_loss(student[..., :4] / size, teacher[..., :4] / size)  # pixels → fraction of the input
    return boxes + F.mse_loss(_logit(student[..., 4:]), _logit(teacher[..., 4:]))


def distil(student: StagedModel, teacher: StagedModel, inputs: Sequence[np.ndarray], plan: Distillation,
           masks: Callable[[int], None] | None = None, progress: Callable[[str], None] | None = None) -> list[float]:
    """Train `student` to answer like `teacher` on `inputs` (model inputs, [K, C, H, W] each; crops of one
    study are separate samples), randomly mirrored. `masks(step)` is called after every step (the unstructured
    pruning's schedule). Returns the loss of every step."""
    kind, size = kind_of(teacher), inputs[0].shape[-1]
    pool = torch.from_numpy(np.concatenate([np.ascontiguousarray(x, dtype=np.float32) for x in inputs]))
    generator = torch.Generator().manual_seed(plan.seed)
    optimiser = torch.optim.Adam(student.parameters(), lr=plan.learning_rate)
    student.eval()  # batch statistics stay those of the unpruned model (see the module's docstring)
    teacher.eval()
    losses = []
    for step in range(plan.steps):
        chosen = torch.randint(len(pool), (plan.batch,), generator=generator)
        batch = pool[chosen]
        flip = torch.rand(plan.batch, generator=generator) < 0.5
        batch[flip] = batch[flip].flip(-1)
        with torch.no_grad():
            target = teacher(batch)
        with torch.enable_grad():
            loss = _loss(kind, student(batch), target, size)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        if masks is not None:
            masks(step)
        losses.append(float(loss.detach()))
        if progress is not None and (step + 1) % max(1, plan.steps // 10) == 0:
            progress(f"step {step + 1}/{plan.steps}, loss {np.mean(losses[-max(1, plan.steps // 10):]):.4g}")
    return losses


def build_file(fp32: Path, method: str, share: float, inputs: Sequence[np.ndarray], plan: Distillation) -> Path:
    """Where a build of `fp32` by `method` (pruned, sparse) at `share` from `inputs` with `plan` lives."""
    digest = hashlib.sha256(json.dumps(asdict(plan) | {"method": method, "share": share}).encode())
    for x in inputs:
        digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return fp32.with_name(f"{fp32.stem}-{method}{round(share * 100):02d}-{digest.hexdigest()[:12]}.onnx")


def build_pruned(model: StagedModel, weights: str, fp32: Path, ratio: float, inputs: Sequence[np.ndarray],
                 plan: Distillation = Distillation(),
                 progress: Callable[[str], None] | None = None) -> tuple[Path, PruneRecord, list[np.ndarray]]:
    """Prune `model`, distil it on the training share of `inputs`, export it beside `fp32`; returns the file,
    its record and the held-back inputs (for the gate). Reused when the same build exists."""
    training, held_back = split_held_back(inputs, plan.seed)
    target = build_file(fp32, "pruned", ratio, inputs, plan)
    record_path = target.with_suffix(".json")
    if target.exists() and record_path.exists():
        return target, PruneRecord(**json.loads(record_path.read_text())), held_back
    example = torch.from_numpy(np.ascontiguousarray(training[0][:1], dtype=np.float32))
    student = prune_channels(model, ratio, example)
    losses = distil(student, model, training, plan, progress=progress)  # the model itself only answers
    spec = part_spec(student, 0, WireFormat.FP32, f"{weights}+{target.stem}")
    partial = target.with_suffix(".partial.onnx")
    try:
        export_part(student, spec, partial)  # checked against the pruned PyTorch model
        if isinstance(student, CheXNet):  # the heat maps weigh the pruned features by the pruned head
            np.save(target.with_suffix(".cam.npy"), student.classifier.weight.detach().numpy())
        tenth = max(1, len(losses) // 10)
        record = PruneRecord(target.name, ratio, count_parameters(student), count_parameters(model), len(training),
                             len(held_back), plan.steps, float(np.mean(losses[:tenth])),
                             float(np.mean(losses[-tenth:])))
        record_path.write_text(json.dumps(asdict(record)))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target, record, held_back


def cam_weight(path: Path) -> np.ndarray | None:
    """The pruned CheXNet's classifier weights (its heat maps' weights), None for a detector."""
    weight = path.with_suffix(".cam.npy")
    return np.load(weight) if weight.exists() else None


# ---------------------------------------------------------------- unstructured (size only)


def magnitude_masks(model: nn.Module, sparsity: float) -> None:
    """Zero the `sparsity` smallest-magnitude weights of every convolution and linear layer (each its own)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                weight = module.weight
                count = int(sparsity * weight.numel())
                if count:
                    threshold = weight.abs().flatten().kthvalue(count).values
                    weight[weight.abs() <= threshold] = 0.0


def polynomial_sparsity(step: int, steps: int, start: float = 0.5, end: float = 0.8, power: int = 3) -> float:
    """The seeds' schedule: sparsity rising from `start` to `end` with a polynomial decay."""
    done = min(1.0, (step + 1) / max(1, steps))
    return end + (start - end) * (1 - done) ** power


def compressed_size(path: Path) -> int:
    """Bytes of `path` deflate-compressed (level 9): what zeros save on disk or on the wire."""
    return len(zlib.compress(path.read_bytes(), 9))


def sparsity_of(model: nn.Module) -> float:
    zeros = total = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / max(total, 1)


def build_sparse(model: StagedModel, weights: str, fp32: Path, sparsity: float, inputs: Sequence[np.ndarray],
                 plan: Distillation = Distillation(), progress: Callable[[str], None] | None = None
                 ) -> tuple[Path, float, list[np.ndarray]]:
    """Unstructured magnitude pruning to `sparsity` while distilling, exported FP32 beside `fp32`; returns the
    FP32 file (its INT8 build is made by the caller), the sparsity reached and the held-back inputs. Reused
    when the same build exists."""
    if not 0 < sparsity < 1:
        raise ValueError(f"a sparsity is between 0 and 1 (exclusive), got {sparsity}")
    training, held_back = split_held_back(inputs, plan.seed)
    target = build_file(fp32, "sparse", sparsity, inputs, plan)
    record_path = target.with_suffix(".json")
    if target.exists() and record_path.exists():
        return target, json.loads(record_path.read_text())["sparsity"], held_back
    student = copy.deepcopy(model).eval()
    start = min(0.5, sparsity)
    magnitude_masks(student, start)
    distil(student, model, training, plan, progress=progress,
           masks=lambda step: magnitude_masks(student, polynomial_sparsity(step, plan.steps, start, sparsity)))
    export_part(student, part_spec(student, 0, WireFormat.FP32, f"{weights}+{target.stem}"), target)
    reached = sparsity_of(student)
    record_path.write_text(json.dumps({"file": target.name, "sparsity": reached}))
    return target, reached, held_back

