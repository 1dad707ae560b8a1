"""The spatial split of the detector's first stages (inference/models/bands.py) on this workstation: bands with
the measured halo give the unsplit model's tensors; a halo one row of strides short does not (so the comparison
can fail); the band part's ONNX equals PyTorch. Against real Triton servers: tests/test_spread.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inference.models.bands import BandSplit, band_split
from inference.models.detector import YoloDetector
from inference.models.parts import band_part_spec, export_part, part_difference, sample_input
from inference.models.stages import INPUT

from test_edge import TINY


@pytest.fixture(scope="module")
def detector() -> YoloDetector:
    torch.manual_seed(0)
    return YoloDetector(dataclasses.replace(TINY, input_size=192)).eval()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the tensor's range (demo weights make deep activations tiny)."""
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize(("cut", "count"), [(3, 2), (5, 2), (6, 2), (3, 3), (5, 3)])
def test_bands_with_the_measured_halo_equal_the_unsplit_stages(detector, cut, count):
    split = band_split(detector, cut, count, 192)
    assert split is not None and split.rows < 192 and split.halo % split.align == 0
    assert split.starts[0] == 0 and split.starts[-1] + split.rows == 192  # the image's edges are bands' edges
    image = torch.rand(2, 3, 192, 192)
    with torch.inference_mode():
        whole = detector.run_stages({INPUT: image}, 0, cut)
        joined = split.join([detector.run_stages({INPUT: band}, 0, cut) for band in split.bands(image)])
    assert joined.keys() == whole.keys()
    for index, tensor in whole.items():
        assert joined[index].shape == tensor.shape
        assert _relative(tensor, joined[index]) < 1e-5


def test_a_halo_short_of_the_receptive_field_changes_the_result(detector):
    split = band_split(detector, 5, 2, 192)
    assert split is not None and split.halo >= 2 * split.align
    short = dataclasses.replace(split, halo=split.halo - split.align)
    image = torch.rand(1, 3, 192, 192)
    with torch.inference_mode():
        whole = detector.run_stages({INPUT: image}, 0, 5)
        joined = short.join([detector.run_stages({INPUT: band}, 0, 5) for band in short.bands(image)])
    assert max(_relative(t, joined[i]) for i, t in whole.items()) > 1e-5  # the tolerance the other test holds to


def test_no_split_where_it_cannot_help(detector):
    assert band_split(detector, 0, 2, 192) is None  # nothing before the cut
    assert band_split(detector, detector.stage_count, 2, 192) is None
    assert band_split(detector, 11, 2, 192) is None  # the backbone's receptive field spans the image
    with pytest.raises(ValueError, match="two bands"):
        BandSplit(3, 1, 192, 4, 2)


def test_the_band_part_exports_and_equals_pytorch(detector, tmp_path):
    split = band_split(detector, 5, 2, 192)
    assert split is not None
    spec = band_part_spec(detector, 5, split.rows, "demo")
    assert spec.name == f"detector_band05_{split.rows}rows" and spec.inputs[0].shape == (3, split.rows, 192)
    export_part(detector, spec, tmp_path / "model.onnx")  # raises when ONNX and PyTorch differ
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    band = sample_input(detector)[:, :, split.starts[1]:split.starts[1] + split.rows].numpy()
    (got,) = session.run([spec.outputs[0].name], {"image": band})
    with torch.inference_mode():
        want = detector.run_stages({INPUT: torch.from_numpy(band)}, 0, 5)[4].numpy()
    assert got.shape == want.shape and part_difference(spec.kind, "t04", want, got, 192) < 1e-4
    assert np.abs(want).max() > 0
