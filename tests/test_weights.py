"""Weights: every external checkpoint layout is built here and loaded; demo weights are deterministic."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from inference.models import yolo_layers
from inference.models.classifier import CHESTXRAY14, CheXNet, ClassifierConfig
from inference.models.convert import convert_pickled_checkpoint
from inference.models.detector import DetectorConfig, YoloDetector
from inference.models.weights import (
    XRV_PATHOLOGIES,
    WeightsError,
    demo_state_dict,
    describe_weights,
    file_sha256,
    load_classifier,
    load_detector,
)

from conftest import ROOT

SIZE = 128


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Distinct, non-trivial weights (and BN statistics) so a wrong mapping shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "anchor" not in name:
                values = torch.rand(tensor.shape, generator=generator) * 0.1
                tensor.copy_(values + 0.95 if name.endswith(("running_var", "bn.weight")) else values - 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------ detector


@pytest.fixture(scope="module")
def trained_detector() -> YoloDetector:
    return _randomised(YoloDetector(DetectorConfig(input_size=SIZE)), seed=7)


def test_plain_detector_state_dict_loads(tmp_path, trained_detector, image):
    path = tmp_path / "best_state.pt"
    torch.save({k: v.half() for k, v in trained_detector.state_dict().items()}, path)  # FP16 as often shipped
    model, source = load_detector(DetectorConfig(input_size=SIZE), path)
    assert source == file_sha256(path) and len(source) == 64
    with torch.inference_mode():
        assert torch.allclose(model(image), trained_detector.half().float()(image), atol=1e-3)


def _fake_original_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for the original training code's modules, as they are named inside a checkpoint."""
    common = types.ModuleType("models.common")
    yolo = types.ModuleType("models.yolo")
    mish = types.ModuleType("mish_cuda")
    for name in ("Conv", "Bottleneck", "BottleneckCSP", "BottleneckCSP2", "SPPCSP", "Concat"):
        setattr(common, name, type(name, (getattr(yolo_layers, name),), {"__module__": "models.common"}))
    yolo.Detect = type("Detect", (yolo_layers.Detect,), {"__module__": "models.yolo"})
    yolo.Model = type("Model", (nn.Module,), {"__module__": "models.yolo"})
    mish.MishCuda = type("MishCuda", (nn.Mish,), {"__module__": "mish_cuda"})
    package = types.ModuleType("models")
    package.common, package.yolo = common, yolo
    return {"models": package, "models.common": common, "models.yolo": yolo, "mish_cuda": mish}


def _as_original_checkpoint(detector: YoloDetector, path) -> None:
    """Pickle `detector` the way the original train.py saves it: {'model': <models.yolo.Model>}, MishCuda inside."""
    fakes = _fake_original_modules()
    sys.modules.update(fakes)
    try:
        original = fakes["models.yolo"].Model()
        original.model = nn.Sequential(*detector.model)
        for module in original.modules():
            kind = type(module).__name__
            if isinstance(module, nn.Mish):
                module.__class__ = fakes["mish_cuda"].MishCuda
            elif hasattr(fakes["models.common"], kind):
                module.__class__ = getattr(fakes["models.common"], kind)
            elif kind == "Detect":
                module.__class__ = fakes["models.yolo"].Detect
        torch.save({"epoch": 299, "model": original, "optimizer": None}, path)
        for module in original.modules():  # give the shared submodules their own classes back
            for cls in (yolo_layers.Conv, yolo_layers.Bottleneck, yolo_layers.BottleneckCSP,
                        yolo_layers.BottleneckCSP2, yolo_layers.SPPCSP, yolo_layers.Concat, yolo_layers.Detect):
                if isinstance(module, cls):
                    module.__class__ = cls
            if isinstance(module, nn.Mish):
                module.__class__ = nn.Mish
    finally:
        for name in fakes:
            sys.modules.pop(name, None)


def test_original_training_checkpoint_is_refused_then_converted(tmp_path, trained_detector, image):
    original = tmp_path / "best.pt"
    _as_original_checkpoint(trained_detector, original)
    assert "models.common" not in sys.modules and "mish_cuda" not in sys.modules
    with pytest.raises(WeightsError, match="pickled model.*models convert --trust-pickle"):
        load_detector(DetectorConfig(input_size=SIZE), original)
    with pytest.raises(WeightsError, match="--trust-pickle"):
        convert_pickled_checkpoint(original, tmp_path / "plain.pt", trust_pickle=False)

    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "models", "convert", "--trust-pickle",
                           str(original), str(tmp_path / "plain.pt")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert '"architecture": "yolov4-p5"' in done.stdout and '"classes": 1' in done.stdout
    model, _ = load_detector(DetectorConfig(input_size=SIZE), tmp_path / "plain.pt")
    with torch.inference_mode():
        assert torch.equal(model(image), trained_detector(image))


def test_detector_with_other_class_count_is_refused(tmp_path):
    other = YoloDetector(DetectorConfig(input_size=SIZE, classes=("a", "b", "c")))
    torch.save(other.state_dict(), tmp_path / "three.pt")
    with pytest.raises(WeightsError, match="detects 3 classes; the detector is configured for 1"):
        load_detector(DetectorConfig(input_size=SIZE), tmp_path / "three.pt")
    assert describe_weights(tmp_path / "three.pt")["classes"] == 3


def test_wrong_file_kinds(tmp_path):
    (tmp_path / "text.pt").write_text("not weights")
    with pytest.raises(WeightsError, match="not a PyTorch weights file"):
        load_detector(DetectorConfig(input_size=SIZE), tmp_path / "text.pt")
    with pytest.raises(WeightsError, match="not found"):
        load_classifier(ClassifierConfig(), tmp_path / "missing.pt")
    torch.save(CheXNet().state_dict(), tmp_path / "chexnet.pt")
    with pytest.raises(WeightsError, match="do not fit the yolov4-p5 detector"):
        load_detector(DetectorConfig(input_size=SIZE), tmp_path / "chexnet.pt")


# ------------------------------------------------------------ classifier


@pytest.fixture(scope="module")
def trained_chexnet() -> CheXNet:
    return _randomised(CheXNet(), seed=11)


def _probabilities(model: CheXNet, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


def test_arnoweng_chexnet_layout(tmp_path, trained_chexnet):
    """model.pth.tar: {'state_dict'} with module.densenet121. prefix, norm.1/conv.1 names, classifier.0."""
    state = {}
    for key, value in trained_chexnet.state_dict().items():
        for new, old in (("norm1", "norm.1"), ("relu1", "relu.1"), ("conv1", "conv.1"),
                         ("norm2", "norm.2"), ("relu2", "relu.2"), ("conv2", "conv.2")):
            key = key.replace(f".{new}.", f".{old}.")
        key = key.replace("classifier.", "classifier.0.")
        state[f"module.densenet121.{key}"] = value
    path = tmp_path / "model.pth.tar"
    torch.save({"epoch": 7, "state_dict": state, "best_loss": torch.tensor(0.1)}, path)
    model, loaded = load_classifier(ClassifierConfig(), path)
    assert loaded.layout == "arnoweng-chexnet" and loaded.output_names == CHESTXRAY14
    x = torch.rand(2, 3, 224, 224)
    assert torch.equal(_probabilities(model, x), _probabilities(trained_chexnet, x))


def test_torchvision_layout(tmp_path, trained_chexnet):
    path = tmp_path / "densenet121_chestxray14.pth"
    torch.save(trained_chexnet.state_dict(), path)
    model, loaded = load_classifier(ClassifierConfig(), path)
    assert loaded.layout == "torchvision-densenet121" and loaded.source == file_sha256(path)
    x = torch.rand(1, 3, 224, 224)
    assert torch.equal(_probabilities(model, x), _probabilities(trained_chexnet, x))


def test_torchvision_1000_class_head_is_refused(tmp_path, trained_chexnet):
    state = dict(trained_chexnet.state_dict())
    state["classifier.weight"], state["classifier.bias"] = torch.zeros(1000, 1024), torch.zeros(1000)
    torch.save(state, tmp_path / "imagenet.pth")
    with pytest.raises(WeightsError, match="1000 outputs; CheXNet weights have 14"):
        load_classifier(ClassifierConfig(), tmp_path / "imagenet.pth")


def _xrv_model(seed: int) -> CheXNet:
    return _randomised(CheXNet(ClassifierConfig(classes=XRV_PATHOLOGIES, in_channels=1, normalisation="xrv")),
                       seed)


def test_torchxrayvision_weights_map_outputs_by_name(tmp_path):
    xrv = _xrv_model(seed=5)
    state = dict(xrv.state_dict())
    thresholds = torch.full((18,), 0.5)
    thresholds[XRV_PATHOLOGIES.index("Hernia")] = float("nan")  # untrained output in these weights
    state["op_threshs"] = thresholds
    path = tmp_path / "xrv-densenet121.pt"
    torch.save(state, path)
    model, loaded = load_classifier(ClassifierConfig(), path)
    assert (loaded.layout, loaded.in_channels, loaded.normalisation) == ("torchxrayvision", 1, "xrv")
    assert model.config.classes == XRV_PATHOLOGIES and model.features.conv0.in_channels == 1

    from inference.analysis.analyzer import Analyzer, ModelChoice
    from viewer.radiograph import Radiograph, Window, WindowSource

    analyzer = Analyzer(ModelChoice(classifier_weights=path, detector=DetectorConfig(input_size=SIZE)))
    grey = (torch.rand(300, 260, generator=torch.Generator().manual_seed(2)) * 255).to(torch.uint8).numpy()
    radiograph = Radiograph("mem", grey, "MONOCHROME2", 8, Window.full_range(8), WindowSource.FULL_RANGE)
    findings = analyzer.analyze(radiograph)
    # 13 of the 14 ChestX-ray14 findings are among its outputs with a threshold; Hernia is left out.
    assert list(findings.probabilities) == [n for n in CHESTXRAY14 if n != "Hernia"]
    assert "Lung Opacity" not in findings.probabilities
    # Same numbers as running the network on the ±1024 input directly (calibration 0.5 is the identity).
    from inference.models.preprocess import classifier_crops

    crops, _ = classifier_crops(grey, 224, 224, False, 1, "xrv")
    assert crops.min() >= -1024 and crops.max() <= 1024
    direct = _probabilities(xrv, torch.from_numpy(crops))[0]
    for name, value in findings.probabilities.items():
        assert value == pytest.approx(float(direct[XRV_PATHOLOGIES.index(name)]), abs=1e-6)


def test_torchxrayvision_pickled_model_keeps_its_output_names(tmp_path):
    xrv = _xrv_model(seed=6)
    xrv.pathologies = ["Atelectasis", "", "Effusion"] + ["" for _ in range(15)]  # names travel with the object
    torch.save(xrv, tmp_path / "xrv-whole.pt")
    convert_pickled_checkpoint(tmp_path / "xrv-whole.pt", tmp_path / "xrv-plain.pt", trust_pickle=True)
    _, loaded = load_classifier(ClassifierConfig(), tmp_path / "xrv-plain.pt")
    assert loaded.output_names[:3] == ("Atelectasis", "", "Effusion")


# ------------------------------------------------------------ demo weights


def test_demo_weights_are_identical_across_runs(tmp_path):
    """Two separate processes with empty caches generate byte-identical demo weights."""
    code = ("from inference.models.weights import demo_state_dict; from inference.models.classifier import CheXNet;"
            "from inference.models.detector import YoloDetector, DetectorConfig;"
            "demo_state_dict(CheXNet()); demo_state_dict(YoloDetector(DetectorConfig(input_size=128)))")
    runs = {run: subprocess.Popen([sys.executable, "-c", code], cwd=ROOT,  # side by side: each is one process
                                  env=dict(os.environ, MEDEDGE_DATA_DIR=str(tmp_path / run))) for run in ("a", "b")}
    assert [process.wait(timeout=600) for process in runs.values()] == [0, 0]  # both waited for, even if one failed
    digests = []
    for run in runs:
        files = sorted((tmp_path / run / "weights").iterdir())
        assert [f.name for f in files] == ["demo-densenet121-c14-i3-s20260101-v3.pt",
                                           "demo-yolov4-p5-c1-s20260101-v3.pt"]
        digests.append([file_sha256(f) for f in files])
    assert digests[0] == digests[1]


def test_demo_weights_are_tame_and_recorded_as_demo(image):
    model, source = load_detector(DetectorConfig(input_size=SIZE), None)
    assert source == "demo"
    with torch.inference_mode():
        out = model(image)[0]
    assert torch.isfinite(out).all()
    assert float((out[:, 4] * out[:, 5]).max()) < 1.0  # not saturated
    chexnet, loaded = load_classifier(ClassifierConfig(), None)
    assert loaded.is_demo and loaded.source == "demo"
    state = demo_state_dict(CheXNet())
    assert all(torch.equal(state[k], v) for k, v in chexnet.state_dict().items())
    assert not math.isclose(float(state["classifier.weight"].std()), 0.0)
