"""Split inference against a real Triton server (nvidia-pytriton's tritonserver) on loopback ports.

A narrow, shallow YOLOv4-P5 (same layer list, width 0.25, depth 0.33, 128 px) keeps every cut of
the detector cheap; CheXNet is the real DenseNet-121. Every cut of both models, in both wire formats,
is served and compared with the local result.
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from inference.analysis.analyzer import AHEAD, Analyzer, ModelChoice, StudyError
from inference.config import EdgeRuntime, ModelKind, Runtime, WireFormat
from inference.edge.client import EdgeClient, EdgeError, EdgeFailure, EdgeSettings, parse_address
from inference.edge.repository import PartRequest, write_repository
from inference.edge.server import EdgeServer, EdgeServerError, free_ports
from inference.models.detector import DetectorConfig
from inference.models.findings import Mode
from inference.models.postprocess import box_iou
from inference.planning.plan import AUTO_CUTS, ModelPlan, Plan
from inference.planning.planner import Planner
from viewer.errors import RadiographError
from viewer.loader import load_radiograph

from certificates import dated_certificate, make_certificates
from conftest import ROOT, cuts
from dicom_factory import dataset, gradient, write

TINY = DetectorConfig(input_size=128, width_multiple=0.25, depth_multiple=0.33, confidence=0.01)
pytestmark = pytest.mark.timeout(900)


def start_server(repository: Path, work: Path, ports: tuple[int, int] | None = None, **options) -> EdgeServer:
    """A real edge server (gateway + Triton) on free loopback ports serving `repository`; `options` for
    EdgeServer (tls, triton_site …)."""
    grpc, metrics = ports or free_ports(2)
    server = EdgeServer(repository, work / "run", grpc_port=grpc, metrics_port=metrics, **options)
    server.start()
    return server


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(ModelChoice(detector=TINY))


def fp16_cuts(model: ModelKind, stage_count: int) -> list[int]:
    """The cuts checked in FP16 as well: full offload, the automatic split's and the last. (An FP16 part runs
    the FP32 part's stages on its input cast to FP32: FP32 checks every cut, and the suite keeps to its time
    budget.)"""
    return [0, AUTO_CUTS[model], stage_count - 1]


@pytest.fixture(scope="module")
def every_part_server(analyzer, tmp_path_factory):
    """A real Triton serving every cut of both models in FP32, and some in FP16 (`fp16_cuts`)."""
    root = tmp_path_factory.mktemp("edge")
    requests = [PartRequest(model, weights, cut, wire)
                for kind, model, weights in ((ModelKind.DETECTOR, analyzer.detector, analyzer.detector_source),
                                             (ModelKind.CLASSIFIER, analyzer.classifier,
                                              analyzer.classifier_weights.source))
                for cut in range(model.stage_count) for wire in (WireFormat.FP32, WireFormat.FP16)
                if wire is WireFormat.FP32 or cut in fp16_cuts(kind, model.stage_count)]
    write_repository(root / "repository", requests, gpu=False)
    server = start_server(root / "repository", root)
    client = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=60))
    analyzer.edge = client
    yield server
    analyzer.edge = None
    client.close()
    server.stop()


@pytest.fixture(scope="module")
def radiograph(shared_cxr):
    return load_radiograph(shared_cxr / "raster/txv_nih_00027426_000_512px.png")


def _matched(local, remote, min_iou: float, score_tolerance: float) -> None:
    """Every clear local detection (not at the threshold's edge) has a remote one with a score within
    `score_tolerance` and a box at IoU >= `min_iou` (boxes clipped to the image can coincide, so the
    score picks the partner)."""
    remote_boxes = np.array([d.box_xyxy for d in remote]).reshape(-1, 4)
    remote_scores = np.array([d.score for d in remote])
    for detection in local:
        if detection.score < TINY.confidence + 0.01:
            continue
        close = np.abs(remote_scores - detection.score) <= score_tolerance
        assert close.any(), detection
        iou = box_iou(np.array(detection.box_xyxy), remote_boxes[close])
        assert iou.max() >= min_iou, (detection, iou.max())


def test_every_cut_of_both_models_matches_local(analyzer, every_part_server, radiograph):
    local = analyzer.analyze(radiograph)
    assert local.mode is Mode.LOCAL and len(local.detections) >= 3  # enough boxes to compare
    n_det, n_cls = analyzer.detector.stage_count, analyzer.classifier.stage_count
    splits = [(cut, min(cut, n_cls - 1), WireFormat.FP32) for cut in range(n_det)] + \
        [(d, c, WireFormat.FP16) for d, c in zip(fp16_cuts(ModelKind.DETECTOR, n_det),
                                                          fp16_cuts(ModelKind.CLASSIFIER, n_cls), strict=True)]
    for detector_cut, classifier_cut, wire in splits:
        plan = Plan(ModelPlan(detector_cut, wire), ModelPlan(classifier_cut, wire))
        split = analyzer.analyze(radiograph, plan, allow_fallback=False)
        assert split.mode is (Mode.EDGE if detector_cut == classifier_cut == 0 else Mode.DISTRIBUTED)
        assert cuts(split) == {"detector": detector_cut, "classifier": classifier_cut}
        assert split.timing_ms["edge"] > 0 and split.timing_ms["transfer"] > 0
        difference = max(abs(split.probabilities[k] - v) for k, v in local.probabilities.items())
        if wire is WireFormat.FP32:
            assert difference <= 1e-4, (detector_cut, difference)
            assert len(split.detections) == len(local.detections)
            _matched(local.detections, split.detections, 0.999, 1e-4)
            heat = split.heat_map("Effusion") - local.heat_map("Effusion")
            assert np.abs(heat).max() <= 1e-3
        else:
            assert difference <= 1e-2, (detector_cut, difference)
            _matched(local.detections, split.detections, 0.9, 1e-2)


def test_pipelined_series_gives_the_sequential_results_in_order(analyzer, every_part_server, radiograph,
                                                                shared_cxr):
    """analyze_many overlaps study i+1's local stages with study i's edge request: same results, same order,
    and a study that did not load keeps its place."""
    other = load_radiograph(shared_cxr / "dicom/CR-MONO1-10-chest")
    plan = Plan(ModelPlan(6, WireFormat.FP32), ModelPlan(7, WireFormat.FP16))
    series = [radiograph, other, StudyError("missing.dcm", RadiographError("no such file")), other, radiograph]
    results = list(analyzer.analyze_many(series, plan, allow_fallback=False))
    assert [r.path for r in results] == [s.path for s in series]
    assert isinstance(results[2], StudyError) and str(results[2].error) == "no such file"
    for study, result in zip(series, results, strict=True):
        if isinstance(study, StudyError):
            continue
        alone = analyzer.analyze(study, plan, allow_fallback=False)
        assert result.mode is Mode.DISTRIBUTED and result.timing_ms["edge"] > 0
        assert max(abs(result.probabilities[k] - v) for k, v in alone.probabilities.items()) <= 1e-6
        _matched(alone.detections, result.detections, 0.999, 1e-5)
        assert result.heat_map("Effusion").shape == alone.heat_map("Effusion").shape
        # every phase is a measured duration of its own, overlapped or not: none is negative
        assert all(value >= 0 for value in result.timing_ms.values()) and result.timing_ms["local"] > 0
        assert sum(run.measured_ms for run in result.models.values()) == pytest.approx(
            sum(result.timing_ms[p] for p in ("local", "transfer", "edge")), rel=1e-6)


def test_a_series_stopped_early_leaves_no_request_behind(analyzer, every_part_server, radiograph, monkeypatch):
    """A reader that stops after the first result (the window closed, Analyze all cancelled): the studies
    begun ahead of it have their requests dropped or finished by the time the series is closed."""
    plan = Plan(ModelPlan(0, WireFormat.FP32), ModelPlan(0, WireFormat.FP32))
    infer, calls = analyzer.edge.infer, itertools.count()

    def slow_after_the_first_study(*args, **kwargs):  # the real edge, answering the later studies late
        if next(calls) >= 2:
            time.sleep(2)
        return infer(*args, **kwargs)

    monkeypatch.setattr(analyzer.edge, "infer", slow_after_the_first_study)
    series = analyzer.analyze_many([radiograph] * 6, plan, allow_fallback=False)
    assert next(series).mode is Mode.EDGE
    assert analyzer._in_flight  # the next studies' requests are out
    series.close()
    assert not analyzer._in_flight


def test_a_pipelined_series_waits_for_the_requests_it_queued(analyzer, every_part_server, radiograph, monkeypatch):
    """Both models fully offloaded and a deep pipeline (six studies ahead, as a slow edge makes it): requests
    queue on the edge behind the series' own. A fixed timeout a little above one request's time stops the
    series (the old behaviour: QUEUE_MARGIN 0); the timeout that follows the queue ahead of each request, and
    the studies the pipeline may send while it is out (batched with it: the first of the series waited for
    six more in CI), lets every study finish on the edge."""
    import inference.analysis.analyzer as analyze_module

    plan = Plan(ModelPlan(0, WireFormat.FP32), ModelPlan(0, WireFormat.FP32))
    alone = [analyzer.analyze(radiograph, plan, allow_fallback=False) for _ in range(4)][1:]  # after a warm-up
    one_request_s = min(max(run.measured_ms for run in a.models.values()) for a in alone) / 1e3  # a slow run must not loosen the bound
    tight = EdgeClient(EdgeSettings(every_part_server.grpc_address, timeout_s=1.3 * one_request_s))
    monkeypatch.setattr(analyzer, "edge", tight)
    monkeypatch.setattr(analyzer, "_pool", None)  # a pool as wide as the deeper pipeline
    monkeypatch.setattr(analyze_module, "AHEAD", 6)
    try:
        monkeypatch.setattr(analyze_module, "QUEUE_MARGIN", 0.0)
        results = list(analyzer.analyze_many([radiograph] * 7, plan, allow_fallback=False))
        assert isinstance(results[-1], StudyError) and results[-1].error.failure is EdgeFailure.TIMEOUT, results
        assert not analyzer._in_flight  # the stopped series left no request behind on this side
        # the requests the client gave up on still run on the edge: one patient study queues behind them, so
        # the next series starts on an idle edge (it timed out on their leftovers in CI)
        patient = EdgeClient(EdgeSettings(every_part_server.grpc_address, timeout_s=120))
        try:
            monkeypatch.setattr(analyzer, "edge", patient)
            assert analyzer.analyze(radiograph, plan, allow_fallback=False).mode is Mode.EDGE
        finally:
            monkeypatch.setattr(analyzer, "edge", tight)
            patient.close()
        monkeypatch.setattr(analyze_module, "QUEUE_MARGIN", 2.0)
        # A new client, on a connection of its own: the gateway may still count the abandoned requests'
        # streams against the old one (16 per connection; six studies ahead of two requests each, twice, is more)
        tight.close()
        tight = EdgeClient(EdgeSettings(every_part_server.grpc_address, timeout_s=1.3 * one_request_s))
        monkeypatch.setattr(analyzer, "edge", tight)
        results = list(analyzer.analyze_many([radiograph] * 7, plan, allow_fallback=False))
        assert len(results) == 7 and all(r.mode is Mode.EDGE for r in results), results
        assert max(r.timing_ms["queued"] for r in results) > 2 * one_request_s * 1e3  # they did queue
        # A lane that knows nothing of the edge's times yet (a fixed split, `infer --split edge`, no planner's
        # prediction, before its first reply): its first study runs alone, then the series pipelines on the
        # measured times and stays on the edge (it fell back with every request given the bare timeout). The bare
        # timeout is 3 requests' time here: 1.3 of one failed a first request alone once in CI, and a queue six
        # studies deep (twelve requests) still outlasts 3.
        fresh_client = EdgeClient(EdgeSettings(every_part_server.grpc_address, timeout_s=3 * one_request_s))
        try:
            fresh = analyzer.with_edge(fresh_client)
            results = list(fresh.analyze_many([radiograph] * 7, plan, allow_fallback=False))
            assert len(results) == 7 and all(r.mode is Mode.EDGE for r in results), results
        finally:
            fresh_client.close()
    finally:
        tight.close()


def test_neck_cuts_send_several_tensors(analyzer, every_part_server):
    spec = analyzer.part(analyzer.detector, 15, WireFormat.FP32)
    assert [t.name for t in spec.inputs] == ["t06", "t11", "t13", "t14"]
    client = analyzer.edge
    client.verify(spec)  # the served config has the same four inputs
    config = client._client.get_model_config(spec.name).config
    assert [i.name for i in config.input] == ["t06", "t11", "t13", "t14"]


def test_a_part_is_checked_once_however_many_requests_arrive_together(analyzer, every_part_server):
    """A pipelined series on a new connection: its first requests all need the part checked. One check runs,
    the others wait for it (each checking too, the burst went past the edge's streams per connection)."""
    from concurrent.futures import ThreadPoolExecutor

    spec = analyzer.part(analyzer.detector, 6, WireFormat.FP32)
    fresh = EdgeClient(EdgeSettings(every_part_server.grpc_address))
    asked, ready = [], fresh._client.is_model_ready

    def counted(*args, **kwargs):
        asked.append(args)
        time.sleep(0.2)  # a slow answer: the others arrive while it is out
        return ready(*args, **kwargs)

    try:
        fresh._client.is_model_ready = counted
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: fresh.verify(spec), range(8)))
        assert len(asked) == 1
    finally:
        fresh.close()


def test_client_checks_and_errors(analyzer, every_part_server):
    status = analyzer.edge.status()
    assert status.live and status.ready and status.version
    assert "detector_cut06_fp32" in status.models and "classifier_cut07_fp16" in status.models
    missing = analyzer.part(analyzer.detector, 6, WireFormat.FP32)
    stranger = type(missing)(missing.kind, missing.cut, missing.wire, missing.inputs, missing.outputs,
                             (("weights", "0123456789abcdef"),))
    fresh = EdgeClient(EdgeSettings(every_part_server.grpc_address))
    with pytest.raises(EdgeError, match="exported for another model or weights") as info:
        fresh.verify(stranger)
    assert info.value.failure is EdgeFailure.MODEL_MISMATCH
    nowhere = EdgeClient(EdgeSettings(f"127.0.0.1:{free_ports(1)[0]}", check_timeout_s=1))
    with pytest.raises(EdgeError, match=r"unreachable \(connection refused\)") as info:
        nowhere.status()
    assert info.value.failure is EdgeFailure.UNREACHABLE
    import http.server
    import threading

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers, in HTTP/1
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        with pytest.raises(EdgeError, match=f"^127.0.0.1:{web.server_port} is not an edge server's gRPC port") as info:
            EdgeClient(EdgeSettings(f"127.0.0.1:{web.server_port}", check_timeout_s=1)).status()
        assert info.value.failure is EdgeFailure.UNREACHABLE
    finally:
        web.shutdown()
        web.server_close()


def test_address_parsing():
    assert parse_address("edge.hospital.local:8001") == ("edge.hospital.local", 8001)
    assert parse_address("10.1.2.3:8001") == ("10.1.2.3", 8001)
    assert parse_address("[::1]:8001") == ("::1", 8001)
    for bad in ("edge", "edge:0", "edge:70000", "[::zz]:8001", "http://edge:8001", "::1:8001"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_port_in_use_is_refused(every_part_server, tmp_path):
    busy = EdgeServer(every_part_server.repository, tmp_path / "run", grpc_port=every_part_server.grpc_port,
                      metrics_port=free_ports(1)[0])
    with pytest.raises(EdgeServerError, match=f"gRPC port {every_part_server.grpc_port} already in use"):
        busy.start()


# ------------------------------------------------------------ the command line, as IT staff and users run it


def _python(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def test_edge_export_config_and_serve_the_same_repository(tmp_path, shared_cxr):
    out = tmp_path / "repository"
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "edge", "export", "--out", str(out),
                           "--models", "classifier", "--cuts", "0,7", "--wire", "fp32,fp16", "--queue-delay-us", "1500",
                           "--preferred-batch", "2,4"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parts"] == ["classifier_cut00_fp32", "classifier_cut00_fp16",
                                                "classifier_cut07_fp32", "classifier_cut07_fp16"]
    config = text_format.Parse((out / "classifier_cut07_fp16/config.pbtxt").read_text(), mc.ModelConfig())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size >= 1
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in config.input] == \
        [("t06", "TYPE_FP16", [512, 7, 7])]
    assert [o.name for o in config.output] == ["probabilities", "features"]
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500  # the shared edge's batcher, as asked
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4] and config.instance_group[0].count == 1
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    import onnx

    graph = onnx.load(str(out / "classifier_cut07_fp16/1/model.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["t06"] and graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert "serve-with-docker.sh" in (out / "README.md").read_text() and "8001" in (out / "README.md").read_text()
    assert "docker run" in (out / "serve-with-docker.sh").read_text()

    # The same files, through `edge serve --repository`, in a real server: the serve path loads what export wrote.
    grpc, metrics = free_ports(2)
    server = _python("edge", "serve", "--repository", str(out), "--grpc-port", str(grpc),
                     "--metrics-port", str(metrics))
    try:
        lines = []
        while not any("stop with" in line for line in lines):
            line = server.stdout.readline()
            assert line, server.stderr.read()
            lines.append(line)
        assert f"127.0.0.1:{grpc}" in lines[0] and "classifier_cut07_fp16" in lines[1]
        served = text_format.Parse(
            (Path(os.environ["MEDEDGE_DATA_DIR"]) / f"edge/run-{grpc}/serve/classifier_cut07_fp16/config.pbtxt").read_text(),
            mc.ModelConfig())
        assert served.backend == "python" and list(served.input) == list(config.input)
        # its stages run in the FP32 part of its cut, whose batcher waits for more requests: this one's passes them on
        assert served.parameters["mededge_served_through"].string_value == "classifier_cut07_fp32"
        assert list(served.dynamic_batching.preferred_batch_size) == [2, 4]
        assert served.dynamic_batching.max_queue_delay_microseconds == 0
        serving = Path(os.environ["MEDEDGE_DATA_DIR"]) / f"edge/run-{grpc}/serve"
        fp32 = text_format.Parse((serving / "classifier_cut07_fp32/config.pbtxt").read_text(), mc.ModelConfig())
        assert fp32.dynamic_batching == config.dynamic_batching and "mededge_served_through" not in fp32.parameters
        # Same outputs, plus the compute time the Python-backend model reports per request.
        assert list(served.output)[:-1] == list(config.output) and served.output[-1].name == "edge_compute_ms"
        assert (Path(os.environ["MEDEDGE_DATA_DIR"]) / f"edge/run-{grpc}/serve/classifier_cut07_fp16/1/model.onnx"
                ).resolve() == (out / "classifier_cut07_fp16/1/model.onnx").resolve()
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer",
                               str(shared_cxr / "dicom/CR-MONO1-10-chest"), "--edge", f"127.0.0.1:{grpc}",
                               "--split", "detector:32,classifier:7", "--wire", "fp16", "--no-fallback",
                               "--detector-size", "128"],  # the CLI tests' one size: auto's runtimes built once
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert record["mode"] == "distributed" and record["split"] == {"detector": 32, "classifier": 7}
        assert record["wire"] == {"classifier": "fp16"} and record["timing_ms"]["edge"] > 0
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    assert "edge server stopped" in server.stdout.read()

    # Exported again into the same folder with other options: the repository is what was asked now, every config
    # with the new options (the earlier parts stayed, with their own options, and the docker script served them all).
    def export(folder: Path, *options: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "main.py"), "edge", "export", "--out", str(folder),
                               "--models", "classifier", *options], capture_output=True, text=True, cwd=ROOT,
                              timeout=600)

    done = export(out, "--cuts", "7", "--wire", "fp32", "--cpu")
    assert done.returncode == 0, done.stderr
    assert sorted(p.parent.name for p in out.glob("*/config.pbtxt")) == ["classifier_cut07_fp32", "mededge_probe"]
    assert "removed classifier_cut00_fp16, of an earlier export, not asked for now" in done.stderr
    config = text_format.Parse((out / "classifier_cut07_fp32/config.pbtxt").read_text(), mc.ModelConfig())
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert "classifier_cut00" not in (out / "SHA256SUMS").read_text()
    # … and a folder holding anything else is not an export's to write into; options that name nothing are refused
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents/important.txt").write_text("keep me")
    (tmp_path / "site-models/resnet50").mkdir(parents=True)  # another Triton repository's model
    (tmp_path / "site-models/resnet50/config.pbtxt").write_text('name: "resnet50"')
    for folder, options, says in ((tmp_path / "documents", (), "holds other files than an export (important.txt)"),
                                  (tmp_path / "site-models", (), "holds other files than an export (resnet50)"),
                                  (tmp_path / "new", ("--cuts", "7,99"), "--cuts 99: no model has such a cut "
                                                                         "(classifier 0..9)"),
                                  (tmp_path / "new", ("--cuts", "seven"), "--cuts seven: 'default', 'all' or stage"),
                                  (tmp_path / "new", ("--wire", "fp8"), "--wire fp8: the wire formats are fp32, ")):
        done = export(folder, *options)
        assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "documents/important.txt").read_text() == "keep me" and not (tmp_path / "new").exists()
    assert (tmp_path / "site-models/resnet50/config.pbtxt").is_file()


def _loaded_libraries(pid: int) -> set[str]:
    """The shared libraries mapped by `pid` and every process below it (Triton's Python-backend stubs)."""
    found, pending = set(), [pid]
    while pending:
        current = pending.pop()
        try:
            found |= {line.split()[-1].rsplit("/", 1)[-1] for line in Path(f"/proc/{current}/maps").read_text()
                      .splitlines() if ".so" in line}
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # gone meanwhile
    return found


def _served_memory_mb(server: EdgeServer, part: str) -> float:
    """The anonymous memory (not the libraries' pages) of the process that serves `part` on `server`, in MB."""
    from inference.reports.benchmark import served_part_memory_mib

    return served_part_memory_mib(server, part)[1]


def test_a_served_part_holds_one_copy_of_its_weights(analyzer, tmp_path):
    """Each part runs in a process of its own: beyond what every part's process holds (the link probe's, which has
    no weights), a part holds about one copy of its weights. It held three (the runtime kept the checked bytes
    it was made from, and the C heap what building it freed): an edge serving many parts ran out of memory.
    The FP16 and int8 parts of a cut hold none: they decode their input and run the FP32 part's stages, with the
    results of their own ONNX; the FP32 part refuses them once it runs other weights than they were exported with,
    and cannot be unloaded while they run through it."""
    import concurrent.futures

    import onnxruntime
    import torch
    import tritonclient.grpc as triton

    from inference.edge.repository import read_config
    from inference.models.parts import model_input_shape, tensor_name
    from inference.models.stages import INPUT
    from inference.models.wire import encode

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("the parts' weights would be on the GPU")
    deep = 13  # the detector's tensors crossing it: four, of three strides
    requests = [PartRequest(model, weights, cut, wire)
                for model, weights, cut in ((analyzer.classifier, analyzer.classifier_weights.source, 0),
                                            (analyzer.detector, analyzer.detector_source, deep))
                for wire in (WireFormat.FP32, WireFormat.FP16, WireFormat.INT8)]
    repository = tmp_path / "repository"
    write_repository(repository, requests, gpu=False)
    weights_mb = (repository / "classifier_cut00_fp32/1/weights.bin").stat().st_size / 2**20
    assert weights_mb > 20  # DenseNet-121: enough to stand out from the process's own
    server = start_server(repository, tmp_path)
    client = triton.InferenceServerClient(server.grpc_address)

    def served(part: str, arrays: dict[str, np.ndarray]) -> triton.InferResult:
        inputs = []
        for name, array in arrays.items():
            inputs.append(triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype)))
            inputs[-1].set_data_from_numpy(array)
        return client.infer(part, inputs)

    try:
        alone = _served_memory_mb(server, "mededge_probe")
        held = {wire: _served_memory_mb(server, f"classifier_cut00_{wire}") - alone
                for wire in ("fp32", "fp16", "int8")}
        assert held["fp32"] < 1.6 * weights_mb, f"{held['fp32']:.0f} MB held for {weights_mb:.0f} MB of weights"
        assert held["fp16"] < 0.2 * weights_mb and held["int8"] < 0.2 * weights_mb, held
        print(f"MB held for {weights_mb:.1f} MB of weights: {held}")

        # Each int8 part's results are its own ONNX's (run here), for a batch of two
        rng = np.random.default_rng(3)
        for model, part, cut in ((analyzer.classifier, "classifier_cut00", 0),
                                 (analyzer.detector, f"detector_cut{deep}", deep)):
            image = rng.random((2, *model_input_shape(model)), np.float32)
            with torch.inference_mode():
                crossing = model.run_stages({INPUT: torch.from_numpy(image)}, 0, cut)
            arrays = encode(WireFormat.INT8, {tensor_name(i): t.numpy() for i, t in crossing.items()})
            own = onnxruntime.InferenceSession(str(repository / f"{part}_int8/1/model.onnx"))
            expected = own.run(None, arrays)[0]
            result = served(f"{part}_int8", arrays).as_numpy(own.get_outputs()[0].name)
            assert np.abs(result - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1.0)
        assert read_config(server.serving_path / "detector_cut13_int8/config.pbtxt"
                           ).parameters["mededge_served_through"].string_value == "detector_cut13_fp32"

        # The planner tells other clients' requests from its own by the server's count: one each, as sent, also
        # when the FP16 part's batcher groups them
        edge = EdgeClient(EdgeSettings(server.grpc_address))
        half = {"image": np.zeros((1, 3, 224, 224), np.float16)}
        before = edge.queue_totals()[0]
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda _: served("classifier_cut00_fp16", half), range(3)))
        time.sleep(0.1)  # Triton counts a request just after its reply
        assert edge.queue_totals()[0] - before == 3
        edge.close()

        # The FP32 part exported again with other weights and loaded: the FP16 part is refused with the reason,
        # the FP32 part serves its own requests
        config_path = repository / "classifier_cut00_fp32/config.pbtxt"
        exported = config_path.read_text()
        config = read_config(config_path)
        config.parameters["mededge_fingerprint"].string_value = "0123456789abcdef"
        config_path.write_text(text_format.MessageToString(config))
        operator = server.operator()
        operator.load("classifier_cut00_fp32")
        with pytest.raises(triton.InferenceServerException, match="this part now runs 0123456789abcdef"):
            served("classifier_cut00_fp16", half)
        served("classifier_cut00_fp32", {"image": half["image"].astype(np.float32)})
        with pytest.raises(EdgeServerError, match="runs the stages of classifier_cut00_fp16, classifier_cut00_int8"):
            operator.unload("classifier_cut00_fp32")
        # Their weights the same again, the FP32 part not loaded: an FP16 part is not loaded through it
        config_path.write_text(exported)
        for part in ("classifier_cut00_fp16", "classifier_cut00_int8", "classifier_cut00_fp32"):
            operator.unload(part)
        with pytest.raises(EdgeServerError, match="runs its stages in classifier_cut00_fp32, which is not loaded"):
            operator.load("classifier_cut00_fp16")
        operator.load("classifier_cut00_fp32")
        operator.load("classifier_cut00_fp16")
        served("classifier_cut00_fp16", half)
        operator.close()
    finally:
        client.close()
        server.stop()


def test_edge_parts_served_by_openvino_match_local(analyzer, radiograph, tmp_path):
    """`--runtime openvino`: the stock container's config names Triton's OpenVINO backend on the same model.onnx;
    `edge serve` runs the parts with OpenVINO in the Python backend (its library is loaded there), and the
    results equal the local ones as any FP32 part's do."""
    requests = [PartRequest(analyzer.detector, analyzer.detector_source, cut, WireFormat.FP32) for cut in (0, 6)]
    requests += [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, cut, WireFormat.FP32)
                 for cut in (0, 7)]
    write_repository(tmp_path / "repository", requests, runtime=EdgeRuntime.OPENVINO)  # gpu asked: CPU all the same
    stock = text_format.Parse((tmp_path / "repository/classifier_cut07_fp32/config.pbtxt").read_text(),
                              mc.ModelConfig())
    assert stock.backend == "openvino" and stock.default_model_filename == "model.onnx" and not stock.platform
    assert stock.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU  # Triton's OpenVINO backend is CPU-only
    assert "--gpus" not in (tmp_path / "repository/serve-with-docker.sh").read_text()
    assert "OpenVINO" in (tmp_path / "repository/README.md").read_text()
    server = start_server(tmp_path / "repository", tmp_path)
    client = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=60))
    try:
        served = text_format.Parse((server.serving_path / "classifier_cut07_fp32/config.pbtxt").read_text(),
                                   mc.ModelConfig())
        assert served.backend == "python" and served.parameters["mededge_runtime"].string_value == "openvino"
        assert not served.default_model_filename
        lane = analyzer.with_edge(client)
        local = analyzer.analyze(radiograph)
        for detector_cut, classifier_cut in ((0, 0), (6, 7)):
            plan = Plan(ModelPlan(detector_cut, WireFormat.FP32), ModelPlan(classifier_cut, WireFormat.FP32))
            split = lane.analyze(radiograph, plan, allow_fallback=False)
            assert split.mode is (Mode.EDGE if detector_cut == 0 else Mode.DISTRIBUTED) and split.timing_ms["edge"] > 0
            assert max(abs(split.probabilities[k] - v) for k, v in local.probabilities.items()) <= 1e-4
            assert len(split.detections) == len(local.detections)
            _matched(local.detections, split.detections, 0.999, 1e-4)
        assert any(name.startswith("libopenvino.so") for name in _loaded_libraries(server.process.pid))

        # The workstation's side on OpenVINO too: stages [0, cut) of both models run by it, the same results.
        openvino = Analyzer(ModelChoice(detector=TINY, runtime=Runtime.OPENVINO), client)
        split = openvino.analyze(radiograph, Plan(ModelPlan(6, WireFormat.FP32), ModelPlan(7, WireFormat.FP32)),
                                 allow_fallback=False)
        assert {run.runtime for run in split.models.values()} == {Runtime.OPENVINO}
        assert {run.cut for run in split.models.values()} == {6, 7} and split.mode is Mode.DISTRIBUTED
        assert max(abs(split.probabilities[k] - v) for k, v in local.probabilities.items()) <= 1e-4
        _matched(local.detections, split.detections, 0.999, 1e-4)
        assert np.abs(split.heat_map("Effusion") - local.heat_map("Effusion")).max() <= 1e-3
        # The edge fails after OpenVINO ran the detector's first stages (cut 8 is not served): the whole detector
        # runs on OpenVINO here, so the result is the local OpenVINO one and says so.
        fallback = openvino.analyze(radiograph, Plan(ModelPlan(8, WireFormat.FP32), ModelPlan(7, WireFormat.FP32)))
        assert fallback.mode is Mode.LOCAL_FALLBACK and "detector_cut08_fp32" in fallback.fallback_reason
        assert fallback.models["detector"].runtime is Runtime.OPENVINO
        alone = openvino.analyze(radiograph)
        assert [d.box_xyxy for d in fallback.detections] == [d.box_xyxy for d in alone.detections]
        # and the planner predicts those stages on OpenVINO: measured once a cut with them ranks first
        planner = Planner(openvino, client, cache_dir=tmp_path)
        planner.learn_from(radiograph)
        planner.plan()
        for kind, option in planner.options.items():
            model = openvino.detector if kind == "detector" else openvino.classifier
            if 0 < option.cut < model.stage_count:
                assert planner.head_ms(kind, model, option.cut) == planner.measure_head(kind, model, option.cut)
        predicted = planner.head_ms("detector", openvino.detector, 6)
        measured = planner.measure_head("detector", openvino.detector, 6)
        assert planner.head_ms("detector", openvino.detector, 6) == measured > 0 and predicted > 0
        served = set(client.status().models)
        cut6 = next(o for o in planner.candidates("detector", openvino.detector, served) if o.cut == 6)
        assert cut6.local_ms == pytest.approx(measured + planner.encoding_ms("detector", openvino.detector, 6,
                                                                            WireFormat.FP32))
        # The edge goes away: the detector's request fails after its first stages ran; the classifier, told the
        # link is down, runs whole at once. Both on OpenVINO here, the local OpenVINO result.
        server.stop()
        gone = openvino.analyze(radiograph, Plan(ModelPlan(6, WireFormat.FP32), ModelPlan(7, WireFormat.FP32)))
        assert gone.mode is Mode.LOCAL_FALLBACK and {run.runtime for run in gone.models.values()} == {Runtime.OPENVINO}
        assert gone.probabilities == alone.probabilities
        assert [d.box_xyxy for d in gone.detections] == [d.box_xyxy for d in alone.detections]
    finally:
        client.close()
        server.stop()


def test_edge_parts_served_by_pytorch_match_local(analyzer, radiograph, tmp_path):
    """`--runtime torch` (an edge whose onnxruntime has no CUDA but whose PyTorch has): each part's exported program
    beside its ONNX, checked by digest; `edge serve` runs it with PyTorch in the Python backend (on the CPU here, the
    GPU where there is one) and the results equal the local ones; the stock container's config still runs the ONNX;
    a program that is not the one exported is not loaded."""
    import tritonclient.utils

    requests = [PartRequest(analyzer.detector, analyzer.detector_source, 6, WireFormat.FP32)]
    requests += [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7, wire)
                 for wire in (WireFormat.FP32, WireFormat.INT8)]
    band, _ = analyzer.band_part(analyzer.detector, 6, 2)  # a spatial split's band part (one image in)
    requests.append(PartRequest(analyzer.detector, analyzer.detector_source, 6, WireFormat.FP32, band_rows=band.rows))
    repository = tmp_path / "repository"
    with pytest.MonkeyPatch.context() as older:  # a PyTorch the edge could not move to its GPU: one line, before any export
        older.setattr("inference.edge.repository.torch_release", lambda: "2.4")
        with pytest.raises(ValueError, match=r"needs PyTorch 2\.5 or later \(this one is 2\.4\)"):
            write_repository(repository, requests[:1], gpu=False, runtime=EdgeRuntime.TORCH)
        assert not repository.exists()
    write_repository(repository, requests, gpu=False, runtime=EdgeRuntime.TORCH)
    # each program holds its own stages' weights only (an exported program keeps every weight of its module)
    sizes = {path.parent.parent.name: path.stat().st_size for path in repository.glob("*/1/model.pt2")}
    band_size = sizes[next(name for name in sizes if "_band" in name)]
    whole = sum(tensor.numel() * tensor.element_size() for tensor in analyzer.detector.state_dict().values())
    assert band_size < 0.5 * sizes["detector_cut06_fp32"] and band_size < 0.5 * whole
    stock = text_format.Parse((repository / "classifier_cut07_fp32/config.pbtxt").read_text(), mc.ModelConfig())
    assert stock.platform == "onnxruntime_onnx" and stock.parameters["mededge_runtime"].string_value == "torch"
    sums = (repository / "SHA256SUMS").read_text()
    assert all(f"  {part}/1/model.pt2" in sums for part in ("detector_cut06_fp32", "classifier_cut07_fp32",
                                                           "classifier_cut07_int8"))
    assert f"{stock.parameters['mededge_pt2_sha256'].string_value}  classifier_cut07_fp32/1/model.pt2" in sums
    server = start_server(repository, tmp_path)
    client = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=60))
    try:
        served = text_format.Parse((server.serving_path / "detector_cut06_fp32/config.pbtxt").read_text(),
                                   mc.ModelConfig())
        assert served.backend == "python" and served.parameters["mededge_runtime"].string_value == "torch"
        lane = analyzer.with_edge(client)
        local = analyzer.analyze(radiograph)
        split = lane.analyze(radiograph, Plan(ModelPlan(6, WireFormat.FP32), ModelPlan(7, WireFormat.FP32)),
                             allow_fallback=False)
        assert split.mode is not Mode.LOCAL_FALLBACK and split.timing_ms["edge"] > 0
        assert max(abs(split.probabilities[k] - v) for k, v in local.probabilities.items()) <= 1e-4
        _matched(local.detections, split.detections, 0.999, 1e-4)
        quantised = lane.analyze(radiograph, Plan(ModelPlan(6, WireFormat.FP32), ModelPlan(7, WireFormat.INT8)),
                                 allow_fallback=False)
        assert max(abs(quantised.probabilities[k] - v) for k, v in local.probabilities.items()) <= 0.02
        assert any(name.startswith("libtorch_cpu.so") for name in _loaded_libraries(server.process.pid))
        # a program changed after the export: the operator's reload of its part is refused (the same check as at start)
        victim = repository / "classifier_cut07_fp32/1/model.pt2"
        victim.write_bytes(victim.read_bytes() + b"\0")
        operator = server.operator()
        try:
            refused = r"model\.pt2 .* is not the one exported"
            with pytest.raises(tritonclient.utils.InferenceServerException, match=refused):
                operator.load("classifier_cut07_fp32")
        finally:
            operator.close()
    finally:
        client.close()
        server.stop()
    # exported again for onnxruntime: no program left behind, none listed
    write_repository(repository, requests, gpu=False)
    assert not list(repository.glob("*/1/model.pt2")) and "model.pt2" not in (repository / "SHA256SUMS").read_text()


def test_fallback_when_the_server_stops_mid_batch(tmp_path, shared_cxr):
    """Stop the edge after the first results: every remaining study completes locally and says why."""
    studies = tmp_path / "studies"
    studies.mkdir()
    source = (shared_cxr / "raster/txv_nih_00027426_000_512px.png").read_bytes()
    for index in range(6):
        (studies / f"study{index}.png").write_bytes(source)
    model = Analyzer(ModelChoice(detector=TINY))
    repository = tmp_path / "repository"
    write_repository(repository, [PartRequest(model.classifier, model.classifier_weights.source, 7, WireFormat.FP32)],
                     gpu=False)
    server = start_server(repository, tmp_path)
    infer = _python("infer", str(studies), "--edge", server.grpc_address, "--split", "detector:32,classifier:7",
                    "--timeout", "5", "--detector-size", "128")
    records = []
    try:
        for line in infer.stdout:
            records.append(json.loads(line))
            if len(records) == 2:
                server.stop()
    finally:
        server.stop()
        infer.wait(timeout=300)
    stderr = infer.stderr.read()
    assert infer.returncode == 0, stderr
    assert [Path(r["path"]).name for r in records] == [f"study{i}.png" for i in range(6)]
    assert [r["mode"] for r in records[:2]] == ["distributed", "distributed"]
    # The server may answer "stopping" or not at all: either way the study is finished here and says why.
    # (The AHEAD studies begun while the second result was written may have been answered before the stop.)
    later = records[2 + AHEAD:]
    assert later and all(r["mode"] == "local-fallback" and r["fallback_reason"] for r in later), later
    # … and the terminal says so (it said nothing: the fallback was only inside the JSON)
    first = next(r for r in records if r["mode"] == "local-fallback")
    assert f"mededge infer: {Path(first['path']).name}: analysed on this workstation: {first['fallback_reason']}" \
        in stderr, stderr
    assert all(r["mode"] in ("distributed", "local-fallback") for r in records)
    # Same study, same answer: the edge's parts and the runtime auto chose here agree with PyTorch within 1e-4.
    assert all(abs(r["probabilities"][k] - v) <= 1e-4 for r in records for k, v in records[0]["probabilities"].items())


def test_no_fallback_fails_with_exit_3_and_the_reason(shared_cxr):
    port = free_ports(1)[0]  # nothing listens there
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / "dicom/CR-MONO1-10-chest"),
                           str(shared_cxr / "raster/txv_nih_00027426_000_512px.png"), "--edge", f"127.0.0.1:{port}",
                           "--detector-size", "128", "--no-fallback"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert done.returncode == 3
    assert "unreachable" in done.stderr and "Traceback" not in done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 1 and "unreachable" in lines[0]["error"]
    # Without --no-fallback the same studies complete locally, marked as such.
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / "dicom/CR-MONO1-10-chest"),
                           "--edge", f"127.0.0.1:{port}", "--detector-size", "128"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0
    record = json.loads(done.stdout)
    assert record["mode"] == "local-fallback" and "unreachable" in record["fallback_reason"]
    # every stage ran here: the split records that, not the cuts --split auto planned (6 and 7)
    assert record["split"] == {"detector": 32, "classifier": 10} and record["ran_on"] == ["workstation"]
    assert "wire" not in record


def test_tls_edge(tmp_path, shared_cxr):
    from inference.edge.server import TlsFiles

    files = make_certificates(tmp_path)
    model = Analyzer(ModelChoice(detector=TINY))
    write_repository(tmp_path / "repository",
                     [PartRequest(model.classifier, model.classifier_weights.source, 7, WireFormat.FP16)], gpu=False)
    server = start_server(tmp_path / "repository", tmp_path, tls=TlsFiles(files["server.pem"], files["server.key"]))
    grpc = server.grpc_port
    try:
        secure = EdgeClient(EdgeSettings(f"127.0.0.1:{grpc}", tls=True, root_certificate=files["ca.pem"]))
        assert secure.status().ready
        model.edge = secure
        findings = model.analyze(load_radiograph(shared_cxr / "dicom/CR-MONO1-10-chest"),
                                 Plan(ModelPlan(model.detector.stage_count), ModelPlan(7, WireFormat.FP16)),
                                 allow_fallback=False)
        assert findings.mode is Mode.DISTRIBUTED
        plaintext = EdgeClient(EdgeSettings(f"127.0.0.1:{grpc}", check_timeout_s=2))
        with pytest.raises(EdgeError) as info:
            plaintext.status()
        assert info.value.failure is EdgeFailure.TLS and "may require TLS (turn TLS on" in str(info.value)
        stranger = EdgeClient(EdgeSettings(f"127.0.0.1:{grpc}", tls=True, root_certificate=files["other-ca.pem"],
                                           check_timeout_s=2))
        with pytest.raises(EdgeError) as info:
            stranger.status()
        # the TLS library's own reason, which gRPC kept to its log
        assert info.value.failure is EdgeFailure.TLS and "its certificate is refused: unable to get local issuer " \
            "certificate" in str(info.value), info.value
    finally:
        server.stop()
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:  # TLS asked of a server that speaks none (it said: "its certificate is not trusted")
        with pytest.raises(EdgeError) as info:
            EdgeClient(EdgeSettings(f"127.0.0.1:{web.server_address[1]}", tls=True, root_certificate=files["ca.pem"],
                                    check_timeout_s=2)).status()
        assert "it does not answer in TLS" in str(info.value), info.value
    finally:
        web.shutdown()
    # a certificate not issued for the address the workstation uses (it was classed "unreachable", cut mid-word)
    elsewhere = start_server(tmp_path / "repository", tmp_path / "elsewhere", host="127.0.0.2",
                             tls=TlsFiles(files["server.pem"], files["server.key"]))
    try:
        with pytest.raises(EdgeError) as info:
            EdgeClient(EdgeSettings(f"127.0.0.2:{elsewhere.grpc_port}", tls=True, root_certificate=files["ca.pem"],
                                    check_timeout_s=2)).status()
        assert info.value.failure is EdgeFailure.TLS and "its certificate is refused: IP address mismatch, " \
            "certificate is not valid for '127.0.0.2'" in str(info.value), info.value
    finally:
        elsewhere.stop()


def test_an_edge_whose_certificate_has_expired_is_named_so(tmp_path):
    """A certificate that expires while its server runs (the edge refuses to start with one, not to go on): the
    workstation's reason is the TLS library's own, "certificate has expired", not a generic handshake failure."""
    import socket
    import ssl

    certificate, key = dated_certificate(tmp_path, -30, -1)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(certificate, key)
    server_side.set_alpn_protocols(["h2"])
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():  # handshakes until told to stop; the client's refusal ends each one
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection, contextlib.suppress(OSError):
                server_side.wrap_socket(connection, server_side=True).close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        client = EdgeClient(EdgeSettings(f"localhost:{listener.getsockname()[1]}", tls=True,
                                         root_certificate=certificate, check_timeout_s=2))
        with pytest.raises(EdgeError) as info:
            client.status()
        assert info.value.failure is EdgeFailure.TLS and "its certificate is refused: certificate has expired" \
            in str(info.value), info.value
    finally:
        stop.set()
        listener.close()


def test_mutual_tls_edge_set_in_settings(tmp_path):
    """A server that demands client certificates: the workstation's certificate from Settings gets in;
    without one, the refusal is a clear TLS error."""
    from app.settings import AppSettings
    from inference.edge.server import TlsFiles

    files = make_certificates(tmp_path)
    model = Analyzer(ModelChoice(detector=TINY, runtime="torch"))
    write_repository(tmp_path / "repository",
                     [PartRequest(model.classifier, model.classifier_weights.source, 7, WireFormat.FP32)], gpu=False)
    server = start_server(tmp_path / "repository", tmp_path,
                          tls=TlsFiles(files["server.pem"], files["server.key"], client_ca=files["ca.pem"]))
    grpc = server.grpc_port
    try:
        settings = AppSettings(edge_addresses=(f"127.0.0.1:{grpc}",), tls=True, ca_file=str(files["ca.pem"]),
                               client_certificate_file=str(files["client.pem"]),
                               client_key_file=str(files["client.key"]))
        model.edge = EdgeClient(settings.edge)
        radiograph = load_radiograph(write(dataset(gradient(256, 256, bits=12, seed=3), bits_stored=12),
                                           tmp_path / "s.dcm"))
        findings = model.analyze(radiograph, Plan(ModelPlan(model.detector.stage_count), ModelPlan(7, WireFormat.FP32)),
                                 allow_fallback=False)
        assert findings.mode is Mode.DISTRIBUTED
        anonymous = EdgeClient(EdgeSettings(f"127.0.0.1:{grpc}", tls=True, root_certificate=files["ca.pem"],
                                            check_timeout_s=2))
        with pytest.raises(EdgeError) as info:
            anonymous.status()
        assert info.value.failure is EdgeFailure.TLS and "client certificate" in str(info.value), info.value
    finally:
        server.stop()
    with pytest.raises(ValueError, match="both the client certificate and its key"):
        AppSettings(edge_addresses=("h:1",), tls=True, client_certificate_file=str(files["client.pem"]))
    with pytest.raises(ValueError, match="turn TLS on"):
        AppSettings(edge_addresses=("h:1",), client_certificate_file=str(files["client.pem"]),
                    client_key_file=str(files["client.key"]))
