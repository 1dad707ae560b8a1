"""Faults against real Triton servers on loopback: a link that stalls or is cut (a TCP relay the test
controls), a server restarted, a part unloaded and loaded again, a server of another Triton release,
several servers with fail-over and fail-back, and a soak of 300 analyses.

In every case the study completes — on the edge, or locally marked `local-fallback` with the reason.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bench.relay import Relay
from inference.analysis.analyzer import AHEAD, Analyzer, ModelChoice
from inference.config import WireFormat
from inference.edge.client import EdgeClient, EdgeGroup, EdgeSettings
from inference.edge.repository import PartRequest, write_repository
from inference.edge.server import EdgeServer, free_ports
from inference.models.findings import Mode
from inference.models.parts import part_spec
from inference.planning.plan import ModelPlan, Plan
from viewer.loader import load_radiograph

from dicom_factory import dataset, gradient, write
from test_edge import TINY, start_server

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(ModelChoice(detector=TINY, runtime="torch"))


@pytest.fixture(scope="module")
def repository(analyzer, tmp_path_factory):
    """The classifier's cut 7 (a 98 KiB tensor): small and quick, the detector stays local."""
    root = tmp_path_factory.mktemp("faults") / "repository"
    write_repository(root, [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7,
                                        WireFormat.FP32)], gpu=False)
    return root


def _plan(analyzer: Analyzer) -> Plan:
    """The detector here, the classifier cut at 7."""
    return Plan(ModelPlan(analyzer.detector.stage_count), ModelPlan(7, WireFormat.FP32))


def _server(repository, work, ports=None, triton_site=None) -> EdgeServer:
    return start_server(repository, work, ports, triton_site=triton_site)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    return load_radiograph(write(dataset(gradient(320, 288, bits=12, seed=7), bits_stored=12), folder / "s.dcm"))


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    server = _server(repository, tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


def _analyze_until(analyzer: Analyzer, study, settled, timeout_s: float = 30):
    """Analyse until `settled(result)` holds (gRPC reconnects with its own back-off); that result."""
    deadline = time.monotonic() + timeout_s
    while not settled(result := analyzer.analyze(study, _plan(analyzer))):
        assert time.monotonic() < deadline, (result.mode, result.fallback_reason)
        time.sleep(0.5)
    return result


def _served_then_stopped(analyzer: Analyzer, repository, study, work, ports) -> None:
    """A server at `ports` analyses one study on the edge (the client has checked its part), then stops."""
    first = _server(repository, work, ports)
    analyzer.edge = EdgeClient(EdgeSettings(first.grpc_address, timeout_s=5))
    try:
        assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
    finally:
        first.stop()


def _target(server: EdgeServer) -> tuple[str, int]:
    host, port = server.grpc_address.rsplit(":", 1)
    return host, int(port)


def test_a_stalled_link_times_out_and_the_study_completes_locally(analyzer, server, study):
    with Relay(_target(server)) as relay:
        analyzer.edge = EdgeClient(EdgeSettings(relay.address, timeout_s=2))
        assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
        relay.stall()
        started = time.monotonic()
        stalled = analyzer.analyze(study, _plan(analyzer))
        waited = time.monotonic() - started
        assert stalled.mode is Mode.LOCAL_FALLBACK and "did not answer" in stalled.fallback_reason
        assert waited < 2 + 10  # the request timeout bounds the wait; the local stages are the rest
        relay.resume()
        assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED  # the same client recovers


def test_an_edge_that_never_answers_is_waited_for_once_not_a_queue_s_worth(analyzer, server, study):
    """A fixed split on an edge that takes the connection and the checks but never answers an inference: a series'
    first study falls back after the request timeout — the series holds no studies queued behind a request whose
    time nobody knows yet (before, their allowances made the first wait three timeouts)."""
    timeout_s = 3.0
    with Relay(_target(server)) as relay:
        lane = analyzer.with_edge(EdgeClient(EdgeSettings(relay.address, timeout_s=timeout_s)))
        plan = _plan(analyzer)
        lane.edge.verify(lane.part(analyzer.classifier, plan.classifier.cut, plan.classifier.wire))  # it answers…
        relay.stall()  # …then nothing more
        started = time.monotonic()
        arrived = []
        try:
            for result in lane.analyze_many([study] * 3, plan, with_heat_maps=False):
                arrived.append(time.monotonic() - started)
                assert result.mode is Mode.LOCAL_FALLBACK and "did not answer" in result.fallback_reason
        finally:
            relay.resume()
        assert len(arrived) == 3
        assert arrived[0] < 2 * timeout_s, arrived  # the timeout and this study's local stages (3 timeouts before)


def test_a_cut_link_falls_back_and_the_client_reconnects_when_it_returns(analyzer, server, study):
    with Relay(_target(server)) as relay:
        analyzer.edge = EdgeClient(EdgeSettings(relay.address, timeout_s=5))
        assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
        relay.cut()
        cut = analyzer.analyze(study, _plan(analyzer))
        assert cut.mode is Mode.LOCAL_FALLBACK and cut.fallback_reason
        relay.restore()
        _analyze_until(analyzer, study, lambda result: result.mode is Mode.DISTRIBUTED)


def test_a_restarted_server_is_used_again_by_the_same_client(analyzer, repository, study, tmp_path):
    ports = free_ports(2)
    _served_then_stopped(analyzer, repository, study, tmp_path / "a", ports)
    down = analyzer.analyze(study, _plan(analyzer))
    assert down.mode is Mode.LOCAL_FALLBACK and "unreachable" in down.fallback_reason
    second = _server(repository, tmp_path / "b", ports)  # same address, a new process
    try:
        _analyze_until(analyzer, study, lambda result: result.mode is Mode.DISTRIBUTED)
    finally:
        second.stop()


def test_a_server_killed_mid_series_every_study_completes(analyzer, repository, study, tmp_path):
    """SIGKILL (no goodbye) while a pipelined series has requests in flight: nothing is lost, and every
    study after the kill completes locally with the reason."""
    import signal

    server = _server(repository, tmp_path)
    analyzer.edge = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=5))
    results = []
    try:
        for result in analyzer.analyze_many([study] * 12, _plan(analyzer), with_heat_maps=False):
            results.append(result)
            if len(results) == 2:
                os.killpg(server.process.pid, signal.SIGKILL)  # Triton and its Python stubs, at once
    finally:
        server.stop()
    first = results[0].probabilities  # the same study: the same answer, on the edge or here
    assert len(results) == 12 and all(max(abs(r.probabilities[k] - v) for k, v in first.items()) < 1e-5
                                      for r in results)
    assert results[0].mode is Mode.DISTRIBUTED
    assert all(r.mode is Mode.LOCAL_FALLBACK and r.fallback_reason for r in results[4:]), \
        [(r.mode, r.fallback_reason) for r in results]


def test_a_server_restarted_with_a_stale_repository_is_noticed(analyzer, repository, study, tmp_path, monkeypatch):
    """Same address, same shapes, other weights: the client checks the part again and falls back."""
    from inference.edge import client as edge_client

    monkeypatch.setattr(edge_client, "REVERIFY_S", 1.0)  # 30 s in use
    stale = tmp_path / "stale"
    write_repository(stale, [PartRequest(analyzer.classifier, "0" * 64, 7, WireFormat.FP32)], gpu=False)
    ports = free_ports(2)
    _served_then_stopped(analyzer, repository, study, tmp_path / "a", ports)
    second = _server(stale, tmp_path / "b", ports)
    try:
        time.sleep(1.0)  # past REVERIFY_S: the part is checked again
        result = _analyze_until(analyzer, study, lambda r: "unreachable" not in (r.fallback_reason or ""))
        assert result.mode is Mode.LOCAL_FALLBACK, "the stale part was used"
        assert "exported for another model or weights" in result.fallback_reason, result.fallback_reason
    finally:
        second.stop()


def test_a_stale_repository_of_another_size_or_edited_dtypes_falls_back_saying_what_differs(analyzer, study,
                                                                                          tmp_path):
    """The served parts have the names this workstation asks for, but not its model: the detector was
    exported at another input size, and the classifier's config was edited to take FP16."""
    from dataclasses import replace as with_changes

    from tritonclient.grpc import model_config_pb2 as mc

    from inference.edge.repository import read_config

    bigger = Analyzer(ModelChoice(detector=with_changes(TINY, input_size=160), runtime="torch"))
    stale = tmp_path / "stale"
    specs = write_repository(stale, [PartRequest(bigger.detector, bigger.detector_source, 6, WireFormat.FP32),
                                     PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7,
                                                 WireFormat.FP32)], gpu=False)
    edited = stale / specs[1].name / "config.pbtxt"
    config = read_config(edited)
    config.input[0].data_type = mc.TYPE_FP16
    edited.write_text(str(config))
    server = _server(stale, tmp_path)
    try:
        analyzer.edge = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=5))
        result = analyzer.analyze(study, Plan(ModelPlan(6, WireFormat.FP32), ModelPlan(7, WireFormat.FP32)))
    finally:
        server.stop()
    assert result.mode is Mode.LOCAL_FALLBACK and result.probabilities and result.detections is not None
    reason = result.fallback_reason
    assert "input_size 160 there, 128 here" in reason, reason
    assert "takes" in reason and "FP16" in reason, reason


def test_a_part_unloaded_on_the_server_falls_back_with_the_reason_and_is_used_again_when_reloaded(
        analyzer, server, study):
    part = part_spec(analyzer.classifier, 7, WireFormat.FP32, analyzer.classifier_weights.source).name
    analyzer.edge = client = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=5))
    operator = server.operator()  # what IT does with `edge control unload|load`: the credential, over loopback
    loaded = lambda: part in client.status().models  # noqa: E731
    try:
        assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
        operator.unload(part)
        deadline = time.monotonic() + 30
        while loaded():
            assert time.monotonic() < deadline, "the part did not unload"
            time.sleep(0.2)
        unloaded = analyzer.analyze(study, _plan(analyzer))
        assert unloaded.mode is Mode.LOCAL_FALLBACK
        assert part in unloaded.fallback_reason and "no ready model" in unloaded.fallback_reason, \
            unloaded.fallback_reason
        assert unloaded.probabilities  # the study completed here
        operator.load(part)
        assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
    finally:
        if not loaded():
            operator.load(part)  # the module's server stays whole for the tests after this one
        operator.close()


OTHER_TRITON = Path(__file__).resolve().parent.parent / ".venv" / "triton-other"  # see the Makefile


@pytest.mark.skipif(not (OTHER_TRITON / "pytriton").is_dir(), reason="another Triton release is installed "
                    "by `make test` into .venv/triton-other")
def test_a_server_of_another_triton_release_serves_the_same_parts(analyzer, repository, server, study, tmp_path):
    other = _server(repository, tmp_path, triton_site=OTHER_TRITON)
    try:
        client = EdgeClient(EdgeSettings(other.grpc_address, timeout_s=5))
        ours = EdgeClient(EdgeSettings(server.grpc_address))
        versions = client.status().version, ours.status().version
        assert versions[0] != versions[1], versions  # really another release (2.41.0 beside 2.51.0)
        ours.close()
        analyzer.edge = client
        result = analyzer.analyze(study, _plan(analyzer))
        assert result.mode is Mode.DISTRIBUTED, result.fallback_reason
        analyzer.edge = None
        local = analyzer.analyze(study, None)
        assert max(abs(result.probabilities[k] - local.probabilities[k]) for k in local.probabilities) < 1e-4
    finally:
        other.stop()


def _successes(server: EdgeServer) -> int:
    client = EdgeClient(EdgeSettings(server.grpc_address))
    try:
        return client.queue_totals()[0]
    finally:
        client.close()


def test_several_servers_share_the_load_fail_over_and_fail_back(analyzer, repository, study, server, tmp_path):
    ports = free_ports(2)
    other = _server(repository, tmp_path / "other", ports)
    group = EdgeGroup([EdgeSettings(server.grpc_address, timeout_s=5), EdgeSettings(other.grpc_address, timeout_s=5)],
                      retry_s=2.0)
    analyzer.edge = group
    try:
        counts = (_successes(server), _successes(other))
        for _ in range(6):
            assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
        deadline = time.monotonic() + 10  # Triton counts a request once its reply is sent: the last may lag
        while sum(spread := (_successes(server) - counts[0], _successes(other) - counts[1])) < 6 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert spread == (3, 3), spread  # round robin
        other.stop()
        for _ in range(4):  # every study still on the edge: the group fails over to the live server
            assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
        other = _server(repository, tmp_path / "again", ports)  # back, at the same address
        time.sleep(2.5)  # past retry_s: it gets requests again
        before = _successes(other)
        deadline = time.monotonic() + 30
        while _successes(other) == before:
            assert time.monotonic() < deadline, "the returned server got no requests"
            assert analyzer.analyze(study, _plan(analyzer)).mode is Mode.DISTRIBUTED
    finally:
        other.stop()
    assert group.status().live
    alone = EdgeGroup([EdgeSettings(f"127.0.0.1:{free_ports(1)[0]}", timeout_s=2),
                       EdgeSettings(f"127.0.0.1:{free_ports(1)[0]}", timeout_s=2)])
    analyzer.edge = alone
    none = analyzer.analyze(study, _plan(analyzer))
    assert none.mode is Mode.LOCAL_FALLBACK and "all 2 edge servers failed: " in none.fallback_reason
    # each server's reason, once (it gave the last server's, once per model: both models' texts differed)
    assert none.fallback_reason.count("all 2 edge servers failed") == 1, none.fallback_reason
    assert all(none.fallback_reason.count(f"edge server {client.settings.address} unreachable") == 1
               for client in alone.clients)


def _resources() -> tuple[float, int, int]:
    """Resident MB, open file descriptors, threads of this process."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return (int(status["VmRSS"].split()[0]) / 1024, len(os.listdir("/proc/self/fd")), int(status["Threads"]))


def test_soak_300_analyses_through_the_edge(analyzer, server, study):
    """Memory, descriptors and threads stay flat over 300 consecutive analyses after a warm-up."""
    import gc

    analyzer.edge = EdgeClient(EdgeSettings(server.grpc_address, timeout_s=10))
    plan = _plan(analyzer)
    series = list(analyzer.analyze_many([study] * 40, plan, with_heat_maps=False))  # warm-up, both paths
    for _ in range(40):
        analyzer.analyze(study, plan, with_heat_maps=False)
    gc.collect()
    rss, fds, threads = _resources()
    pool_before = sum(t.name.startswith("edge-request") for t in threading.enumerate())
    modes = set()
    for _ in range(150):
        modes.add(analyzer.analyze(study, plan, with_heat_maps=False).mode)
    for result in analyzer.analyze_many([study] * 150, plan, with_heat_maps=False):
        modes.add(result.mode)
    gc.collect()
    rss_after, fds_after, threads_after = _resources()
    assert modes == {Mode.DISTRIBUTED} and len(series) == 40
    assert rss_after <= rss * 1.05, f"resident memory {rss:.0f} → {rss_after:.0f} MB"
    assert fds_after <= fds + 2, f"file descriptors {fds} → {fds_after}"
    # The series' request pool starts its threads as it needs them, up to its bound (a busy machine may need one
    # more than the warm-up did): bounded, not leaked. Every other thread stays as it was.
    pool = [t for t in threading.enumerate() if t.name.startswith("edge-request")]
    assert len(pool) <= 2 * AHEAD, pool
    assert threads_after - len(pool) <= threads - pool_before, \
        f"threads {threads} → {threads_after} ({threading.enumerate()})"
