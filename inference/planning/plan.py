"""Where each model is cut and how its tensors travel: the plan an analysis runs with."""

from __future__ import annotations

from dataclasses import dataclass, field

from inference.models.wire import WireFormat

# `--split auto` until the planner measures the link (issue "cut planning"): MedEdge's cut 6 for the
# detector (after layers 0..5: one 256×64×64 tensor at 512 px) and after transition 3 for CheXNet
# (one 512×7×7 tensor, 98 KiB in FP32).
AUTO_CUTS = {"detector": 6, "classifier": 7}


@dataclass(frozen=True)
class ModelPlan:
    cut: int
    wire: WireFormat = WireFormat.FP32
    # The planner's prediction of the edge request (transfer + edge compute), 0 when unknown: the request's
    # timeout grows by it and by the predictions of the requests queued ahead of it.
    remote_ms: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class Plan:
    detector: ModelPlan
    classifier: ModelPlan

    def uses_edge(self, stage_counts: dict[str, int]) -> bool:
        return self.detector.cut < stage_counts["detector"] or self.classifier.cut < stage_counts["classifier"]


def parse_split(split: str, stage_counts: dict[str, int], wire: WireFormat = WireFormat.FP32) -> Plan:
    """`local`, `edge`, `auto`, `K` (both models) or `detector:K,classifier:K` → a Plan; ValueError otherwise."""
    text = split.strip().lower()
    if text == "local":
        cuts = dict(stage_counts)
    elif text == "edge":
        cuts = {name: 0 for name in stage_counts}
    elif text == "auto":
        cuts = dict(AUTO_CUTS)
    elif text.isdigit():
        cuts = {name: int(text) for name in stage_counts}
    else:
        cuts = {}
        for item in text.split(","):
            name, _, value = item.partition(":")
            if name.strip() not in stage_counts or not value.strip().isdigit():
                raise ValueError(f"--split {split!r}: expected local, edge, auto, K or detector:K,classifier:K")
            cuts[name.strip()] = int(value)
        cuts = {name: cuts.get(name, stage_counts[name]) for name in stage_counts}
    for name, cut in cuts.items():
        if not 0 <= cut <= stage_counts[name]:
            raise ValueError(f"--split: the {name} has cuts 0..{stage_counts[name]}, got {cut}")
    return Plan(ModelPlan(cuts["detector"], wire), ModelPlan(cuts["classifier"], wire))
