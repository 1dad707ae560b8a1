"""`Findings`: what one analysis of one radiograph produced, and how it was produced."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inference.models.preprocess import CropGeometry

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
class Findings:
    path: str
    detections: tuple[Detection, ...]
    probabilities: dict[str, float]              # only the findings the classifier actually predicts
    weights: dict[str, str]                      # model → "demo" or SHA-256 of the weights file
    mode: Mode = Mode.LOCAL
    split: dict[str, int] = field(default_factory=dict)   # model → cut used
    wire: dict[str, str] = field(default_factory=dict)    # model → wire format, for models cut before n
    timing_ms: dict[str, float] = field(default_factory=dict)
    fallback_reason: str | None = None
    activation_maps: ActivationMaps | None = field(default=None, repr=False, compare=False)
    model_ms: dict[str, float] = field(default_factory=dict)      # measured, per model (local + transfer + edge,
                                                                  # a pipelined series' queueing left out)
    predicted_ms: dict[str, float] = field(default_factory=dict)  # the planner's prediction, per model
    runtime: dict[str, str] = field(default_factory=dict)  # model → local runtime of its workstation stages

    def heat_map(self, finding: str) -> np.ndarray:
        """The finding's class-activation map on the original image, [rows, cols] in [0, 1]."""
        if self.activation_maps is None:
            raise KeyError("this analysis ran without heat maps")
        return self.activation_maps.upsampled(finding)

    @property
    def demo_weights(self) -> bool:
        return "demo" in self.weights.values()

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "path": self.path,
            "weights": dict(self.weights),
            "demo_weights": self.demo_weights,
            "detections": [{"label": d.label, "score": round(d.score, 6),
                            "box_xyxy": [round(v, 2) for v in d.box_xyxy]} for d in self.detections],
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "mode": self.mode.value,
            "split": dict(self.split),
            "timing_ms": {k: round(self.timing_ms.get(k, 0.0), 2) for k in TIMING_PHASES},
            "runtime": dict(self.runtime),
        }
        if self.wire:
            record["wire"] = dict(self.wire)
        if self.fallback_reason:
            record["fallback_reason"] = self.fallback_reason
        if self.predicted_ms:
            record["plan"] = {name: {"cut": self.split[name], "wire": self.wire.get(name, "local"),
                                     "predicted_ms": round(self.predicted_ms[name], 2),
                                     "measured_ms": round(self.model_ms.get(name, 0.0), 2)}
                              for name in self.predicted_ms}
        return record
