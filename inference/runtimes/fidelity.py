"""The fidelity gate's rule, one for every faster variant of a model — a wire format at a cut (the planner) and a
local runtime (runtimes): against PyTorch FP32, probabilities within PROBABILITY_TOLERANCE and every box
matched at IoU ≥ BOX_IOU; a variant built from the site's radiographs (calibrated, distilled) is gated on a share
of them it was not built from (`split_held_back`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from inference.models.postprocess import box_iou

PROBABILITY_TOLERANCE = 0.02  # a wire format or runtime must keep probabilities within this
BOX_IOU = 0.9                 # … and match every box at this IoU
HELD_BACK = 0.25              # of the site's radiographs, for the gate of what is built from the others


def split_held_back(inputs: Sequence[np.ndarray], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(to build from, held back for the gate): HELD_BACK of the radiographs, at least one each, chosen by a digest
    of their contents (and `seed`), so that the same radiographs always split alike, in whatever order they are read
    and under any NumPy (a calibrated build's stages before a cut are built from the same share later)."""
    if len(inputs) < 2:
        raise ValueError(f"{len(inputs)} readable radiograph(s): at least 2 are needed, some to build from and some "
                         "held back for the fidelity gate")
    digests = [hashlib.sha256(seed.to_bytes(8, "little") + np.ascontiguousarray(x).tobytes()).digest() for x in inputs]
    order = sorted(range(len(inputs)), key=lambda i: (digests[i], i))
    held = max(1, round(HELD_BACK * len(inputs)))
    return [inputs[i] for i in sorted(order[held:])], [inputs[i] for i in sorted(order[:held])]


def boxes_match(expected, got) -> bool:
    """Every detection of `expected` has one in `got` at IoU ≥ BOX_IOU."""
    boxes = np.array([d.box_xyxy for d in got]).reshape(-1, 4)
    for detection in expected:
        if not len(boxes) or box_iou(np.array(detection.box_xyxy), boxes).max() < BOX_IOU:
            return False
    return True
