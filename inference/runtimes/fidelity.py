"""The fidelity gate's rule, one for every faster variant of a model — a wire format at a cut (the planner) and a
local runtime (runtimes): against PyTorch FP32, probabilities within PROBABILITY_TOLERANCE and every box
matched at IoU ≥ BOX_IOU."""

from __future__ import annotations

import numpy as np

from inference.models.postprocess import box_iou

PROBABILITY_TOLERANCE = 0.02  # a wire format or runtime must keep probabilities within this
BOX_IOU = 0.9                 # … and match every box at this IoU


def boxes_match(expected, got) -> bool:
    """Every detection of `expected` has one in `got` at IoU ≥ BOX_IOU."""
    boxes = np.array([d.box_xyxy for d in got]).reshape(-1, 4)
    for detection in expected:
        if not len(boxes) or box_iou(np.array(detection.box_xyxy), boxes).max() < BOX_IOU:
            return False
    return True
