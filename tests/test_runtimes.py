"""Local runtimes (onnxruntime FP32, dynamic and static QDQ INT8; OpenVINO FP32 and NNCF INT8; PyTorch FP16),
their fidelity gate, and `auto` choosing among the runtimes that pass it; `models quantize` on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
import torch

from inference.analysis.analyzer import Analyzer, ModelChoice
from inference.config import ModelKind, Runtime
from inference.edge.client import EdgeClient, EdgeSettings
from inference.edge.server import free_ports
from inference.models.parts import sample_input
from inference.models.weights import data_dir
from inference.planning.plan import ModelPlan, Plan
from inference.runtimes.fidelity import PROBABILITY_TOLERANCE
from inference.runtimes.local import (
    CALIBRATED,
    DYNAMIC,
    FP32,
    HALF,
    OV_FP32,
    OV_INT8,
    PRUNED,
    RUNTIMES,
    SITE_BUILT,
    STATIC,
    ChoiceStopped,
    RuntimeRefused,
    TorchHalf,
    choose_runtime,
    current_build,
    file_session,
    fp32_file,
    library_version,
    make_current,
    model_input,
    open_runtime,
    verdict,
)
from inference.runtimes.openvino import file_size
from viewer.display import render_8bit
from viewer.loader import load_radiograph

from conftest import ROOT
from test_edge import TINY

pytestmark = pytest.mark.timeout(600)

REAL = ["dicom/CR-MONO1-10-chest", "dicom/DX_chest_966_fixed.dcm", "raster/txv_nih_00027426_000_512px.png"]


@pytest.fixture(scope="module")
def setting(shared_cxr, tmp_path_factory):
    """Tiny detector and real-size CheXNet (demo weights), real radiographs, an own cache folder (kept apart
    from the session's data folder so that other tests' `auto` never meets these builds)."""
    analyzer = Analyzer(ModelChoice(detector=TINY))
    greys = [render_8bit(load_radiograph(shared_cxr / name)) for name in REAL]
    models = {"detector": (analyzer.detector, analyzer.detector_source),
              "classifier": (analyzer.classifier, analyzer.classifier_weights.source)}
    return models, greys, tmp_path_factory.mktemp("local-onnx")


@pytest.mark.parametrize("name", ["detector", "classifier"])
def test_int8_runtimes_run_quantised_and_are_gated(setting, name):
    models, greys, folder = setting
    model, weights = models[name]
    inputs = [model_input(model, grey) for grey in greys]
    fp32 = file_session(model, weights, folder)
    output = "output" if name == "detector" else "probabilities"
    for runtime in (DYNAMIC, STATIC, OV_INT8):
        session = file_session(model, weights, folder, runtime, calibration=inputs if runtime in CALIBRATED else None)
        assert session.runtime == runtime and session.path != fp32.path
        assert file_size(session.path) < 0.4 * fp32.path.stat().st_size  # INT8 weights, not FP32
        got, want = session.run(inputs[0]), fp32.run(inputs[0])
        assert set(got) == set(want) and all(got[k].shape == want[k].shape for k in got)
        assert np.all(np.isfinite(got[output])) and not np.array_equal(got[output], want[output])
        result = verdict(model, session, inputs)
        assert result["runtime"] == runtime and result["images"] == len(inputs)
        with torch.inference_mode():
            worst = max(float(np.abs(model(torch.from_numpy(x)).numpy() - session.run(x)[output]).max())
                        for x in inputs) if name == "classifier" else None
        if name == "classifier":
            assert result["max_difference"] == pytest.approx(worst, abs=1e-6)
            assert result["passes"] == (worst <= PROBABILITY_TOLERANCE)
        else:
            assert result["passes"] == (result["boxes_match"]
                                        and result["max_confidence_difference"] <= PROBABILITY_TOLERANCE)
        cached = session.path.with_name(f"{session.path.stem}.{runtime}.gate.json")
        assert json.loads(cached.read_text()) == result  # cached for `auto`


def test_a_kept_pass_holds_only_for_the_library_version_that_gave_it(tmp_path):
    """A verdict kept on disk: a pass by another onnxruntime or OpenVINO version is gated again (None) — but a
    site build's, gated on the site's radiographs, fails and says how to gate it again; a failure stands whatever
    the version."""
    from inference.runtimes.local import _cached_verdict, _verdict_file

    path = tmp_path / "model.onnx"
    for runtime in (OV_FP32, DYNAMIC, STATIC, OV_INT8, PRUNED):
        site_built = runtime in SITE_BUILT
        for passes, library, kept, now_passes in ((True, library_version(runtime), True, True),
                                                  (True, "0.0", site_built, False), (True, None, site_built, False),
                                                  (False, "0.0", True, False), (False, library_version(runtime), True, False)):
            _verdict_file(path, runtime).write_text(json.dumps({"passes": passes} | ({"library": library} if library
                                                                                     else {})))
            found = _cached_verdict(path, runtime, ModelKind.DETECTOR)
            assert (found is not None) == kept and (found is None or found["passes"] == now_passes), (runtime, library)
            if found is not None and passes and not now_passes:
                assert "stale" in found and "this workstation has" in found["stale"]
                assert ("models prune --models detector" if runtime is PRUNED else
                        f"models quantize --runtime {runtime} --models detector") in found["stale"]
    assert library_version(OV_FP32) != library_version(STATIC)  # OpenVINO's and onnxruntime's


def test_auto_runs_the_stages_before_a_cut_on_its_runtime_only_where_faster(monkeypatch, caplog):
    """Auto's rule for a split's first stages, as for a whole model: the runtime it chose (here OpenVINO) runs them
    only where measured faster than PyTorch. Their build slowed down is measured, refused and logged; with PyTorch
    slowed down more, kept and its time recorded for the planner. An explicitly asked runtime is not second-guessed."""
    import time as clock

    import inference.analysis.analyzer as analyzer_module
    from inference.runtimes.local import head_session

    chosen = lambda model, weights, folder, runtime, device=None: open_runtime(  # noqa: E731
        model, weights, folder, OV_FP32, device)  # what auto picks here is measured: made OpenVINO for the test
    monkeypatch.setattr(analyzer_module, "open_runtime", chosen)

    class Slowed:
        def __init__(self, session):
            self.session, self.runtime, self.path = session, session.runtime, session.path

        def run(self, batch):
            clock.sleep(0.5)
            return self.session.run(batch)
    monkeypatch.setattr(analyzer_module, "head_session", lambda *args: Slowed(head_session(*args)))
    for earlier in (data_dir() / "local-onnx").glob("detector_head0[67]-*.timing-*.json"):
        earlier.unlink()  # timings kept by other tests: these stages are timed here, slowed
    auto = Analyzer(ModelChoice(detector=TINY, runtime=Runtime.AUTO, device="cpu"))
    assert auto.runtimes[ModelKind.DETECTOR] is OV_FP32 and auto.runs_head(auto.detector, 6, False)
    with caplog.at_level("INFO", logger="inference.analysis.analyzer"):
        assert auto.head(auto.detector, 6) is None
    assert not auto.runs_head(auto.detector, 6, False) and (ModelKind.DETECTOR, 6) not in auto.head_times
    assert "stages before cut 6 of the detector" in caplog.text and "run in PyTorch" in caplog.text

    stages = auto.detector.run_stages

    def slower(*args, **kwargs):
        clock.sleep(1.5)
        return stages(*args, **kwargs)
    monkeypatch.setattr(auto.detector, "run_stages", slower)
    assert isinstance(auto.head(auto.detector, 7), Slowed) and auto.runs_head(auto.detector, 7, False)
    assert auto.head_times[(ModelKind.DETECTOR, 7)] >= 500
    explicit = Analyzer(ModelChoice(detector=TINY, runtime=OV_FP32, device="cpu"))
    assert isinstance(explicit.head(explicit.detector, 6), Slowed)

    # Measured once per machine: another process (a new analyzer) decides from the kept timings, without timing.
    kept = sorted((data_dir() / "local-onnx").glob("detector_head0[67]-*.timing-*.json"))
    try:
        assert len(kept) == 2
        monkeypatch.setattr(analyzer_module, "medians_in_turns", lambda runs: pytest.fail("timed again"))
        again = Analyzer(ModelChoice(detector=TINY, runtime=Runtime.AUTO, device="cpu"))
        with caplog.at_level("INFO", logger="inference.analysis.analyzer"):
            assert again.head(again.detector, 6) is None and isinstance(again.head(again.detector, 7), Slowed)
        assert again.head_times[(ModelKind.DETECTOR, 7)] == auto.head_times[(ModelKind.DETECTOR, 7)]
        assert "measured before on this machine" in caplog.text
    finally:  # timings of slowed stand-ins: no other test may decide from them
        for path in kept:
            path.unlink()


def test_auto_chooses_in_the_background_while_pytorch_analyses(setting, shared_cxr, tmp_path, monkeypatch):
    """`infer` and the viewer do not wait for auto's first choice on a machine (minutes on a slow workstation:
    export, INT8 build, gate, timing): the models run on PyTorch meanwhile, each moves to its runtime once chosen,
    the stages before the cuts split meanwhile are built on it, and the next start takes all that at once."""
    import shutil

    import inference.analysis.analyzer as analyzer_module

    _, _, folder = setting  # the module's builds (when the tests above ran): only the timing is left to do
    data = tmp_path / "data"
    data.mkdir()
    for entry in data_dir().iterdir():  # the session's demo weights; a data folder with no choice kept
        if entry.name != "local-onnx":
            (data / entry.name).symlink_to(entry)
    shutil.copytree(folder, data / "local-onnx", ignore=shutil.ignore_patterns("runtime-*.json"))
    monkeypatch.setenv("MEDEDGE_DATA_DIR", str(data))
    release = threading.Event()

    def held(*args):
        assert release.wait(timeout=300)
        return choose_runtime(*args)
    monkeypatch.setattr(analyzer_module, "choose_runtime", held)
    radiograph = load_radiograph(shared_cxr / REAL[2])
    auto = Analyzer(ModelChoice(detector=TINY, runtime=Runtime.AUTO, device="cpu"), choose_in_background=True)
    assert not auto.runtimes_ready.is_set() and set(auto.runtimes.values()) == {Runtime.TORCH}
    assert not auto.choosing_runtimes  # not before the first analysis (a session times its stage profile first)
    meanwhile = auto.with_edge(None).analyze(radiograph)  # a worklist's lane: it starts the choice for all
    assert {run.runtime for run in meanwhile.models.values()} == {Runtime.TORCH} and auto.choosing_runtimes
    # a split meanwhile (its edge down: CheXNet's stages before cut 7 ran here in PyTorch, then the rest)
    down = auto.with_edge(EdgeClient(EdgeSettings(f"127.0.0.1:{free_ports(1)[0]}", timeout_s=2)))
    split = down.analyze(radiograph, Plan(ModelPlan(auto.detector.stage_count), ModelPlan(7)), with_heat_maps=False)
    assert split.models[ModelKind.CLASSIFIER].runtime is Runtime.TORCH
    heads = data / "local-onnx"
    assert not list(heads.glob("classifier_head07-*.onnx"))
    release.set()
    assert auto.runtime_choice_done(timeout_s=300) and auto.runtimes_ready.is_set() and not auto.choosing_runtimes
    if auto.runtimes[ModelKind.CLASSIFIER] in (FP32, OV_FP32):  # built and timed, for this start and the next
        assert list(heads.glob("classifier_head07-*.onnx")) and list(heads.glob("classifier_head07-*.timing-*.json"))
        assert (ModelKind.CLASSIFIER, 7) in auto.head_times or not auto.runs_head(auto.classifier, 7, False)
    kept = {name: json.loads(next((data / "local-onnx").glob(f"runtime-*-{name}-*.json")).read_text())["runtime"]
            for name in ("detector", "classifier")}
    assert {kind.value: runtime for kind, runtime in auto.runtimes.items()} == kept
    after = auto.analyze(radiograph)
    assert {kind: run.runtime for kind, run in after.models.items()} == kept
    assert max(abs(after.probabilities[k] - v) for k, v in meanwhile.probabilities.items()) <= PROBABILITY_TOLERANCE

    monkeypatch.setattr(analyzer_module, "choose_runtime", lambda *args: pytest.fail("measured again"))
    again = Analyzer(ModelChoice(detector=TINY, runtime=Runtime.AUTO, device="cpu"), choose_in_background=True)
    assert again.runtimes_ready.is_set() and again.runtimes == auto.runtimes

    stop = threading.Event()  # the process is ending (session.close): the choice stops before its next step
    stop.set()
    model, weights = setting[0]["classifier"]
    with pytest.raises(ChoiceStopped):
        choose_runtime(model, weights, tmp_path / "elsewhere", stop)
    assert not list((tmp_path / "elsewhere").glob("*"))


@pytest.mark.parametrize("name", ["detector", "classifier"])
def test_openvino_fp32_runs_the_exported_model_at_fp32(setting, name):
    """OpenVINO compiles the same FP32 ONNX: its results equal onnxruntime's to float rounding (no BF16 or FP16
    behind the user's back), it is gated like every runtime, and `open_runtime` hands it out."""
    models, greys, folder = setting
    model, weights = models[name]
    inputs = [model_input(model, grey) for grey in greys]
    reference = file_session(model, weights, folder)
    session = open_runtime(model, weights, folder, OV_FP32)
    assert session is not None and session.runtime == OV_FP32 and session.path == reference.path
    for image in inputs:
        got, want = session.run(image), reference.run(image)
        assert set(got) == set(want)
        for key in got:  # to float rounding, relative to the tensor's scale (the detector's boxes are in pixels)
            assert np.abs(got[key] - want[key]).max() <= 1e-4 * max(1.0, np.abs(want[key]).max()), key
    assert verdict(model, session, inputs)["passes"]


def test_openvino_and_nncf_never_report_usage(tmp_path):
    """`import openvino` sends a usage event to Intel, and NNCF another, unless their telemetry package is kept out
    (NNCF keeps it out itself only under pytest: checked in plain interpreters, each with its own home folder).
    Through the product, both are bound to their no-op stand-ins and nothing is written for a client id."""
    code = ("import {0}; import openvino, nncf, nncf.telemetry.wrapper as w; "
            "from openvino.tools.ovc import telemetry_utils as u; "
            "print(u.tm.__name__ == 'openvino_telemetry', isinstance(w.telemetry, w.NNCFTelemetry))")
    results = {}
    for name, module in (("bare", "sys"), ("ours", "inference.runtimes.openvino")):
        home = tmp_path / name
        home.mkdir()
        done = subprocess.run([sys.executable, "-c", code.format(module)], capture_output=True, text=True, check=True,
                              cwd=ROOT, env=os.environ | {"CI": "", "HOME": str(home)}, timeout=120)
        results[name] = (done.stdout.split()[-2:], sorted(p.name for p in home.rglob("*")))
    assert results["bare"][0] == ["True", "True"]  # what a bare import does: the check could fail
    assert results["ours"] == (["False", "False"], [])


def test_int8_runtimes_run_the_stages_before_a_cut_only_where_the_split_passes_the_gate(setting, shared_cxr, tmp_path,
                                                                                         monkeypatch,
                                                                                         _demo_weights_cache):
    """A calibrated INT8 runtime runs a split's first stages too: quantised on the radiographs its whole build was
    calibrated on (read again from the folder `models quantize` was given), kept only where the split it makes —
    INT8 stages, each wire encoding, the rest in FP32 — passes the gate on those held back; else refused, saying
    why (the analyzer then runs those stages in PyTorch). A user's CheXNet whose outputs are less sensitive than
    the demo weights' passes; the demo weights' fails at every cut, as its whole INT8 build does. A study meets a
    cut not built yet: PyTorch runs its stages while they are built in the background."""
    from inference.analysis.analyzer import Analyzer as Loaded
    from inference.models.stages import INPUT
    from inference.runtimes.fidelity import split_held_back
    from inference.runtimes.local import calibration_fingerprint, head_session, site_radiographs

    models, _, _ = setting
    demo, demo_weights = models["classifier"]
    tamed = {name: value * (0.03 if name == "classifier.weight" else 1) for name, value in demo.state_dict().items()}
    torch.save(tamed, tmp_path / "site-chexnet.pt")
    site_data = tmp_path / "site-data"  # the analyzer's own data folder (its builds apart from other tests')
    (site_data / "local-onnx").mkdir(parents=True)
    (site_data / "weights").symlink_to(_demo_weights_cache / "weights", target_is_directory=True)
    monkeypatch.setenv("MEDEDGE_DATA_DIR", str(site_data))
    loaded = Loaded(ModelChoice(detector=TINY, classifier_weights=str(tmp_path / "site-chexnet.pt")))
    model, weights = loaded.classifier, loaded.classifier_weights.source
    images = tmp_path / "radiographs"
    images.mkdir()
    for name in REAL:
        (images / name.replace("/", "-")).symlink_to(shared_cxr / name)
    (images / "notes.txt").write_text("not an image")  # skipped, as `models quantize` skips it
    cut = 4
    for chexnet, chexnet_weights, passes in ((model, weights, True), (demo, demo_weights, False)):
        folder = site_data / "local-onnx" if passes else tmp_path / "demo"
        inputs = [model_input(chexnet, grey) for grey in site_radiographs(images)[0]]  # as `models quantize` reads
        calibration, held_back = split_held_back(inputs)  # … and splits them
        whole = file_session(chexnet, chexnet_weights, folder, OV_INT8, calibration=calibration, images_folder=images,
                             held_back=len(held_back))
        assert verdict(chexnet, whole, held_back)["passes"] == passes
        if not passes:
            with pytest.raises(RuntimeRefused, match=f"fails the fidelity gate for the stages before cut {cut} "
                                                     "of the classifier"):
                head_session(chexnet, chexnet_weights, folder, OV_INT8, cut)
            continue
        head = head_session(chexnet, chexnet_weights, folder, OV_INT8, cut)
        fp32 = head_session(chexnet, chexnet_weights, folder, OV_FP32, cut)
        assert head.runtime == OV_INT8 and head.path.suffix == ".xml" and head.outputs == fp32.outputs
        assert file_size(head.path) < 0.4 * file_size(fp32.path)  # INT8 weights
        kept = json.loads(head.path.with_name(f"{head.path.stem}.{OV_INT8}.gate.json").read_text())
        assert kept["passes"] and kept["cut"] == cut and kept["images"] == len(held_back) == 1
        assert kept["wires"] == {"fp32": True, "fp16": True, "int8": True}
        # What the split computes with it: really quantised, and within the gate of the whole model in FP32.
        with torch.inference_mode():
            for x in inputs:
                got, want = head.run(x), fp32.run(x)
                assert not all(np.array_equal(got[k], want[k]) for k in got)
                crossing = {i: torch.from_numpy(got[f"t{i:02d}"]) for i in chexnet.crossing(cut)}
                split = chexnet.run_stages(crossing, cut, chexnet.stage_count)[chexnet.stage_count - 1]
                reference = chexnet.run_stages({INPUT: torch.from_numpy(x)}, 0, chexnet.stage_count)
                assert float((split - reference[chexnet.stage_count - 1]).abs().max()) <= PROBABILITY_TOLERANCE
        stamp = head.path.stat().st_mtime_ns
        assert head_session(chexnet, chexnet_weights, folder, OV_INT8, cut).path == head.path  # kept: not rebuilt
        assert head.path.stat().st_mtime_ns == stamp
        # Gated under another OpenVINO: gated again under this one (its radiographs are at hand), not refused.
        gate_file = head.path.with_name(f"{head.path.stem}.{OV_INT8}.gate.json")
        gate_file.write_text(json.dumps(kept | {"library": "0.0"}))
        assert head_session(chexnet, chexnet_weights, folder, OV_INT8, cut).runtime == OV_INT8
        assert json.loads(gate_file.read_text())["library"] == library_version(OV_INT8)
        # A study split at a cut not built yet: its stages run in PyTorch (None) while they are quantised and gated
        # in the background, the next study does not wait for them either, and those after it use them.
        loaded.runtimes[ModelKind.CLASSIFIER] = OV_INT8  # as `--runtime openvino-int8` sets it (the demo
        #                                                   detector's own INT8 build would fail the gate)
        assert loaded.head(model, 3, build=False) is None and loaded.building_heads
        assert loaded.head(model, 3, build=False) is None
        assert loaded.heads_built(timeout_s=300)
        built = loaded.head(model, 3, build=False)
        assert built is not None and built.runtime == OV_INT8 and built.path.name.startswith("classifier_head03-")
        # onnxruntime's static QDQ runs them too, from its own whole build's radiographs.
        file_session(chexnet, chexnet_weights, folder, STATIC, calibration=calibration, images_folder=images,
                     held_back=len(held_back))
        static = head_session(chexnet, chexnet_weights, folder, STATIC, cut)
        assert static.runtime == STATIC and "int8-static" in static.path.name and static.outputs == fp32.outputs
        assert file_size(static.path) < 0.4 * file_size(fp32.path)
        # A build recorded without its radiographs' folder (by an earlier version): refused, saying how to fix.
        whole_fp32 = fp32_file(chexnet, chexnet_weights, folder)[0]
        static_build = current_build(whole_fp32, STATIC)
        make_current(whole_fp32, STATIC, static_build, len(inputs))
        with pytest.raises(RuntimeRefused, match="does not say which radiographs calibrated it"):
            head_session(chexnet, chexnet_weights, folder, STATIC, cut)
        # … or gated on the radiographs it was calibrated on (an earlier version held none back): refused, the whole
        # build and its stages alike, and not current for auto.
        make_current(whole_fp32, STATIC, static_build, len(inputs), calibration_fingerprint(inputs), images)
        record_file = whole_fp32.with_name(f"{whole_fp32.stem}-int8-static.json")
        record_file.write_text(json.dumps({k: v for k, v in json.loads(record_file.read_text()).items()
                                           if k != "held_back"}))
        earlier = "earlier version, which gated it on the radiographs it was calibrated on: .*models quantize"
        with pytest.raises(RuntimeRefused, match=earlier):
            head_session(chexnet, chexnet_weights, folder, STATIC, 2)
        with pytest.raises(RuntimeRefused, match=earlier):
            file_session(chexnet, chexnet_weights, folder, STATIC)
        assert current_build(whole_fp32, STATIC) is None
        # The radiographs changed since the whole build was calibrated on them: a new cut is not calibrated on others.
        next(images.glob("*DX_chest*")).unlink()
        with pytest.raises(RuntimeRefused, match="no longer as they were in .*models quantize --runtime openvino-int8"):
            head_session(chexnet, chexnet_weights, folder, OV_INT8, 2)
        (images / "dicom-DX_chest_966_fixed.dcm").symlink_to(shared_cxr / REAL[1])


def test_builds_are_cached_per_method_and_calibration_set(setting):
    models, greys, folder = setting
    model, weights = models["classifier"]
    inputs = [model_input(model, grey) for grey in greys]
    first = file_session(model, weights, folder, DYNAMIC).path
    stamp = first.stat().st_mtime_ns
    assert file_session(model, weights, folder, DYNAMIC).path == first and first.stat().st_mtime_ns == stamp
    static = file_session(model, weights, folder, STATIC, calibration=inputs).path
    stamp = static.stat().st_mtime_ns
    assert file_session(model, weights, folder, STATIC, calibration=inputs).path == static
    assert file_session(model, weights, folder, STATIC).path == static  # without images: the current build
    assert static.stat().st_mtime_ns == stamp  # not quantised again
    other = file_session(model, weights, folder, STATIC, calibration=inputs[:2]).path
    assert other != static and current_build(fp32_file(model, weights, folder)[0], STATIC) == other
    file_session(model, weights, folder, STATIC, calibration=inputs)  # back to the first set: reused, made current
    assert static.stat().st_mtime_ns == stamp and current_build(fp32_file(model, weights, folder)[0], STATIC) == static


@pytest.mark.parametrize("runtime", SITE_BUILT)
def test_site_built_runtimes_are_refused_until_built(setting, tmp_path, runtime):
    models, _, _ = setting
    how = "prune" if runtime == PRUNED else f"quantize --runtime {runtime}"
    model, weights = models["classifier"]
    with pytest.raises(RuntimeRefused, match=f"models {how} --models classifier --images"):
        file_session(model, weights, tmp_path, runtime)
    with pytest.raises(RuntimeRefused, match=f"models {how} --models classifier --images"):
        open_runtime(model, weights, tmp_path, runtime)
    assert not list(tmp_path.iterdir())  # refused without exporting anything


def test_auto_takes_the_fastest_runtime_that_passes_the_gate(setting):
    models, greys, tmp_path = setting  # the module's cache: builds of the tests above are reused
    model, weights = models["classifier"]
    real = [model_input(model, grey) for grey in greys]
    # Calibrated on one black image, the activation ranges are useless for radiographs: the gate must fail.
    bad = file_session(model, weights, tmp_path, STATIC, calibration=[model_input(model, np.zeros((256, 256), np.uint8))])
    failed = verdict(model, bad, real)
    assert not failed["passes"] and failed["max_difference"] > PROBABILITY_TOLERANCE
    with pytest.raises(RuntimeRefused, match="fails the fidelity gate"):
        open_runtime(model, weights, tmp_path, STATIC)
    bad_openvino = file_session(model, weights, tmp_path, OV_INT8,
                                calibration=[model_input(model, np.zeros((256, 256), np.uint8))])
    assert not verdict(model, bad_openvino, real)["passes"]

    runtime, session = choose_runtime(model, weights, tmp_path)
    (record_path,) = tmp_path.glob("runtime-*-classifier-*.json")
    record = json.loads(record_path.read_text())
    for failed_runtime in (STATIC, OV_INT8):
        assert record["gate"][failed_runtime]["passes"] is False and f"{failed_runtime}_ms" not in record  # untimed
    assert runtime not in (STATIC, OV_INT8) and runtime == record["runtime"]
    timed = {k[:-3]: v for k, v in record.items() if k.endswith("_ms")}
    assert {"torch", FP32, OV_FP32} <= set(timed) and runtime == min(timed, key=timed.get)
    assert (DYNAMIC in timed) == record["gate"][DYNAMIC]["passes"]
    assert (session is None) == (runtime == "torch") and (session is None or session.runtime == runtime)
    stamp = record_path.stat().st_mtime_ns
    assert choose_runtime(model, weights, tmp_path)[0] == runtime and record_path.stat().st_mtime_ns == stamp

    good = file_session(model, weights, tmp_path, STATIC, calibration=real)  # a new static build: measure again
    passed = verdict(model, good, real)
    choose_runtime(model, weights, tmp_path)
    record = json.loads(record_path.read_text())
    assert record["gate"][STATIC]["passes"] == passed["passes"] and (f"{STATIC}_ms" in record) == passed["passes"]

    # A build this machine's OpenVINO cannot read (damaged, or written by another version): left out, auto goes on.
    fp32, _ = fp32_file(model, weights, tmp_path)
    damaged = fp32.with_name(f"{fp32.stem}-openvino-int8-damaged.xml")
    damaged.write_text("<net name='damaged'")
    damaged.with_suffix(".bin").write_bytes(b"")
    make_current(fp32, OV_INT8, damaged, 1)
    runtime = choose_runtime(model, weights, tmp_path)[0]
    record = json.loads(record_path.read_text())
    assert record["gate"][OV_INT8]["passes"] is False and record["gate"][OV_INT8]["error"]
    assert runtime != OV_INT8 and runtime == record["runtime"]

    # Dynamic INT8 judged on the synthetic sample alone (`models quantize` without images, or an earlier version):
    # not weighed — on it CheXNet's passed where real radiographs failed. Its pass on radiographs under another
    # onnxruntime: stale, saying how to gate it again (not re-gated on the sample).
    assert DYNAMIC in record["candidates"] and record["gate"][DYNAMIC]["radiographs"]
    from inference.runtimes.local import _cached_verdict, _verdict_file, quantized_file

    gate_file = _verdict_file(quantized_file(fp32, DYNAMIC), DYNAMIC)
    on_radiographs = json.loads(gate_file.read_text())
    gate_file.write_text(json.dumps(on_radiographs | {"passes": True, "library": "0.0"}))
    stale = _cached_verdict(quantized_file(fp32, DYNAMIC), DYNAMIC, ModelKind.CLASSIFIER)
    assert stale is not None and not stale["passes"]
    assert "models quantize --runtime onnxruntime-int8-dynamic" in stale["stale"]
    dynamic = file_session(model, weights, tmp_path, DYNAMIC)
    sampled = verdict(model, dynamic, [sample_input(model).numpy()]) | {"radiographs": False}
    dynamic.path.with_name(f"{dynamic.path.stem}.{DYNAMIC}.gate.json").write_text(json.dumps(sampled))
    choose_runtime(model, weights, tmp_path)
    assert DYNAMIC not in json.loads(record_path.read_text())["candidates"]


def test_fp16_runtime_runs_the_whole_model_at_half_precision_within_the_gate(setting, shared_cxr):
    """PyTorch FP16 is meant for CUDA; it runs on a CPU too (slowly), which is how it is checked here: the
    whole model in half precision, results within the gate of FP32, and each result says it ran FP16."""
    models, greys, _ = setting
    model, _ = models["classifier"]
    half = TorchHalf(model, torch.device("cpu"))
    assert {p.dtype for p in half.model.parameters()} == {torch.float16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the FP32 model is left as it was
    real = [model_input(model, grey) for grey in greys]
    gate = verdict(model, half, real)
    assert gate["passes"] and 0 < gate["max_difference"] <= PROBABILITY_TOLERANCE, gate  # really rounded
    radiograph = load_radiograph(shared_cxr / REAL[2])
    fp16 = Analyzer(ModelChoice(detector=TINY, runtime=HALF)).analyze(radiograph)
    fp32 = Analyzer(ModelChoice(detector=TINY)).analyze(radiograph)
    assert {kind: run.runtime for kind, run in fp16.models.items()} == {"detector": HALF, "classifier": HALF}
    assert max(abs(fp16.probabilities[k] - v) for k, v in fp32.probabilities.items()) <= PROBABILITY_TOLERANCE
    assert fp16.heat_map("Effusion").shape == fp32.heat_map("Effusion").shape  # the features came back too


def test_every_runtime_is_offered_and_checked():
    """The command line offers every runtime without importing torch; the app's settings accept them all."""
    from app.settings import AppSettings

    code = ("import sys; from app.cli import parser; "
            "args = parser().parse_args(['infer', 'x.png', '--runtime', 'onnxruntime-int8-dynamic']); "
            "print(args.runtime, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.split() == ["onnxruntime-int8-dynamic", "False"]
    assert all(AppSettings(runtime=name).runtime == name for name in RUNTIMES)
    with pytest.raises(ValueError, match="runtime must be one of"):
        AppSettings(runtime="tensorrt")


def test_models_quantize_command_on_generated_pngs(tmp_path, _demo_weights_cache):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    for index in range(4):  # smooth, radiograph-like grey images of different sizes
        coarse = rng.random((6, 5)).astype(np.float32)
        grey = cv2.resize(coarse, (300 + 40 * index, 360), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(images / f"study{index}.png"), np.clip(grey * 255, 0, 255).astype(np.uint8))
    (images / "series").mkdir()  # a sub-folder's radiographs count too, as a PACS export lays them out
    (images / "study3.png").rename(images / "series" / "study3.png")
    (images / "notes.txt").write_text("not an image")
    data = tmp_path / "data"
    data.mkdir()
    (_demo_weights_cache / "weights").mkdir(exist_ok=True)
    (data / "weights").symlink_to(_demo_weights_cache / "weights", target_is_directory=True)  # demo weights reused
    env = os.environ | {"MEDEDGE_DATA_DIR": str(data)}
    command = [sys.executable, str(ROOT / "main.py"), "models", "quantize", "--models", "classifier"]

    one = tmp_path / "one"  # nothing would be left to gate it on
    one.mkdir()
    (one / "study0.png").symlink_to(images / "study0.png")
    refused = subprocess.run(command + ["--images", str(one)], capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=300)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "at least 2 with --images DIR (1 of its files" in refused.stderr

    done = subprocess.run(command + ["--images", str(images)], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "notes.txt" in done.stderr and "Traceback" not in done.stderr
    (line,) = done.stdout.splitlines()
    record = json.loads(line)
    assert record["model"] == "classifier" and record["runtime"] == STATIC and record["calibration_images"] == 3
    # gated on the one it was not calibrated on
    assert record["held_back_images"] == record["images"] == 1 and isinstance(record["passes"], bool)
    assert record["max_difference"] >= 0
    built = data / "local-onnx" / os.path.basename(record["file"])
    assert built.is_file() and built.name.startswith("classifier_cut00_fp32-") and "int8-static" in built.name
    assert current_build(built.with_name(built.name.split("-int8-")[0] + ".onnx"), STATIC) == built

    openvino = subprocess.run(command + ["--runtime", OV_INT8, "--images", str(images)], capture_output=True,
                              text=True, cwd=ROOT, env=env, timeout=300)
    assert openvino.returncode == 0 and "Traceback" not in openvino.stderr, openvino.stderr
    (line,) = openvino.stdout.splitlines()  # NNCF's progress bars and log lines stay off stdout
    record = json.loads(line)
    assert record["runtime"] == OV_INT8 and record["calibration_images"] == 3 and isinstance(record["passes"], bool)
    built = data / "local-onnx" / os.path.basename(record["file"])
    assert built.suffix == ".xml" and built.with_suffix(".bin").is_file()
    whole = built.with_name(built.name.split("-openvino-int8-")[0] + ".onnx")
    assert current_build(whole, OV_INT8) == built
    # where its radiographs are, for the stages before a cut (calibrated on them when first split there)
    kept = json.loads(whole.with_name(f"{whole.stem}-{OV_INT8}.json").read_text())
    assert kept["images_folder"] == str(images.resolve()) and kept["images"] == 3 and built.stem.endswith(
        kept["calibration"])
