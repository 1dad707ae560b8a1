"""Model inputs from a radiograph's display-ready grey image, and the geometry to map results back."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LETTERBOX_GREY = 114  # padding value of YOLO's letterbox


@dataclass(frozen=True)
class Letterbox:
    """How an image of `original` (rows, cols) was scaled and padded into a `size`² square."""

    original: tuple[int, int]
    size: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes in letterbox pixels → original image pixels, clipped to the image."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.scale_x
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.scale_y
        rows, cols = self.original
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, cols)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, rows)
        return boxes

    def to_letterbox(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4).copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * self.scale_x + self.pad_x
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * self.scale_y + self.pad_y
        return boxes


def letterbox(grey: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Scale to fit `size` keeping the aspect ratio, pad with grey 114: float32 [1, 3, size, size] in [0, 1]."""
    rows, cols = grey.shape
    ratio = min(size / rows, size / cols)
    new_cols, new_rows = max(1, round(cols * ratio)), max(1, round(rows * ratio))
    interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(grey, (new_cols, new_rows), interpolation=interpolation)
    pad_x, pad_y = (size - new_cols) // 2, (size - new_rows) // 2
    canvas = np.full((size, size), LETTERBOX_GREY, dtype=np.uint8)
    canvas[pad_y:pad_y + new_rows, pad_x:pad_x + new_cols] = resized
    tensor = np.repeat((canvas.astype(np.float32) / 255.0)[None, None], 3, axis=1)
    geometry = Letterbox((rows, cols), size, new_cols / cols, new_rows / rows, pad_x, pad_y)
    return tensor, geometry


@dataclass(frozen=True)
class CropGeometry:
    """Resize of the shorter side to `resized` (rows, cols), then crops of `crop` px at `origins` (y, x)."""

    original: tuple[int, int]
    resized: tuple[int, int]
    crop: int
    origins: tuple[tuple[int, int], ...]  # one centre crop, or the five of a ten-crop (centre last)

    @property
    def centre_index(self) -> int:
        return len(self.origins) - 1

    def heat_map(self, cam: np.ndarray) -> np.ndarray:
        """One class-activation map of the centre crop → [rows, cols] in [0, 1] on the original image.

        Upsampled to its crop, placed in the resized image (zero outside the crop), resized to the
        original, and scaled so its largest positive activation is 1.
        """
        rows, cols = self.original
        new_rows, new_cols = self.resized
        top, left = self.origins[self.centre_index]
        cam = np.maximum(np.asarray(cam, dtype=np.float32), 0)
        peak = float(cam.max())
        if peak <= 0:
            return np.zeros((rows, cols), dtype=np.float32)
        placed = np.zeros((new_rows, new_cols), dtype=np.float32)
        placed[top:top + self.crop, left:left + self.crop] = cv2.resize(
            cam / peak, (self.crop, self.crop), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(placed, (cols, rows), interpolation=cv2.INTER_LINEAR)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def classifier_crops(grey: np.ndarray, resize: int, crop: int, ten_crop: bool, channels: int,
                     normalisation: str) -> tuple[np.ndarray, CropGeometry]:
    """CheXNet input: shorter side → `resize`, centre crop (or ten crops), normalised; [K, C, crop, crop]."""
    rows, cols = grey.shape
    scale = resize / min(rows, cols)
    new_rows, new_cols = max(resize, round(rows * scale)), max(resize, round(cols * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(grey, (new_cols, new_rows), interpolation=interpolation)
    top, left = (new_rows - crop) // 2, (new_cols - crop) // 2
    origins = [(top, left)]
    if ten_crop:
        origins = [(0, 0), (0, new_cols - crop), (new_rows - crop, 0), (new_rows - crop, new_cols - crop), (top, left)]
    patches = [resized[y:y + crop, x:x + crop] for y, x in origins]
    if ten_crop:
        patches += [p[:, ::-1] for p in patches]  # the mirrored five
    unit = np.stack(patches).astype(np.float32) / 255.0  # [K, crop, crop]
    if normalisation == "xrv":  # torchxrayvision: [0, 1] → [-1024, 1024], one channel
        batch = (unit * 2048.0 - 1024.0)[:, None]
        batch = np.repeat(batch, channels, axis=1) if channels != 1 else batch
    else:
        batch = np.repeat(unit[:, None], 3, axis=1)
        batch = (batch - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]
        batch = batch[:, :channels] if channels == 1 else batch
    return np.ascontiguousarray(batch, dtype=np.float32), CropGeometry((rows, cols), (new_rows, new_cols),
                                                                        crop, tuple(origins))
