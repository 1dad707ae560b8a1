"""From raw model outputs to findings: detection decode + NMS + un-letterbox; calibrated probabilities (heat maps
go back onto the image through their crop's geometry: `CropGeometry.heat_map`)."""

from __future__ import annotations

import numpy as np

from inference.models.findings import Detection
from inference.models.preprocess import Letterbox


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with many."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, highest score first (ties: lower index first)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_detections(raw: np.ndarray, geometry: Letterbox, labels: tuple[str, ...], confidence: float,
                      iou: float, max_detections: int) -> list[Detection]:
    """raw [N, 5 + classes] (cx, cy, w, h, objectness, class scores) in letterbox pixels → detections."""
    raw = np.asarray(raw, dtype=np.float64)
    scores_per_class = raw[:, 5:] * raw[:, 4:5]  # confidence = objectness × class score
    cls = scores_per_class.argmax(axis=1)
    scores = scores_per_class[np.arange(len(raw)), cls]
    chosen = scores > confidence
    raw, cls, scores = raw[chosen], cls[chosen], scores[chosen]
    if not len(raw):
        return []
    boxes = np.stack([raw[:, 0] - raw[:, 2] / 2, raw[:, 1] - raw[:, 3] / 2,
                      raw[:, 0] + raw[:, 2] / 2, raw[:, 1] + raw[:, 3] / 2], axis=1)
    # One NMS for all classes: shifting each class far apart keeps classes from suppressing each other.
    offset = cls[:, None] * (4.0 * geometry.size + 1.0)
    keep = nms(boxes + offset, scores, iou)[:max_detections]
    original = geometry.to_original(boxes[keep])
    return [Detection(labels[int(cls[k])], float(scores[k]), (float(x1), float(y1), float(x2), float(y2)))
            for k, (x1, y1, x2, y2) in zip(keep, original, strict=True)]


def calibrate(probabilities: np.ndarray, operating_points: tuple[float, ...] | None) -> np.ndarray:
    """torchxrayvision's operating-point normalisation: each output's threshold maps to 0.5."""
    if operating_points is None:
        return probabilities
    t = np.asarray(operating_points, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        low = probabilities / (t * 2)
        high = 1.0 - (1.0 - probabilities) / ((1.0 - t) * 2)
    return np.where(np.isnan(t), np.nan, np.where(probabilities < t, low, high))
