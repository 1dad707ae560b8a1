"""`analyze(radiograph) -> Findings`: both models on one radiograph, on this machine.

The split path (issue "split inference") replaces the middle step — stages [k, n) then run on
the edge — and keeps the same pre- and post-processing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from inference.classifier import CHESTXRAY14, CheXNet, ClassifierConfig
from inference.detector import DetectorConfig, YoloDetector
from inference.findings import ActivationMaps, Detection, Findings, Mode
from inference.postprocess import calibrate, decode_detections
from inference.preprocess import classifier_crops, letterbox
from inference.stages import INPUT
from inference.weights import LoadedWeights, load_classifier, load_detector
from viewer.display import render_8bit
from viewer.radiograph import Radiograph


@dataclass(frozen=True)
class ModelChoice:
    """Which models and weights to run (None = demo weights)."""

    detector_weights: str | os.PathLike[str] | None = None
    classifier_weights: str | os.PathLike[str] | None = None
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    device: str = "cpu"  # "cpu", "cuda" (or "cuda:N"), or "auto" (CUDA when present)

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA was asked for, but this PyTorch build or machine has no CUDA device")
        return device


class Analyzer:
    """Both models loaded once; `analyze` may be called from any one thread at a time."""

    def __init__(self, choice: ModelChoice = ModelChoice()) -> None:
        self.choice = choice
        self.device = choice.torch_device
        self.detector: YoloDetector
        self.detector, self.detector_source = load_detector(choice.detector, choice.detector_weights)
        self.classifier: CheXNet
        self.classifier_weights: LoadedWeights
        self.classifier, self.classifier_weights = load_classifier(choice.classifier, choice.classifier_weights)
        self.detector.to(self.device)
        self.classifier.to(self.device)
        self._lock = threading.Lock()

    @property
    def weights(self) -> dict[str, str]:
        return {"detector": self.detector_source, "classifier": self.classifier_weights.source}

    def analyze(self, radiograph: Radiograph, with_heat_maps: bool = True) -> Findings:
        with self._lock, torch.inference_mode():
            return self._analyze(radiograph, with_heat_maps)

    def _analyze(self, radiograph: Radiograph, with_heat_maps: bool) -> Findings:
        started = time.perf_counter()
        grey = render_8bit(radiograph)  # the file's own VOI and inversion: what the models were trained on
        det_config, cls_config = self.detector.config, self.classifier.config
        det_input, box_geometry = letterbox(grey, det_config.input_size)
        cls_input, crop_geometry = classifier_crops(grey, cls_config.resize, cls_config.input_size,
                                                    cls_config.ten_crop, cls_config.in_channels,
                                                    cls_config.normalisation)
        preprocessed = time.perf_counter()

        raw = self.detector(torch.from_numpy(det_input).to(self.device))[0].cpu().numpy()
        last = self.classifier.stage_count - 1
        features_stage = self.classifier.features_stage
        outputs = self.classifier.run_stages({INPUT: torch.from_numpy(cls_input).to(self.device)}, 0, last + 1,
                                             keep=[features_stage] if with_heat_maps else [])
        probabilities = outputs[last].mean(dim=0).cpu().numpy().astype(np.float64)  # ten-crop: the average
        cams = None
        if with_heat_maps:
            centre = crop_geometry.centre_index
            features = outputs[features_stage][centre:centre + 1]
            cams = self.classifier.class_activation_maps(features)[0].cpu().numpy()
        ran = time.perf_counter()

        detections = decode_detections(raw, box_geometry, det_config.classes, det_config.confidence,
                                       det_config.iou, det_config.max_detections)
        shown = self._shown_probabilities(probabilities)
        maps = None
        if cams is not None:
            rows = [self.classifier.config.classes.index(name) for name in shown]
            maps = ActivationMaps(tuple(shown), cams[rows], crop_geometry)
        finished = time.perf_counter()
        n_det, n_cls = self.detector.stage_count, self.classifier.stage_count
        return Findings(
            path=radiograph.path,
            detections=tuple(detections),
            probabilities=shown,
            weights=self.weights,
            mode=Mode.LOCAL,
            split={"detector": n_det, "classifier": n_cls},
            timing_ms={"preprocess": (preprocessed - started) * 1e3, "local": (ran - preprocessed) * 1e3,
                       "transfer": 0.0, "edge": 0.0, "postprocess": (finished - ran) * 1e3,
                       "total": (finished - started) * 1e3},
            activation_maps=maps,
        )

    def _shown_probabilities(self, probabilities: np.ndarray) -> dict[str, float]:
        """The ChestX-ray14 findings this classifier predicts, in ChestX-ray14 order; others left out."""
        calibrated = calibrate(probabilities, self.classifier_weights.operating_points)
        by_name = dict(zip(self.classifier.config.classes, calibrated))
        return {name: float(by_name[name]) for name in CHESTXRAY14
                if name in by_name and np.isfinite(by_name[name])}


_default: Analyzer | None = None
_default_lock = threading.Lock()


def analyze(radiograph: Radiograph, analyzer: Analyzer | None = None) -> Findings:
    """Analyse with `analyzer`, or with a shared demo-weights analyzer built on first use."""
    global _default
    if analyzer is None:
        with _default_lock:
            if _default is None:
                _default = Analyzer()
            analyzer = _default
    return analyzer.analyze(radiograph)


__all__ = ["Analyzer", "Detection", "Findings", "ModelChoice", "analyze"]
