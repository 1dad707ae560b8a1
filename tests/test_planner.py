"""Compressed wire formats and cut planning, against a real Triton on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.analysis.analyzer import AHEAD, Analyzer, ModelChoice
from inference.config import ModelKind, WireFormat
from inference.edge.client import EdgeClient, EdgeSettings
from inference.edge.repository import PartRequest, write_repository
from inference.models.findings import Mode
from inference.models.wire import dequantize_torch, quantize
from inference.planning.plan import ModelPlan, Plan
from inference.planning.planner import (
    OFFLOAD_MARGIN,
    Option,
    Planner,
    local_stage_ms,
    passes_fidelity,
    study_preference,
)
from inference.runtimes.local import RUNTIMES
from viewer.loader import load_radiograph

from conftest import ROOT, measured, runtimes, wires
from test_edge import TINY, start_server

pytestmark = pytest.mark.timeout(900)


def test_int8_codes_round_trip_within_half_a_step():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (2, 5, 7, 9)).astype(np.float32)
    x[1, 2] = np.abs(x[1, 2])  # an all-positive channel: zero must stay exact
    codes, scale, zero = quantize(x)
    assert codes.dtype == np.uint8 and scale.shape == zero.shape == (2, 5)
    back = dequantize_torch(torch.from_numpy(codes), torch.from_numpy(scale), torch.from_numpy(zero)).numpy()
    assert np.all(np.abs(back - x) <= scale[..., None, None] / 2 + 1e-6)
    assert dequantize_torch(torch.tensor([[[[int(zero[1, 2])]]]], dtype=torch.uint8),
                            torch.from_numpy(scale[1:2, 2:3]), torch.from_numpy(zero[1:2, 2:3])).item() == 0.0


def test_wire_formats_say_their_encoding_and_compression():
    assert WireFormat.INT8_DEFLATE.encoding is WireFormat.INT8 and WireFormat.INT8_DEFLATE.compression == "deflate"
    assert all(w.compression is None and w.encoding is w for w in WireFormat if w is not WireFormat.INT8_DEFLATE)


@pytest.fixture(scope="module")
def planned(tmp_path_factory, shared_cxr):
    root = tmp_path_factory.mktemp("plan")
    analyzer = Analyzer(ModelChoice(detector=TINY))
    requests = [PartRequest(analyzer.detector, analyzer.detector_source, cut, wire)
                for cut in (0, 6, 15) for wire in (WireFormat.FP32, WireFormat.INT8)]
    requests += [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, cut, wire)
                 for cut in (0, 7) for wire in (WireFormat.FP16, WireFormat.INT8)]
    write_repository(root / "repository", requests, gpu=False)
    server = start_server(root / "repository", root)
    analyzer.edge = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=60))
    yield analyzer, load_radiograph(shared_cxr / "raster/txv_nih_00027426_000_512px.png")
    server.stop()


def test_int8_wire_through_the_server_matches_the_local_simulation(planned):
    analyzer, radiograph = planned
    local = analyzer.analyze(radiograph)
    for cut in (0, 6, 15):
        plan = Plan(ModelPlan(cut, WireFormat.INT8), ModelPlan(7, WireFormat.INT8))
        split = analyzer.analyze(radiograph, plan, allow_fallback=False)
        assert split.mode in (Mode.EDGE, Mode.DISTRIBUTED) and wires(split) == {"detector": "int8", "classifier": "int8"}
        assert max(abs(split.probabilities[k] - v) for k, v in local.probabilities.items()) <= 0.02
        assert analyzer.part(analyzer.detector, cut, WireFormat.INT8).input_bytes * 3.5 < \
            analyzer.part(analyzer.detector, cut, WireFormat.FP32).input_bytes


def test_int8_deflate_is_lossless_and_compresses_what_goes_over_the_link(planned, shared_cxr):
    """int8+deflate reaches the same int8 part with the request deflated by gRPC: identical results, fewer
    bytes through a relay that counts them."""
    from bench.relay import Relay

    analyzer, _ = planned
    radiograph = load_radiograph(shared_cxr / "dicom/CR-MONO1-10-chest")
    direct = analyzer.edge
    host, port = direct.settings.address.rsplit(":", 1)
    sent, results = {}, {}
    try:
        for wire in (WireFormat.INT8, WireFormat.INT8_DEFLATE):
            with Relay((host, int(port)), capture=True) as relay:
                analyzer.edge = EdgeClient(EdgeSettings(relay.address, timeout_s=60))
                plan = Plan(ModelPlan(0, wire), ModelPlan(analyzer.classifier.stage_count))  # the detector offloaded
                results[wire] = analyzer.analyze(radiograph, plan, allow_fallback=False)
                sent[wire] = len(relay.sent)
                analyzer.edge.close()
    finally:
        analyzer.edge = direct
    plain, packed = results[WireFormat.INT8], results[WireFormat.INT8_DEFLATE]
    assert packed.mode is Mode.DISTRIBUTED and wires(packed) == {"detector": "int8+deflate"}  # classifier here
    assert [(d.score, d.box_xyxy) for d in packed.detections] == [(d.score, d.box_xyxy) for d in plain.detections]
    planner = Planner(analyzer, analyzer.edge)
    planner.learn_from(radiograph)
    ratio = planner.deflate("detector", analyzer.detector, 0).ratio
    payload = analyzer.part(analyzer.detector, 0, WireFormat.INT8).input_bytes
    assert ratio > 1.1  # a radiograph's int8 codes do deflate
    # the relay saw the payload shrink by about what the planner measured (headers and checks add a little)
    assert sent[WireFormat.INT8] - sent[WireFormat.INT8_DEFLATE] == pytest.approx(payload * (1 - 1 / ratio), rel=0.2)


def test_planner_deflates_only_where_the_link_is_slow_enough(planned, shared_cxr):
    from inference.planning.planner import LinkProfile

    analyzer, _ = planned
    planner = Planner(analyzer, analyzer.edge)
    planner.learn_from(load_radiograph(shared_cxr / "dicom/CR-MONO1-10-chest"))
    served = set(analyzer.edge.status().models)
    model = analyzer.detector

    def predicted(mbit_s: float) -> dict[WireFormat, float]:
        planner.link = LinkProfile(round_trip_ms=1.0, mbit_s=mbit_s, edge_ratio={"detector": 1.0, "classifier": 1.0})
        return {o.wire: o.predicted_ms for o in planner.candidates("detector", model, served) if o.cut == 0}

    slow, fast = predicted(2.0), predicted(100_000.0)
    assert slow[WireFormat.INT8_DEFLATE] < slow[WireFormat.INT8]  # 2 Mbit/s: the saved bytes outweigh deflating
    assert fast[WireFormat.INT8_DEFLATE] > fast[WireFormat.INT8]  # 100 Gbit/s: deflating only costs time


def test_planner_counts_the_bytes_and_the_encoding_the_analysis_has(planned):
    """What comes back is predicted as the analyses fetch it: CheXNet's features (for heat maps) only when
    they are wanted; encoding the tensors here (int8: quantizing) is measured and counted as the workstation's."""
    from inference.planning.planner import LinkProfile

    analyzer, _ = planned
    served = set(analyzer.edge.status().models)
    model = analyzer.classifier
    predicted = {}
    for heat in (True, False):
        planner = Planner(analyzer, analyzer.edge, with_heat_maps=heat)
        planner.link = LinkProfile(round_trip_ms=1.0, mbit_s=8.0, edge_ratio={"detector": 1.0, "classifier": 1.0})
        predicted[heat] = {(o.cut, o.wire): o for o in planner.candidates("classifier", model, served)}
    features = next(t for t in analyzer.part(model, 0, WireFormat.INT8).outputs if t.name == "features")
    saved_ms = int(np.prod(features.shape)) * 4 * 8 / 8e3  # its bytes at 8 Mbit/s
    with_maps, without = predicted[True][(0, WireFormat.INT8)], predicted[False][(0, WireFormat.INT8)]
    assert with_maps.transfer_ms - without.transfer_ms == pytest.approx(saved_ms, rel=1e-6)
    encoding = planner.encoding_ms("classifier", model, 0, WireFormat.INT8)
    assert encoding > 0 and without.local_ms == pytest.approx(encoding)  # cut 0: nothing else runs here


def test_fidelity_gate_rejects_a_wire_that_distorts(planned, monkeypatch):
    analyzer, _ = planned
    image = torch.from_numpy(np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32))
    assert passes_fidelity(analyzer.classifier, 7, WireFormat.INT8, [image])
    import inference.planning.planner as planner_module

    monkeypatch.setattr(planner_module, "round_trip", lambda wire, t: t * 3.0)  # a broken codec
    assert not passes_fidelity(analyzer.classifier, 7, WireFormat.INT8, [image])


def test_planner_predicts_and_picks_the_fastest_served_option(planned, monkeypatch):
    from inference.planning import planner as planning

    analyzer, radiograph = planned
    planner = Planner(analyzer, analyzer.edge)
    plan = planner.plan()
    link = planner.link
    assert link.round_trip_ms > 0 and link.mbit_s > 0
    assert link.client_cpu_ms > 0 and link.client_cpu_ms_per_mib > 0 and link.cores > 0
    assert all(0 < ratio < float("inf") for ratio in link.edge_ratio.values())
    # each part profiled was also timed in a burst: busy, the edge takes at least its compute per request
    assert link.edge_part_ms and link.edge_busy_ms.keys() == link.edge_part_ms.keys()
    assert all(link.edge_busy_ms[part] >= ms for part, ms in link.edge_part_ms.items())
    served = set(analyzer.edge.status().models)
    for name, model in planner.models().items():
        options = planner.candidates(name, model, served)
        cuts = {(o.cut, o.wire) for o in options}
        assert (model.stage_count, WireFormat.FP32) in cuts  # local only is always a candidate
        assert all(o.cut == model.stage_count or analyzer.part(model, o.cut, o.wire).name in served for o in options)
        best = min(options, key=study_preference)
        assert planner.options[name] == best
        # the gRPC client's CPU here, from the probe: more for more bytes, none when nothing is sent
        assert options[0].client_ms == 0 and all(o.client_ms > 0 for o in options[1:])
        assert all(o.edge_busy_ms >= o.edge_ms for o in options)
        full = {o.wire: o for o in options if o.cut == 0}
        if {WireFormat.FP32, WireFormat.INT8} <= set(full):
            assert full[WireFormat.FP32].client_ms > full[WireFormat.INT8].client_ms
    assert (plan.detector.cut, plan.detector.wire) == (planner.options["detector"].cut, planner.options["detector"].wire)
    findings = analyzer.analyze(radiograph, plan)
    assert all(run.measured_ms > 0 for run in findings.models.values()) and len(findings.models) == 2
    # the plan ranks by the offload margin: none pays one that large; with a margin below nothing, every model goes
    monkeypatch.setattr(planning, "OFFLOAD_MARGIN", 1e9)
    planner.plan()
    assert not any(option.offloaded for option in planner.options.values())
    monkeypatch.setattr(planning, "OFFLOAD_MARGIN", -0.99)
    planner.plan()
    assert all(option.offloaded for option in planner.options.values())


def test_a_part_s_serving_beyond_the_probe_is_measured_with_its_compute_and_predicted(planned, tmp_path, monkeypatch):
    """Handing a part its tensors costs more than handing the probe its one (CheXNet's split at cut 7, about 3 ms
    on loopback, was predicted that much short on every fast link): the requests that measure a part's compute
    measure what its round trip takes beyond that compute, the probe's round trip and its bytes, and its option is
    predicted with it; kept per server with the compute. Here one part's serve path takes 40 ms more, as behind a
    loaded gateway: its prediction follows, the other's does not."""
    import json
    import statistics

    analyzer, _ = planned
    model = analyzer.classifier
    slow, other = (analyzer.part(model, 7, wire).name for wire in (WireFormat.INT8, WireFormat.FP16))
    timed, seen = Planner._timed_requests, {}

    def slower(self, client, spec, tensors):
        replies = timed(self, client, spec, tensors)
        if replies is not None and spec.name == slow:
            replies = [(reply, ms + 40.0) for reply, ms in replies]
        seen[spec.name] = replies
        return replies

    monkeypatch.setattr(Planner, "_timed_requests", slower)
    planner = Planner(analyzer, analyzer.edge, cache_dir=tmp_path)  # with heat maps: every output comes back
    planner.measure_link()
    for wire in (WireFormat.INT8, WireFormat.FP16):
        assert planner.profile(ModelKind.CLASSIFIER, model, 7, wire) is not None
        option = planner._option(ModelKind.CLASSIFIER, model, 7, wire)
        part = analyzer.part(model, 7, wire).name
        # the link's share as predicted is what these requests took beyond the edge's compute
        assert option.transfer_ms == pytest.approx(statistics.median(ms - r.edge_ms for r, ms in seen[part]), abs=0.5)
    serving = planner.link.edge_serving_ms
    assert serving[slow] > serving[other] + 20  # the 40 ms, less what tells the parts apart (their bytes, noise)

    kept = json.loads((tmp_path / "profiles" / "edge-serving.json").read_text())
    (server, parts), = kept.items()
    assert {key.partition("@")[0] for key in parts} >= {slow, other}
    again = Planner(analyzer, analyzer.edge, cache_dir=tmp_path)
    again.measure_link()
    assert {part: again.link.edge_serving_ms[part] for part in (slow, other)} == {
        part: serving[part] for part in (slow, other)}  # read back with the compute, not measured again


def test_the_link_probe_leaves_the_probe_s_own_compute_out_of_the_bandwidth(planned, monkeypatch):
    """The probe model sums its payload (an integrity check): 4 ms for 1 MiB on a CPU here, half the time 1 Gbit/s
    takes to carry it, which made a 1 Gbit/s link measure about 450 Mbit/s. Triton's statistics give that compute
    (beyond the compute on one byte, which the round trip holds), and the bandwidth is reckoned without it."""
    analyzer, _ = planned
    client, counted, readings = analyzer.edge, EdgeClient._counted_stats, []

    def recorded(self, model, before, requests):
        readings.append((model, before, counted(self, model, before, requests)))
        return readings[-1][2]

    monkeypatch.setattr(EdgeClient, "_counted_stats", recorded)
    assert client.probe(repeats=3).upload_mbit_s > 0
    (_, _, start), (_, before_small, after_small), (_, before_bulk, after_bulk) = readings  # the warm-up left out
    assert {model for model, *_ in readings} == {"mededge_probe"} and (before_small, before_bulk) == (start, after_small)
    per_request = lambda a, b: (b[1] - a[1]) / (b[0] - a[0])  # noqa: E731
    assert after_small[0] - start[0] >= 3 and after_bulk[0] - after_small[0] >= 3  # the real server counted them
    assert per_request(after_small, after_bulk) > per_request(start, after_small)  # 1 MiB takes it longer than 1 B

    # and that compute is taken off the transfer's time, not added: here it is said to fill the whole of it
    calls = []

    def slow_bulk(self, model, before, requests):  # the third reading: after the 1 MiB requests
        after, _ = counted(self, model, before, requests), calls.append(model)
        return after if len(calls) < 3 else (after[0], after[1] + 10**12)  # 1000 s more, over the 3 requests

    monkeypatch.setattr(EdgeClient, "_counted_stats", slow_bulk)
    assert client.probe(repeats=3).upload_mbit_s == pytest.approx((1 << 20) * 8 / 1e-5 / 1e6)  # the 0.01 ms floor


def test_a_study_goes_to_the_edge_only_where_that_is_predicted_to_pay_beyond_the_margin():
    """Where the edge is no faster than this workstation, every option is predicted within a few per cent of local,
    and the prediction's own error decided (an offload measured 10 % slower was chosen): local wins near-ties."""
    local = Option(ModelKind.DETECTOR, 32, WireFormat.FP32, 300.0, local_ms=300.0)

    def offload(ms: float) -> Option:
        return Option(ModelKind.DETECTOR, 0, WireFormat.INT8, ms, transfer_ms=20.0, edge_ms=ms - 20.0)

    near, clear = offload(300.0 / (1 + OFFLOAD_MARGIN) + 1), offload(300.0 / (1 + OFFLOAD_MARGIN) - 1)
    assert near.predicted_ms < local.predicted_ms and near.offloaded and not local.offloaded
    assert min((local, near), key=study_preference) is local
    assert min((local, clear), key=study_preference) is clear
    assert min((offload(250.0), offload(240.0)), key=study_preference).predicted_ms == 240.0  # among offloads: time


def test_a_series_pace_once_full_leaves_out_the_fill_and_the_drain():
    """`analyze_many` begins AHEAD + 1 studies before the first result and none after the last AHEAD: a
    workstation-bound pipeline delivers those last results at the edge's pace, faster than it can run."""
    from inference.reports.benchmark import steady_pace_s

    full = [0.5 + i for i in range(8 - AHEAD)]  # one result a second while studies are still begun
    drained = full + [full[-1] + 0.1 * (i + 1) for i in range(AHEAD)]
    assert steady_pace_s(drained) == pytest.approx(1.0)
    assert (drained[-1] - drained[0]) / (len(drained) - 1) < 0.8  # the whole span would say faster
    assert steady_pace_s(drained[:AHEAD + 1]) is None  # too short to fill


def test_drift_triggers_a_new_measurement(planned):
    analyzer, _ = planned
    planner = Planner(analyzer, analyzer.edge)
    planner.plan()
    predicted = {n: o.predicted_ms for n, o in planner.options.items()}
    assert not planner.observe(predicted)
    slow = {n: v * 3 for n, v in predicted.items()}
    assert not planner.observe(slow)  # once may be noise
    assert planner.observe(slow) and planner.link is None  # twice: measure again on the next plan()
    planner.plan()
    assert planner.link is not None


def test_local_stage_profile_is_cached(planned, tmp_path):
    analyzer, _ = planned
    first = local_stage_ms(analyzer.classifier, repeats=1, cache_dir=tmp_path)
    assert len(first) == analyzer.classifier.stage_count and all(t > 0 for t in first)
    assert local_stage_ms(analyzer.classifier, repeats=1, cache_dir=tmp_path) == first
    assert len(list((tmp_path / "profiles").iterdir())) == 1


def test_bench_times_the_options_in_rotated_rounds():
    """Every option once per round, each round starting one later: drift falls on all options alike."""
    from types import SimpleNamespace

    from inference.reports.benchmark import _interleaved

    order = []

    class Recorder:  # stands in for Analyzer: records which plan ran when
        def analyze(self, radiograph, plan, **options):
            order.append(plan)
            return SimpleNamespace(models={"classifier": SimpleNamespace(measured_ms=10.0 * (plan + 1))})

        building_heads = False  # nothing built in the background

    results = _interleaved(Recorder(), None, [0, 1, 2], "classifier", repeats=4)
    warm, rounds = order[:3], [order[3 + 3 * r: 6 + 3 * r] for r in range(4)]
    assert warm == [0, 1, 2] and rounds == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]
    assert results == [(10.0, 10.0), (20.0, 20.0), (30.0, 30.0)]  # each plan's own times


@pytest.mark.skipif(not os.access("/sys/fs/cgroup/cpu", os.W_OK), reason="needs root and the cgroup v1 cpu controller")
def test_the_series_bound_counts_the_cores_a_cpu_quota_leaves():
    """A process in a cgroup at 25 % of a core, pinned to one CPU: the benchmark's series bound divides its CPU
    by 0.25 cores; the same process outside: by the CPUs it may use."""
    group = Path("/sys/fs/cgroup/cpu") / f"mededge-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("10000")
        (group / "cpu.cfs_quota_us").write_text("2500")
        script = "from inference.machine import usable_cores; print(usable_cores())"
        join = f'echo $$ > {group / "cgroup.procs"} && exec "$@"'
        inside = subprocess.run(["sh", "-c", join, "sh", "taskset", "-c", "0", sys.executable, "-c", script],
                                capture_output=True, text=True, check=True, cwd=ROOT)
        outside = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", script],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
    finally:
        group.rmdir()
    assert float(inside.stdout) == pytest.approx(0.25) and float(outside.stdout) == pytest.approx(1.0)


def test_bench_measures_every_option_side_by_side(shared_cxr, tmp_path):
    from inference.reports.benchmark import SERIES_STUDIES, markdown, run_benchmark

    radiograph = load_radiograph(shared_cxr / "raster/txv_nih_00027426_000_512px.png")
    report = run_benchmark(radiograph, quick=True, work=tmp_path, progress=lambda m: None, detector=TINY)
    assert [m["model"] for m in report["models"]] == ["detector", "classifier"]
    for model in report["models"]:
        options = [row["option"] for row in model["rows"]]
        assert options[0] == "local" and options[-1].startswith("auto → ")
        assert {"cut 0 fp32", "cut 0 int8"} <= set(options)  # full offload in both wire formats
        assert all(row["median_ms"] > 0 and row["p95_ms"] >= row["median_ms"] for row in model["rows"])
        assert model["rows"][0]["ratio_to_local"] == 1.0
        chosen = options[-1].removeprefix("auto → ")
        assert model["auto_choice"] == chosen and chosen in options[:-1]  # judged by a measured option
        assert isinstance(model["auto_choice_within_5pct_of_best"], bool)
        # every option the gate let through is predicted (the edge's compute measured on its own part)
        assert all(row["predicted_ms"] > 0 for row in model["rows"] if row["wire"] in ("-", "fp32"))
        assert 0 <= model["prediction_error_median"] < 10
        # an offloaded option's prediction counts its part's serving beyond the probe's, measured with its compute
        assert all(row["serving_ms"] != 0 for row in model["rows"] if row["option"].startswith("cut "))
    series = report["series"]  # the best single-study plan one after another, the series plan pipelined
    assert series["studies"] == SERIES_STUDIES and series["sequential_s"] > 0 and series["pipelined_s"] > 0
    assert set(series["sequential_plan"]) == set(series["plan"]) == {"detector", "classifier"}
    assert 0 < series["bound_s"] and series["predicted_bound_ms"] > 0
    assert set(series["per_study_ms"]) == {"workstation", "link", "edge", "workstation CPU"}
    # the pace once the pipeline is full, apart from the wait for its first result
    assert 0 < series["first_result_s"] < series["pipelined_s"]
    assert series["steady_ms_per_study"] > 0 and series["steady_of_bound"] > 0
    assert all(isinstance(m["serve_overhead_ms"], float) for m in report["models"])  # cut 0 fp32 is served
    text = markdown(report)
    print(text)
    assert ("| option | MiB sent | predicted ms | of which serving beyond the probe | median ms | p95 ms | "
            "speed-up vs local |") in text
    assert "the best sequential throughput" in text and "of its bound" in text and "once full" in text


def test_onnxruntime_local_runtime_matches_torch_and_auto_choice_is_cached(shared_cxr):
    from inference.models.weights import data_dir

    radiograph = load_radiograph(shared_cxr / "dicom/CR-MONO1-10-chest")
    torch_run = Analyzer(ModelChoice(detector=TINY)).analyze(radiograph)
    onnx_analyzer = Analyzer(ModelChoice(detector=TINY, runtime="onnxruntime"))
    assert set(onnx_analyzer.onnx) == {"detector", "classifier"}
    onnx_run = onnx_analyzer.analyze(radiograph)
    assert max(abs(onnx_run.probabilities[k] - v) for k, v in torch_run.probabilities.items()) <= 1e-4
    assert len(onnx_run.detections) == len(torch_run.detections)
    assert np.abs(onnx_run.heat_map("Effusion") - torch_run.heat_map("Effusion")).max() <= 1e-3
    assert runtimes(torch_run) == {"detector": "torch", "classifier": "torch"}
    assert runtimes(onnx_run) == {"detector": "onnxruntime", "classifier": "onnxruntime"}  # said in the result
    auto = Analyzer(ModelChoice(detector=TINY, runtime="auto"))
    folder = data_dir() / "local-onnx"
    choices = [next(folder.glob("runtime-*-detector-*-0.25-0.33-128-*.json")),
               next(folder.glob("runtime-*-classifier-*-224-3-*.json"))]  # one measured choice per model
    import json

    for path in choices:
        record = json.loads(path.read_text())
        assert record["runtime"] in RUNTIMES and record["torch_ms"] > 0 and record["onnxruntime_ms"] > 0
    assert set(auto.onnx) <= {"detector", "classifier"}


def test_a_queue_on_the_edge_triggers_a_new_plan_that_counts_it(planned):
    """Other clients keep the edge busy: requests wait in Triton's queue (its statistics say how long);
    the planner notices, re-plans, and adds the wait to every offloaded option."""
    from concurrent.futures import ThreadPoolExecutor

    from inference.models.parts import sample_input
    from inference.models.wire import encode
    from inference.planning.planner import QUEUE_MS

    analyzer, _ = planned
    planner = Planner(analyzer, analyzer.edge)
    planner.plan()
    served = set(analyzer.edge.status().models)
    before = {o.cut: o.predicted_ms for o in planner.candidates("classifier", analyzer.classifier, served)
              if o.wire is WireFormat.FP16}
    predicted = {n: o.predicted_ms for n, o in planner.options.items()}
    assert not planner.observe(predicted)  # an idle edge: nothing to re-plan
    spec = analyzer.part(analyzer.classifier, 0, WireFormat.FP16)
    image = encode(WireFormat.FP16, {"image": sample_input(analyzer.classifier).numpy()})
    with ThreadPoolExecutor(8) as pool:  # eight clients at once on a one-instance model
        list(pool.map(lambda _: analyzer.edge.infer(spec, image, ("probabilities",)), range(24)))
    assert planner.observe(predicted) and planner.link is None
    assert planner._queue_ms > QUEUE_MS
    planner.plan()
    assert planner.link.queue_ms == planner._queue_ms
    after = {o.cut: o.predicted_ms for o in planner.candidates("classifier", analyzer.classifier, served)
             if o.wire is WireFormat.FP16}
    assert all(after[cut] > before[cut] + QUEUE_MS for cut in before)  # every offloaded option costs the wait


def test_a_part_slower_than_its_cached_time_makes_auto_measure_it_again(planned, tmp_path):
    """The edge's compute per part is kept between runs (per server, part and weights). A kept time far
    below what the part now takes (the box got slower, or busier) shows as drift in the results: auto
    measures the parts again against the real server and plans with what it measured."""
    import json

    from inference.planning.planner import DRIFT

    analyzer, radiograph = planned
    first = Planner(analyzer, analyzer.edge, cache_dir=tmp_path)
    first.learn_from(radiograph)
    first.plan()
    kept = tmp_path / "profiles" / "edge-parts.json"
    (server, parts), = json.loads(kept.read_text()).items()
    assert parts and all(ms > 0 for ms in parts.values())  # the parts profiled for the plan, kept
    busy = json.loads((tmp_path / "profiles" / "edge-busy.json").read_text())[server]  # and their time busy
    assert busy.keys() == parts.keys() and all(busy[key] >= ms for key, ms in parts.items())
    kept.write_text(json.dumps({server: {part: ms / 50 for part, ms in parts.items()}}))  # now 50x too fast

    planner = Planner(analyzer, analyzer.edge, cache_dir=tmp_path)
    planner.learn_from(radiograph)
    plan = planner.plan()
    kept_times = {key.partition("@")[0]: ms / 50 for key, ms in parts.items()}
    stale = {part: ms for part, ms in planner.link.edge_part_ms.items() if part in kept_times}
    assert stale == kept_times  # read back, not measured
    assert {part: planner.link.edge_busy_ms[part] for part in stale} == {
        key.partition("@")[0]: ms for key, ms in busy.items()}
    classifier = planner.options["classifier"]
    assert classifier.cut == 0 and classifier.measured_edge  # full offload looks nearly free
    drifted = [planner.observe(measured(analyzer.analyze(radiograph, plan))) for _ in range(2)]
    assert drifted == [False, True] and planner.link is None  # twice off the prediction: measure again
    planner.plan()
    for part, ms in planner.link.edge_part_ms.items():
        if part in stale:
            assert ms > 10 * stale[part], part  # measured on the server, not the kept time
    now_kept = json.loads(kept.read_text())[server]
    assert set(now_kept) & set(parts) and all(now_kept[key] > 10 * ms / 50 for key, ms in parts.items() if key in now_kept)
    option = planner.options["classifier"]
    findings = analyzer.analyze(radiograph, Plan(planner.options["detector"].model_plan, option.model_plan))
    assert 1 / (2 * DRIFT) <= findings.models["classifier"].measured_ms / option.predicted_ms <= 2 * DRIFT


def test_the_plan_waits_for_the_runtimes_auto_is_still_choosing(planned):
    """While auto chooses this workstation's runtimes in the background (the first start on a machine), a session
    analyses on the fixed cuts and its planner waits: its predictions of the stages here depend on the runtimes."""
    import time

    from inference.analysis.analyzer import _PendingChoice
    from inference.analysis.session import AnalysisSession

    analyzer, radiograph = planned
    lane = analyzer.with_edge(analyzer.edge)
    lane._choice = _PendingChoice([])  # as an analyzer made with choose_in_background, still choosing
    fixed = Plan(ModelPlan(6, WireFormat.FP32), ModelPlan(7, WireFormat.INT8))
    session = AnalysisSession(lane, fixed, auto=True, with_heat_maps=False)
    planned_at: list[float] = []
    prepare = session.prepare
    session.prepare = lambda *args, **kwargs: planned_at.append(time.monotonic()) or prepare(*args, **kwargs)
    try:
        first = session.analyze(radiograph)
        assert {kind.value: run.cut for kind, run in first.models.items()} == {"detector": 6, "classifier": 7}
        time.sleep(2)
        assert session.measuring() and not session.measured
        released = time.monotonic()
        lane._choice.done.set()
        assert session.wait_for_plan(timeout_s=300) and session.measured and session.planner.options
        assert planned_at and min(planned_at) >= released  # planned only once the runtimes were there
    finally:
        session.close()


def test_the_planner_s_worklist_plan_is_the_lightest_of_those_near_the_fastest(planned, monkeypatch):
    """Of the worklist plans predicted within WORKSTATION_MARGIN of the fastest, the one that takes the least of
    this workstation's CPU for the edges' studies: plans bound by it fell further short of their prediction, and
    the clinician reads on it meanwhile. With no margin, the fastest; with an unbounded one, the lightest."""
    from itertools import product

    from inference.planning import planner as planning

    analyzer, _ = planned
    planner = Planner(analyzer, analyzer.edge)
    planner.measure_link()

    def chosen_with(margin: float):
        monkeypatch.setattr(planning, "WORKSTATION_MARGIN", margin)
        planner.plan(edges=1)
        served = set(analyzer.edge.status().models)
        models = planner.models()
        pairs = list(product(*(planner.candidates(n, m, served, gated=False) for n, m in models.items())))
        here = planner.preprocess_ms + sum(planner.whole_local_ms(n, m) for n, m in models.items())
        rates = {pair: planning.worklist_rate(pair, planner.preprocess_ms, here, 1) for pair in pairs}
        chosen = tuple(planner.options[n] for n in models)
        return chosen, rates

    fastest, rates = chosen_with(0.0)
    assert rates[fastest] == max(rates.values())
    lightest, rates = chosen_with(1e9)
    assert planning.workstation_share_ms(lightest) == min(planning.workstation_share_ms(p) for p in rates)
    chosen, rates = chosen_with(planning.WORKSTATION_MARGIN)
    near = [pair for pair, rate in rates.items() if rate >= max(rates.values()) / (1 + planning.WORKSTATION_MARGIN)]
    assert chosen in near
    assert planning.workstation_share_ms(chosen) == min(planning.workstation_share_ms(p) for p in near)


def test_a_part_is_measured_apart_from_this_workstation_s_own_analyses(planned, tmp_path, monkeypatch):
    """On a first start the planner measures while the analyses send their own requests through the same client:
    they share the edge's CPU. A part's compute is measured when none of them is on the server, waiting for a
    quiet moment; when none comes, it is measured beside them, used for now but kept without its time busy (no
    burst is timed), and so measured again next time."""
    import threading

    from inference.models.wire import encode

    analyzer, _ = planned
    client, detector, classifier = analyzer.edge, analyzer.detector, analyzer.classifier
    planner = Planner(analyzer, client, cache_dir=tmp_path)
    planner.measure_link()
    part = analyzer.part(detector, 0, WireFormat.FP32)
    image = encode(WireFormat.FP32, planner._crossing(ModelKind.DETECTOR, detector, 0))
    bursts: list[str] = []
    burst = Planner._burst
    monkeypatch.setattr(Planner, "_burst", lambda self, spec, *args: bursts.append(spec.name) or burst(self, spec, *args))
    stop, failures = threading.Event(), []

    def analyses():  # two studies' requests in flight at almost any moment, as in a pipelined worklist
        try:
            while not stop.is_set():
                client.infer(part, image, tuple(t.name for t in part.outputs))
        except Exception as exc:  # (seen by the test, not lost in the thread)
            failures.append(exc)

    sent_before, _ = client.traffic()
    workers = [threading.Thread(target=analyses) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        profiled = analyzer.part(classifier, 7, WireFormat.INT8).name
        assert planner.profile(ModelKind.CLASSIFIER, classifier, 7, WireFormat.INT8) is not None
        assert profiled in planner.link.edge_part_ms and profiled not in planner.link.edge_busy_ms
        assert profiled not in planner.link.edge_serving_ms  # its round trips waited behind the analyses' requests
        assert bursts == []  # not timed beside the analyses
        assert client.traffic()[0] > sent_before + 10 and client.traffic()[1] > 0
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert not failures and client.traffic()[1] == 0

    again = Planner(analyzer, client, cache_dir=tmp_path)
    again.measure_link()
    assert profiled not in again.link.edge_part_ms  # kept without its time busy: not trusted
    again.profile(ModelKind.CLASSIFIER, classifier, 7, WireFormat.INT8)
    assert bursts == [profiled] and again.link.edge_busy_ms[profiled] >= again.link.edge_part_ms[profiled] > 0


def test_the_series_bound_can_count_the_edge_s_processes_cpu(tmp_path):
    """`process_tree_cpu_ms`: the CPU of a process and of every process under it, one in a session of its own too
    (Triton runs so under `edge serve`), for the edge's share of a series' bound in bench/bench_links.py."""
    import os
    import signal
    import time

    from inference.reports.benchmark import process_tree_cpu_ms

    burn = tmp_path / "burn.py"
    burn.write_text("import subprocess, sys\n"
                    "subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True)\n"
                    "while True: pass\n")
    parent = subprocess.Popen([sys.executable, str(burn)])
    try:
        time.sleep(0.5)
        before, started = process_tree_cpu_ms(parent.pid), time.monotonic()
        time.sleep(1.5)
        spent, elapsed = process_tree_cpu_ms(parent.pid) - before, (time.monotonic() - started) * 1e3
        cores = min(2, len(os.sched_getaffinity(0)))  # two busy processes: a core each where there are two
        assert 0.65 * cores * elapsed < spent <= (cores + 0.1) * elapsed
    finally:
        children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
        for child in children:
            os.kill(int(child), signal.SIGKILL)
        parent.kill()
        parent.wait()
