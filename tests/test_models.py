"""Model structure: output shapes for P5/P6/P7, parameter counts, stage cuts, key names."""

import pytest
import torch

from inference.models.classifier import CHESTXRAY14, CheXNet, ClassifierConfig
from inference.models.detector import DetectorConfig, YoloDetector
from inference.models.stages import INPUT

SIZE = 128  # a multiple of P7's largest stride; keeps every forward pass cheap


@pytest.mark.parametrize(
    "architecture, strides, millions",
    [("yolov4-p5", (8, 16, 32), 70.3), ("yolov4-p6", (8, 16, 32, 64), 126.7),
     ("yolov4-p7", (8, 16, 32, 64, 128), 286.1)],
)
def test_detector_output_shapes_and_size(architecture, strides, millions):
    model = YoloDetector(DetectorConfig(architecture=architecture, input_size=SIZE)).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 3, SIZE, SIZE))
    cells = sum((SIZE // s) ** 2 for s in strides)
    assert out.shape == (2, 4 * cells, 6)  # 4 anchors per cell; cx, cy, w, h, objectness, "opacity"
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.1)
    assert model.detect.stride.tolist() == list(strides)


def test_detector_decode_is_in_input_pixels():
    model = YoloDetector(DetectorConfig(input_size=SIZE)).eval()
    with torch.inference_mode():
        out = model(torch.rand(1, 3, SIZE, SIZE))[0]
    assert out[:, 0].min() >= -0.5 * 32 and out[:, 0].max() <= SIZE + 0.5 * 32
    assert torch.all(out[:, 4:] >= 0) and torch.all(out[:, 4:] <= 1)


def test_detector_state_dict_keys_match_the_original_layout():
    keys = YoloDetector(DetectorConfig(input_size=SIZE)).state_dict().keys()
    for key in ("model.0.conv.weight", "model.0.bn.running_var", "model.2.cv1.conv.weight", "model.2.cv2.weight",
                "model.2.m.0.cv1.conv.weight", "model.2.bn.weight", "model.11.cv7.bn.bias",
                "model.16.m.2.cv2.conv.weight", "model.31.m.0.weight", "model.31.m.2.bias",
                "model.31.anchors", "model.31.anchor_grid"):
        assert key in keys, key
    assert not any("stride" in k for k in keys)


def test_mededge_cuts_cross_one_tensor_and_neck_cuts_several():
    model = YoloDetector(DetectorConfig(input_size=SIZE))
    assert model.stage_count == 32 and list(model.cut_points) == list(range(33))
    assert model.crossing(0) == (INPUT,)
    for cut in range(1, 7):  # MedEdge's points 1..6: after layers 0..5
        assert model.crossing(cut) == (cut - 1,)
    assert model.crossing(8) == (6, 7)          # layer 6 is read again by the neck (layer 19)
    assert model.crossing(15) == (6, 11, 13, 14)
    assert model.crossing(32) == (31,)


def test_split_at_every_cut_equals_the_whole_model():
    torch.manual_seed(0)
    for model in (YoloDetector(DetectorConfig(input_size=SIZE)).eval(), CheXNet().eval()):
        x = torch.rand(1, 3, SIZE, SIZE)
        with torch.inference_mode():
            whole = model(x)
            for cut in model.cut_points:
                here = model.run_stages({INPUT: x}, 0, cut)
                assert tuple(here) == model.crossing(cut)
                there = model.run_stages(here, cut, model.stage_count)[model.stage_count - 1]
                assert torch.equal(there, whole), f"{type(model).__name__} cut {cut}"


def test_run_stages_refuses_missing_tensors():
    model = CheXNet()
    with pytest.raises(ValueError, match="cut 3 needs tensors"):
        model.run_stages({INPUT: torch.zeros(1, 3, 64, 64)}, 3, 5)
    with pytest.raises(ValueError, match="outside"):
        model.crossing(99)


def test_chexnet_structure():
    model = CheXNet().eval()
    keys = model.state_dict().keys()
    assert "features.denseblock4.denselayer16.conv2.weight" in keys
    assert "features.transition3.conv.weight" in keys and "classifier.weight" in keys
    assert model.classifier.weight.shape == (14, 1024)
    assert sum(p.numel() for p in model.parameters()) == 6_968_206  # torchvision's 7,978,856 − 1000-way + 14-way head
    with torch.inference_mode():
        out = model(torch.rand(3, 3, 224, 224))
    assert out.shape == (3, 14) and torch.all((out > 0) & (out < 1))
    names = [s.name for s in model.stages]
    assert names[0] == "stem" and names[-2:] == ["features", "head"]
    assert model.crossing(names.index("transition3") + 1) == (names.index("transition3"),)


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="multiple of 32"):
        DetectorConfig(input_size=500)
    with pytest.raises(ValueError, match="multiple of 128"):
        DetectorConfig(architecture="yolov4-p7", input_size=512 + 64)
    with pytest.raises(ValueError, match="unknown detector"):
        DetectorConfig(architecture="yolov9")
    with pytest.raises(ValueError, match="in_channels"):
        ClassifierConfig(in_channels=2)
    assert ClassifierConfig().classes == CHESTXRAY14
