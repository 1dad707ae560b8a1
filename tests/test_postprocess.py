"""Pre/post-processing: letterbox geometry exact on non-square images, NMS vs brute force, heat maps."""

import numpy as np
import pytest

from inference.models.findings import Detection
from inference.models.postprocess import decode_detections, nms
from inference.models.preprocess import LETTERBOX_GREY, classifier_crops, letterbox


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (517, 1023), (64, 64)])
def test_letterbox_round_trip_is_exact(shape):
    rows, cols = shape
    rng = np.random.default_rng(rows * cols)
    x1, y1 = rng.uniform(0, cols / 2, 20), rng.uniform(0, rows / 2, 20)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, cols / 2, 20), y1 + rng.uniform(1, rows / 2, 20)], axis=1)
    _, geometry = letterbox(np.zeros(shape, np.uint8), 256)
    back = geometry.to_original(geometry.to_letterbox(boxes))
    assert np.allclose(back, boxes, atol=1e-9)


def test_letterbox_places_the_image_where_the_geometry_says():
    grey = np.zeros((300, 150), np.uint8)
    grey[100:200, 50:100] = 255  # a bright block
    tensor, geometry = letterbox(grey, 128)
    assert tensor.shape == (1, 3, 128, 128) and tensor.dtype == np.float32
    assert geometry.pad_y == 0 and geometry.pad_x == 32  # 300×150 → 128×64 centred
    assert np.allclose(tensor[0, :, :, :32], LETTERBOX_GREY / 255)  # grey 114 padding left
    x1, y1, x2, y2 = geometry.to_letterbox(np.array([[50, 100, 100, 200]]))[0]
    inside = tensor[0, 0, int(y1) + 2:int(y2) - 2, int(x1) + 2:int(x2) - 2]
    assert inside.min() > 0.95


def _brute_force_nms(boxes, scores, threshold):
    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    kept = []
    for i in sorted(range(len(scores)), key=lambda k: (-scores[k], k)):
        if all(iou(boxes[i], boxes[j]) <= threshold for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_brute_force(seed, threshold):
    rng = np.random.default_rng(seed)
    n = 150
    centres = rng.uniform(0, 200, (n, 2))
    sizes = rng.uniform(5, 60, (n, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    scores = np.round(rng.uniform(0, 1, n), 2)  # ties included
    assert nms(boxes, scores, threshold).tolist() == _brute_force_nms(boxes, scores, threshold)


def test_decode_thresholds_suppresses_and_unscales():
    _, geometry = letterbox(np.zeros((400, 200), np.uint8), 128)  # scale 0.32, pad_x 32
    raw = np.array([
        [64, 64, 20, 20, 0.9, 0.9],   # kept: 0.81
        [65, 64, 20, 20, 0.8, 0.9],   # overlaps the first: suppressed
        [100, 30, 10, 10, 0.7, 0.8],  # kept: 0.56
        [20, 20, 10, 10, 0.5, 0.5],   # 0.25 < 0.4: dropped
    ])
    found = decode_detections(raw, geometry, ("opacity",), confidence=0.4, iou=0.5, max_detections=10)
    assert [round(d.score, 2) for d in found] == [0.81, 0.56]
    x1, y1, x2, y2 = found[0].box_xyxy
    assert (x1, y1, x2, y2) == pytest.approx(((54 - 32) / 0.32, 54 / 0.32, (74 - 32) / 0.32, 74 / 0.32))
    assert isinstance(found[0], Detection) and found[0].label == "opacity"


def test_heat_map_lies_on_the_centre_crop_of_the_original():
    grey = np.zeros((300, 600), np.uint8)  # wide: the centre crop leaves the sides out
    _, geometry = classifier_crops(grey, 256, 224, False, 3, "imagenet")
    assert geometry.resized == (256, 512) and geometry.origins == ((16, 144),)
    cam = np.zeros((7, 7), np.float32)
    cam[3, 3] = 2.0
    full = geometry.heat_map(cam)
    assert full.shape == (300, 600) and full.max() == pytest.approx(1.0, abs=0.05)
    peak_y, peak_x = np.unravel_index(full.argmax(), full.shape)
    assert abs(peak_x - 300) < 20 and abs(peak_y - 150) < 20
    assert full[:, :150].max() == 0 and full[:, -150:].max() == 0  # outside the crop: nothing


def test_ten_crop_geometry():
    crops, geometry = classifier_crops(np.zeros((256, 256), np.uint8), 256, 224, True, 3, "imagenet")
    assert crops.shape == (10, 3, 224, 224)
    assert geometry.origins[geometry.centre_index] == (16, 16)
