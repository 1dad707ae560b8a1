"""`Findings`: what one analysis of one radiograph produced, and how it was produced."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from inference.config import ModelKind, Runtime, WireFormat
from inference.models.preprocess import CropGeometry

WORKSTATION = "workstation"  # in `ran_on`; an edge server is named by its address
TIMING_PHASES = ("preprocess", "local", "transfer", "edge", "queued", "postprocess", "total")


class Mode(str, enum.Enum):
    LOCAL = "local"                    # every stage ran on the workstation
    DISTRIBUTED = "distributed"        # stages [0, k) here, [k, n) on the edge
    EDGE = "edge"                      # full offload: the preprocessed image went to the edge
    LOCAL_FALLBACK = "local-fallback"  # the edge failed; the remaining stages ran here


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box_xyxy: tuple[float, float, float, float]  # original image pixels

    def __post_init__(self) -> None:
        x1, y1, x2, y2 = self.box_xyxy
        if not (x1 <= x2 and y1 <= y2):
            raise ValueError(f"box must be x1 <= x2, y1 <= y2, got {self.box_xyxy}")
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must lie in [0, 1], got {self.score}")


@dataclass(frozen=True)
class ActivationMaps:
    """CheXNet's coarse class-activation maps (e.g. 7×7 per finding) and the crop they came from.

    Kept small; `upsampled` maps one finding onto the original pixels when it is shown.
    """

    names: tuple[str, ...]
    maps: np.ndarray = field(repr=False)  # [len(names), h, w]
    geometry: CropGeometry

    def upsampled(self, finding: str) -> np.ndarray:
        return self.geometry.heat_map(self.maps[self.names.index(finding)])


@dataclass(frozen=True)
class ModelRun:
    """How one model of an analysis ran: its weights, where it was cut, how its tensors travelled, how long."""

    weights: str                        # "demo" or the SHA-256 of the weights file
    cut: int                            # stages [0, cut) here, [cut, n) on the edge (n: all here)
    runtime: Runtime = Runtime.TORCH    # what ran its stages here (before a cut: an FP32 runtime, else PyTorch)
    wire: WireFormat | None = None      # how its tensors travelled, when it was cut before n
    measured_ms: float = 0.0            # local + transfer + edge (a pipelined series' queueing left out)
    predicted_ms: float | None = None   # the planner's prediction of `measured_ms`, when it planned
    bands: int = 0                      # stages [0, cut) ran on this many bands of the image (a spatial split); at
    #                                     cut 0, the whole model on them, rows swapped between the edges


@dataclass(frozen=True)
class Findings:
    path: str
    detections: tuple[Detection, ...]
    probabilities: dict[str, float]              # only the findings the classifier actually predicts
    models: Mapping[ModelKind, ModelRun]         # how each model ran
    mode: Mode = Mode.LOCAL
    timing_ms: dict[str, float] = field(default_factory=dict)
    fallback_reason: str | None = None
    ran_on: tuple[str, ...] = (WORKSTATION,)   # where the models' stages ran: this workstation, edge servers
    activation_maps: ActivationMaps | None = field(default=None, repr=False, compare=False)

    def heat_map(self, finding: str) -> np.ndarray:
        """The finding's class-activation map on the original image, [rows, cols] in [0, 1]."""
        if self.activation_maps is None:
            raise KeyError("this analysis ran without heat maps")
        return self.activation_maps.upsampled(finding)

    @property
    def demo_weights(self) -> bool:
        return any(run.weights == "demo" for run in self.models.values())

    def predicted(self, predicted_ms: Mapping[ModelKind, float]) -> Findings:
        """These findings with the planner's prediction beside each model's measured time."""
        models = {kind: replace(run, predicted_ms=predicted_ms.get(kind, run.predicted_ms))
                  for kind, run in self.models.items()}
        return replace(self, models=models)

    def to_json(self) -> dict[str, Any]:
        runs = {kind.value: run for kind, run in self.models.items()}
        record: dict[str, Any] = {
            "path": self.path,
            "weights": {name: run.weights for name, run in runs.items()},
            "demo_weights": self.demo_weights,
            "detections": [{"label": d.label, "score": round(d.score, 6),
                            "box_xyxy": [round(v, 2) for v in d.box_xyxy]} for d in self.detections],
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "mode": self.mode.value,
            "split": {name: run.cut for name, run in runs.items()},
            "timing_ms": {k: round(self.timing_ms.get(k, 0.0), 2) for k in TIMING_PHASES},
            "runtime": {name: run.runtime.value for name, run in runs.items()},
            "ran_on": list(self.ran_on),
        }
        if wire := {name: run.wire.value for name, run in runs.items() if run.wire is not None}:
            record["wire"] = wire
        if bands := {name: run.bands for name, run in runs.items() if run.bands}:
            record["bands"] = bands
        if self.fallback_reason:
            record["fallback_reason"] = self.fallback_reason
        if any(run.predicted_ms is not None for run in runs.values()):
            record["plan"] = {name: {"cut": run.cut, "wire": run.wire.value if run.wire else "local",
                                     "predicted_ms": round(run.predicted_ms, 2),
                                     "measured_ms": round(run.measured_ms, 2)}
                              for name, run in runs.items() if run.predicted_ms is not None}
        return record
