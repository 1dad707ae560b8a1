"""Where each model is cut and how its tensors travel: the plan an analysis runs with."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from inference.config import ModelKind, SplitMode, SplitPolicy, WireFormat

# The split `auto` runs with until the planner has measured the link and the edge (or when it cannot): MedEdge's
# cut 6 for the detector (after layers 0..5: one 256×64×64 tensor at 512 px) and after transition 3 for CheXNet
# (one 512×7×7 tensor, 98 KiB in FP32).
AUTO_CUTS = {ModelKind.DETECTOR: 6, ModelKind.CLASSIFIER: 7}


@dataclass(frozen=True)
class ModelPlan:
    cut: int
    wire: WireFormat = WireFormat.FP32
    # The planner's prediction of the edge request (transfer + edge compute), 0 when unknown: the request's
    # timeout grows by it and by the predictions of the requests queued ahead of it.
    remote_ms: float = field(default=0.0, compare=False)
    # A spatial split: stages [0, cut) on this many horizontal bands of the image, each on another edge (or
    # here), joined at the cut (inference/models/bands.py); 0: they run here whole.
    bands: int = 0
    # The whole model (the detector, cut 0) on this many horizontal bands of the image, one per edge, the edges
    # swapping rows after every layer (inference/models/halo.py); 0: none.
    halo: int = 0


@dataclass(frozen=True)
class Plan:
    detector: ModelPlan
    classifier: ModelPlan

    def __getitem__(self, kind: ModelKind) -> ModelPlan:
        return self.detector if ModelKind(kind) is ModelKind.DETECTOR else self.classifier

    def items(self) -> Iterator[tuple[ModelKind, ModelPlan]]:
        yield from ((ModelKind.DETECTOR, self.detector), (ModelKind.CLASSIFIER, self.classifier))

    def uses_edge(self, stage_counts: Mapping[ModelKind, int]) -> bool:
        return any(plan.cut < stage_counts[kind] for kind, plan in self.items())


def plan_for(policy: SplitPolicy, stage_counts: Mapping[ModelKind, int], wire: WireFormat = WireFormat.FP32) -> Plan:
    """The fixed plan of `policy` for models of `stage_counts` stages (`auto`: the documented cuts, until the
    planner chooses); ValueError naming the model when a manual cut is out of its range."""
    if policy.mode is SplitMode.LOCAL:
        cuts = dict(stage_counts)
    elif policy.mode is SplitMode.EDGE:
        cuts = dict.fromkeys(stage_counts, 0)
    elif policy.mode is SplitMode.AUTO:
        cuts = dict(AUTO_CUTS)
    else:
        cuts = {kind: policy.cuts.get(kind, stage_counts[kind]) for kind in stage_counts}
    for kind, cut in cuts.items():
        if not 0 <= cut <= stage_counts[kind]:
            raise ValueError(f"split {policy}: the {kind.value} has cuts 0..{stage_counts[kind]}, got {cut}")
    return Plan(ModelPlan(cuts[ModelKind.DETECTOR], wire), ModelPlan(cuts[ModelKind.CLASSIFIER], wire))
