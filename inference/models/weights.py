"""Model weights: deterministic demo weights, and users' checkpoints in the layouts found in the wild.

Checkpoints are read with `torch.load(weights_only=True)` only: a pickle can run code. Whole
pickled training checkpoints are converted once, explicitly, by `convert_pickled_checkpoint`
(`python main.py models convert --trust-pickle IN OUT`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from inference.models.classifier import CHESTXRAY14, CheXNet, ClassifierConfig
from inference.models.detector import DetectorConfig, YoloDetector

DEMO = "demo"
DEMO_SEED = 20260101
DEMO_FORMAT_VERSION = 3  # bump when the generator changes, so caches are rebuilt
# torchxrayvision's output order (xrv.datasets.default_pathologies) for its 18-output DenseNets.
XRV_PATHOLOGIES = ("Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
                   "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass",
                   "Hernia", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")


class WeightsError(ValueError):
    """A weights file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class LoadedWeights:
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    source: str                      # "demo" or the file's SHA-256
    layout: str                      # what was recognised, e.g. "arnoweng-chexnet"
    output_names: tuple[str, ...] = ()  # classifier: names of the model's outputs
    in_channels: int = 3
    normalisation: str = "imagenet"
    operating_points: tuple[float, ...] | None = None  # torchxrayvision calibration, NaN = untrained

    @property
    def is_demo(self) -> bool:
        return self.source == DEMO


def data_dir() -> Path:
    """Per-user data folder: $MEDEDGE_DATA_DIR, else $XDG_DATA_HOME/mededge, else ~/.local/share/mededge."""
    if os.environ.get("MEDEDGE_DATA_DIR"):
        return Path(os.environ["MEDEDGE_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "mededge"


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- demo weights


CALIBRATION_SIZE = 256  # demo batch-norm statistics come from one generated image of this size


def _demo_initialise(model: nn.Module, seed: int) -> None:
    """He-normal convolutions and small heads drawn from one seeded generator, then batch-norm
    statistics measured on one generated image, so activations keep unit scale through the depth
    (untrained residual stacks otherwise grow until every output saturates)."""
    generator = torch.Generator().manual_seed(seed)
    heads = {id(m) for m in _head_layers(model)}
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                std = 0.01 if id(module) in heads else math.sqrt(2.0 / fan_in)
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
                module.reset_running_stats()
    if isinstance(model, YoloDetector):
        model._initialise_like_original()
    _calibrate_batch_norms(model, _calibration_image(generator, model))


def _calibration_image(generator: torch.Generator, model: nn.Module) -> torch.Tensor:
    """Four generated images in [0, 1] with structure at every scale (smooth fields, edges, grain):
    batch-norm statistics from one kind of content alone would blow up on another."""
    size = CALIBRATION_SIZE
    images = []
    for grain in (0.0, 0.02, 0.08, 0.3):
        field = torch.zeros(1, 1, size, size)
        for cells in (4, 16, 64):
            coarse = torch.rand(1, 1, cells, cells, generator=generator)
            field += nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
        steps = torch.rand(1, 1, 8, 8, generator=generator)
        field += nn.functional.interpolate(steps, size=(size, size), mode="nearest")  # sharp edges
        field = (field - field.min()) / (field.max() - field.min())
        field = (field + grain * torch.randn(1, 1, size, size, generator=generator)).clamp(0, 1)
        images.append(field)
    batch = torch.cat(images)
    if isinstance(model, CheXNet):
        batch = (batch - 0.449) / 0.226  # ImageNet-like scale for the classifier
        return batch.expand(-1, model.config.in_channels, -1, -1).contiguous()
    return batch.expand(-1, 3, -1, -1).contiguous()


def _calibrate_batch_norms(model: nn.Module, image: torch.Tensor) -> None:
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    with torch.no_grad():
        model(image)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.eval()


def _head_layers(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, YoloDetector):
        return list(model.detect.m)
    if isinstance(model, CheXNet):
        return [model.classifier]
    return []


def demo_state_dict(model: YoloDetector | CheXNet, seed: int = DEMO_SEED) -> dict[str, torch.Tensor]:
    """Demo weights for `model`'s configuration, generated once and cached in `data_dir()`."""
    key = _demo_key(model, seed)
    cache = data_dir() / "weights" / f"demo-{key}.pt"
    if cache.exists():
        try:
            return torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:
            cache.unlink(missing_ok=True)  # a damaged cache is regenerated, never trusted
    _demo_initialise(model, seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # via a buffer: torch.save names the archive after a file, which would vary
    torch.save(state, buffer)
    partial = cache.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, cache)  # atomic: another process never reads half a file
    return state


def _demo_key(model: YoloDetector | CheXNet, seed: int) -> str:
    if isinstance(model, YoloDetector):
        detector = model.config
        scaled = (f"-w{detector.width_multiple}-d{detector.depth_multiple}"
                  if detector.width_multiple or detector.depth_multiple else "")
        return f"{detector.architecture}{scaled}-c{len(detector.classes)}-s{seed}-v{DEMO_FORMAT_VERSION}"
    classifier = model.config
    return f"densenet121-c{len(classifier.classes)}-i{classifier.in_channels}-s{seed}-v{DEMO_FORMAT_VERSION}"


# ---------------------------------------------------------------- reading checkpoints


def _read_safely(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise WeightsError(f"weights path is a folder, not a file: {path}") from exc
    except Exception as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL " in text:  # a class, not just tensors, is inside
            raise WeightsError(
                f"{path.name} is a pickled model, which is not loaded automatically (a pickle can run code). "
                f"If you trust it, convert it once: python main.py models convert --trust-pickle {path} OUT.pt"
            ) from exc
        raise WeightsError(f"{path.name} is not a PyTorch weights file: {' '.join(text.split())[:160]}") from exc


def _tensor_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: plain, or under 'state_dict' / 'model' / 'ema' / 'model_state_dict'."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, dict):
        for key in ("ema", "state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    raise WeightsError(f"{path.name} holds no state dict (expected a dict of tensors)")


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _as_float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _fit(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict with a message a person can act on."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} ≠ {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of another shape (e.g. {wrong[0]})")
        raise WeightsError(f"the weights do not fit the {what}: " + "; ".join(parts))
    # assign: the loaded tensors become the parameters, no copy (a 280 MB copy holds the interpreter long
    # enough to stall a GUI thread)
    model.load_state_dict(state, strict=True, assign=True)


# ---------------------------------------------------------------- detector


def load_detector(config: DetectorConfig, weights: str | os.PathLike[str] | None) -> tuple[YoloDetector, str]:
    """The detector in eval mode and its weights source ("demo" or SHA-256)."""
    model = YoloDetector(config)
    if weights is None:
        model.load_state_dict(demo_state_dict(model), assign=True)
        return model.eval(), DEMO
    path = Path(weights)
    state = _as_float(_strip_prefix(_tensor_dict(_read_safely(path), path), "module."))
    head = f"model.{model.stage_count - 1}.m.0.weight"
    if head in state:
        outputs = state[head].shape[0] // model.detect.per_level - 5
        if outputs != len(config.classes):
            raise WeightsError(f"{path.name} detects {outputs} classes; the detector is configured for "
                               f"{len(config.classes)} ({', '.join(config.classes)})")
    _fit(model, state, f"{config.architecture} detector")
    return model.eval(), file_sha256(path)


# ---------------------------------------------------------------- classifier

_OLD_DENSENET_NAMES = re.compile(r"\.(norm|relu|conv)\.([12])\.")


def read_classifier_weights(weights: str | os.PathLike[str]) -> LoadedWeights:
    """Recognise CheXNet (arnoweng), torchvision DenseNet-121 and torchxrayvision layouts."""
    path = Path(weights)
    raw = _read_safely(path)
    state = _tensor_dict(raw, path)
    names_in_file = tuple(raw.get("pathologies", ())) if isinstance(raw, dict) else ()
    state = _strip_prefix(state, "module.")  # saved from DataParallel
    layout = "torchvision-densenet121"
    if state and all(k.startswith("densenet121.") for k in state):
        state, layout = _strip_prefix(state, "densenet121."), "arnoweng-chexnet"
    # torchvision before 0.4 (and CheXNet) named the dense-layer parts norm.1, conv.1, …
    state = {_OLD_DENSENET_NAMES.sub(lambda m: f".{m[1]}{m[2]}.", k): v for k, v in state.items()}
    state = {k.replace("classifier.0.", "classifier."): v for k, v in state.items()}
    operating_points = None
    if "op_threshs" in state:
        operating_points = tuple(float(x) for x in state.pop("op_threshs").reshape(-1))
    state = _as_float(state)
    if "classifier.weight" not in state or "features.conv0.weight" not in state:
        raise WeightsError(f"{path.name} is not a DenseNet-121 classifier (no features.conv0 / classifier)")
    outputs = state["classifier.weight"].shape[0]
    in_channels = state["features.conv0.weight"].shape[1]
    if in_channels == 1:  # torchxrayvision: one channel, its own ±1024 scaling, 18 named outputs
        names = names_in_file or (XRV_PATHOLOGIES if outputs == len(XRV_PATHOLOGIES) else ())
        if len(names) != outputs:
            raise WeightsError(f"{path.name}: a 1-channel DenseNet with {outputs} outputs but no list of their "
                               "names (save it with a 'pathologies' list)")
        return LoadedWeights(state, file_sha256(path), "torchxrayvision", tuple(names), 1, "xrv", operating_points)
    names = names_in_file or (CHESTXRAY14 if outputs == len(CHESTXRAY14) else ())
    if len(names) != outputs:
        raise WeightsError(f"{path.name} has {outputs} outputs; CheXNet weights have 14 (ChestX-ray14 order)")
    return LoadedWeights(state, file_sha256(path), layout, tuple(names), 3, "imagenet", operating_points)


def load_classifier(config: ClassifierConfig, weights: str | os.PathLike[str] | None
                    ) -> tuple[CheXNet, LoadedWeights]:
    """The classifier in eval mode, configured for the weights' channels, outputs and normalisation."""
    if weights is None:
        model = CheXNet(config)
        loaded = LoadedWeights(demo_state_dict(model), DEMO, "demo", config.classes, config.in_channels,
                               config.normalisation)
    else:
        loaded = read_classifier_weights(weights)
        resize = config.input_size if loaded.normalisation == "xrv" else config.resize  # xrv: square centre crop
        config = ClassifierConfig(classes=loaded.output_names, input_size=config.input_size, resize=resize,
                                  ten_crop=config.ten_crop, in_channels=loaded.in_channels,
                                  normalisation=loaded.normalisation)
        model = CheXNet(config)
    _fit(model, loaded.state_dict, "DenseNet-121 classifier")
    return model.eval(), loaded


def describe_weights(path: str | os.PathLike[str]) -> dict:
    """What a (plain) weights file is: which model and configuration it fits."""
    path = Path(path)
    state = _strip_prefix(_tensor_dict(_read_safely(path), path), "module.")
    detect_layers = {"yolov4-p5": 31, "yolov4-p6": 42, "yolov4-p7": 53}
    for architecture, index in detect_layers.items():
        head = state.get(f"model.{index}.m.0.weight")
        if head is not None and f"model.{index}.anchors" in state:
            per_level = state[f"model.{index}.anchors"].shape[1]
            return {"model": "detector", "architecture": architecture,
                    "classes": head.shape[0] // per_level - 5, "sha256": file_sha256(path)}
    loaded = read_classifier_weights(path)
    return {"model": "classifier", "layout": loaded.layout, "outputs": list(loaded.output_names),
            "in_channels": loaded.in_channels, "sha256": loaded.source}
