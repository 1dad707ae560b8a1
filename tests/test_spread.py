"""A worklist spread over devices (inference/analysis/spread.py) against real Triton servers on loopback: every
study exactly once, each device's share following its speed, an edge killed or stalled mid-worklist losing
nothing, a straggler stolen at the tail, and the lanes a session makes."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections import Counter

import pytest
import torch
from test_faults import _plan, analyzer, study  # noqa: F401  (the detector here, the classifier cut 7)

from bench.relay import Relay
from inference.analysis.analyzer import Analyzer
from inference.analysis.session import AnalysisSession
from inference.analysis.spread import Lane, SpreadWorklist
from inference.config import ModelKind, WireFormat
from inference.edge.client import EdgeClient, EdgeGroup, EdgeSettings
from inference.edge.repository import PartRequest, write_repository
from inference.models.findings import WORKSTATION, Findings, Mode
from inference.models.parts import part_difference
from inference.models.stages import INPUT
from inference.planning.plan import ModelPlan, Plan
from inference.planning.planner import study_preference

from test_edge import start_server

pytestmark = pytest.mark.timeout(900)


DETECTOR_CUT = 6


@pytest.fixture(scope="module")
def repository(analyzer, tmp_path_factory):
    """The classifier's cut 7 (what the worklists here send), the detector's cut 6 (a study's two models on two
    servers at once) and its band part for two bands at cut 6 (a spatial split)."""
    root = tmp_path_factory.mktemp("spread") / "repository"
    split, _ = analyzer.band_part(analyzer.detector, DETECTOR_CUT, 2)
    write_repository(root, [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7, WireFormat.FP32),
                            PartRequest(analyzer.detector, analyzer.detector_source, DETECTOR_CUT, WireFormat.FP32),
                            PartRequest(analyzer.detector, analyzer.detector_source, DETECTOR_CUT, WireFormat.FP32,
                                        band_rows=split.rows)],
                     gpu=False)
    return root


@pytest.fixture(scope="module")
def servers(repository, tmp_path_factory):
    started = [start_server(repository, tmp_path_factory.mktemp(f"edge{i}")) for i in range(2)]
    yield started
    for server in started:
        server.stop()


def _studies(study, count: int):
    """`count` studies, told apart by their paths (the same pixels: the same answer wherever they run)."""
    return [dataclasses.replace(study, path=f"study-{i:02d}") for i in range(count)]


def _edge_lane(analyzer: Analyzer, address: str, timeout_s: float = 10) -> Lane:
    client = EdgeClient(EdgeSettings(address, timeout_s=timeout_s))
    return Lane(address, analyzer.with_edge(client), _plan(analyzer))


def _workstation(analyzer: Analyzer) -> Lane:
    return Lane(WORKSTATION, analyzer.with_edge(None), analyzer.local_plan(), background=True)


def _close(lanes: list[Lane]) -> None:
    for lane in lanes:
        if lane.analyzer.edge is not None:
            lane.analyzer.edge.close()


def _exactly_once(results, studies) -> list[Findings]:
    assert all(isinstance(r, Findings) for r in results), results
    assert Counter(r.path for r in results) == Counter(s.path for s in studies)
    first = results[0].probabilities
    assert all(max(abs(r.probabilities[k] - v) for k, v in first.items()) < 1e-5 for r in results)
    return results


def test_every_device_takes_studies_and_each_study_comes_once(analyzer, servers, study):
    lanes = [_edge_lane(analyzer, s.grpc_address) for s in servers] + [_workstation(analyzer)]
    studies = _studies(study, 24)
    began: list[tuple[str, str]] = []
    try:
        results = list(SpreadWorklist(lanes, studies, with_heat_maps=False,
                                      started=lambda s, lane: began.append((s.path, lane))))
    finally:
        _close(lanes)
    _exactly_once(results, studies)
    where = Counter(r.ran_on for r in results)
    for server in servers:  # each edge took its share; its studies say so
        assert where[(WORKSTATION, server.grpc_address)] > 0, where
    assert all(r.mode is Mode.DISTRIBUTED for r in results if len(r.ran_on) == 2)
    assert all(r.mode is Mode.LOCAL for r in results if r.ran_on == (WORKSTATION,))
    assert {path for path, _ in began} == {s.path for s in studies}
    assert sum(lane.done for lane in lanes) == 24


def test_a_slower_edge_gets_fewer_studies(analyzer, servers, study):
    """Edge B behind a relay that holds every chunk 300 ms: A, as fast as the workstation lets it, takes more.
    (Both lanes share this workstation's CPU and keep three studies in flight: B's are slower by the link's
    0.6 s round trip whatever the load, so "more", not a ratio that a loaded CI machine shifts. The worklist must
    outlast B's first study, or A, idle at its end, runs that one again and finishes it first: with 600 ms and 40
    studies B's first took 4.5 s and A's 40 about as long, and B ended with none, 2 runs in 3.)"""
    fast, slow = servers
    host, port = slow.grpc_address.rsplit(":", 1)
    with Relay((host, int(port)), delay_ms=300) as relay:
        lanes = [_edge_lane(analyzer, fast.grpc_address), _edge_lane(analyzer, relay.address)]
        lanes[1].name = relay.address
        studies = _studies(study, 60)
        try:
            results = list(SpreadWorklist(lanes, studies, with_heat_maps=False, allow_fallback=False))
        finally:
            _close(lanes)
    _exactly_once(results, studies)
    taken = Counter(r.ran_on[-1] for r in results)
    assert taken[fast.grpc_address] > taken[relay.address] > 0, taken


def test_the_last_studies_go_where_they_finish_first(analyzer, servers, study):
    """Edge B behind a relay holding every chunk 1.5 s (a study there takes over 3 s, on A a fraction of that);
    each lane's pace known from a worklist of its own before, as a session's lanes keep it. A worklist's last
    studies, both lanes idle with room for them: A takes each first, as it finishes each of them sooner — without
    the rule B takes its share, A runs those again once free, and the worklist waits for B's abandoned requests."""
    fast, slow = servers
    host, port = slow.grpc_address.rsplit(":", 1)
    studies = _studies(study, 3)
    began: list[tuple[str, str]] = []
    with Relay((host, int(port)), delay_ms=1500) as relay:
        lanes = [_edge_lane(analyzer, fast.grpc_address), _edge_lane(analyzer, relay.address, 30)]
        lanes[1].name = relay.address
        try:
            for lane in lanes:  # each lane's pace
                list(SpreadWorklist([lane], [dataclasses.replace(study, path=f"pace-{i}") for i in range(3)],
                                    with_heat_maps=False))
            results = list(SpreadWorklist(lanes, studies, with_heat_maps=False, allow_fallback=False,
                                          started=lambda s, lane: began.append((s.path, lane))))
        finally:
            _close(lanes)
    _exactly_once(results, studies)
    first = {}  # each study's first lane: B may run one again only as a straggler A held too long
    for path, lane in began:
        first.setdefault(path, lane)
    assert set(first.values()) == {fast.grpc_address}, began


def test_an_edge_killed_mid_worklist_loses_nothing(analyzer, repository, servers, study, tmp_path):
    """SIGKILL to one of two edges with requests in flight, no local fallback allowed: its studies go to the
    other edge, each study once, none run here."""
    doomed = start_server(repository, tmp_path)
    lanes = [_edge_lane(analyzer, servers[0].grpc_address, 5), _edge_lane(analyzer, doomed.grpc_address, 5)]
    studies = _studies(study, 20)
    results = []
    try:
        for result in SpreadWorklist(lanes, studies, with_heat_maps=False, allow_fallback=False, retry_s=60):
            results.append(result)
            if len(results) == 4:
                os.killpg(doomed.process.pid, signal.SIGKILL)
    finally:
        doomed.stop()
        _close(lanes)
    _exactly_once(results, studies)
    assert all(r.mode is Mode.DISTRIBUTED for r in results)
    assert Counter(r.ran_on[-1] for r in results[8:]) == {servers[0].grpc_address: 12}


def test_a_stalled_edge_loses_nothing_and_comes_back(analyzer, servers, study):
    """An edge whose link stalls for 5 s mid-worklist: the other edge runs its studies (a study it holds is
    run again elsewhere once overdue), the worklist keeps pace with its input, and once the link flows again
    the edge takes studies again."""
    host, port = servers[1].grpc_address.rsplit(":", 1)
    with Relay((host, int(port))) as relay:
        lanes = [_edge_lane(analyzer, servers[0].grpc_address), _edge_lane(analyzer, relay.address, 2)]
        lanes[1].name = relay.address

        def slowly():  # a study every 250 ms (one edge alone keeps up) while the link stalls, then after it
            for index, item in enumerate(_studies(study, 40)):  # flows again (and the edge had 1.5 s to answer
                if index == 6:                                   # its lane) the rest at once: more than one
                    relay.stall()                                # edge's pipeline holds, so both take them
                if index == 26:
                    relay.resume()
                    time.sleep(1.5)
                if index < 26:
                    time.sleep(0.25)
                yield item
        started = time.monotonic()
        try:
            results = list(SpreadWorklist(lanes, slowly(), with_heat_maps=False, retry_s=1.0))
        finally:
            _close(lanes)
        elapsed = time.monotonic() - started
    assert Counter(r.path for r in results) == Counter(s.path for s in _studies(study, 40))
    assert all(r.mode in (Mode.DISTRIBUTED, Mode.LOCAL_FALLBACK) for r in results)
    assert elapsed < 8 + 5, elapsed  # the input's own 8 s, and not a request timeout per study stalled
    back = [r for r in results[-12:] if r.ran_on[-1] == relay.address]
    assert back, Counter(r.ran_on for r in results[-12:])  # it came back


def test_a_straggler_is_stolen_at_the_tail(analyzer, servers, study):
    """The workstation takes a study and crawls; the edge, done with the rest, runs it too and its result is
    kept; the worklist does not wait for the workstation."""
    lanes = [_edge_lane(analyzer, servers[0].grpc_address), _workstation(analyzer)]
    crawling = lanes[1].analyzer
    begin = crawling._begin

    def crawl(radiograph, plan, with_heat_maps, check, send, sent_after):
        for _ in range(600):  # a minute, unless it is stopped
            check()
            time.sleep(0.1)
        return begin(radiograph, plan, with_heat_maps, check, send, sent_after)

    crawling._begin = crawl  # this lane only
    studies = _studies(study, 8)
    started = time.monotonic()
    try:
        results = list(SpreadWorklist(lanes, studies, with_heat_maps=False))
    finally:
        _close(lanes)
    elapsed = time.monotonic() - started
    _exactly_once(results, studies)
    assert all(r.ran_on[-1] == servers[0].grpc_address for r in results)
    assert elapsed < 30, elapsed
    assert lanes[1].done == 0 and lanes[0].done == 8


def test_a_session_makes_a_lane_per_edge_and_a_worklist_uses_both(analyzer, servers, study):
    """Two edges in the settings (a fail-over group for a single study): a worklist goes to both; a fixed
    split leaves this workstation out of the lanes, the automatic split brings it in (behind the edges)."""
    group = EdgeGroup([EdgeSettings(s.grpc_address) for s in servers])
    analyzer_two = analyzer.with_edge(group)
    try:
        session = AnalysisSession(analyzer_two, _plan(analyzer), auto=False, with_heat_maps=False)
        assert [lane.name for lane in session.lanes()] == [s.grpc_address for s in servers]
        results = list(session.analyze_series(_studies(study, 12), in_order=True))
        assert [r.path for r in results] == [s.path for s in _studies(study, 12)]
        assert {r.ran_on[-1] for r in results} == {s.grpc_address for s in servers}
        auto = AnalysisSession(analyzer_two, _plan(analyzer), auto=True, with_heat_maps=False)
        lanes = auto.lanes()
        assert [lane.name for lane in lanes] == [s.grpc_address for s in servers] + [WORKSTATION]
        assert lanes[-1].background and lanes[-1].plan == analyzer.local_plan()
    finally:
        group.close()


def test_one_study_runs_its_two_models_on_two_servers_at_once(analyzer, servers, study):
    """Both models offloaded and two edges: each model's request goes to a server of its own, both out at once
    (the detector to the server that computed it fastest, a server not yet measured for it counting as fastest);
    the result equals the one-server result."""
    plan = Plan(ModelPlan(DETECTOR_CUT), ModelPlan(7))
    addresses = [s.grpc_address for s in servers]
    one = analyzer.with_edge(EdgeClient(EdgeSettings(addresses[0])))
    group = EdgeGroup([EdgeSettings(address) for address in addresses])
    two = analyzer.with_edge(group)
    try:
        alone = one.analyze(study, plan, allow_fallback=False)
        results = [two.analyze(study, plan, allow_fallback=False) for _ in range(3)]
    finally:
        one.edge.close()
        group.close()
    assert alone.ran_on == (WORKSTATION, addresses[0])
    for result in results:
        assert result.mode is Mode.DISTRIBUTED and not result.fallback_reason
        assert set(result.ran_on) == {WORKSTATION, *addresses}  # the detector's server, then the classifier's
        assert max(abs(result.probabilities[k] - v) for k, v in alone.probabilities.items()) < 1e-5
        boxes = [c for d in result.detections for c in d.box_xyxy]
        assert boxes == pytest.approx([c for d in alone.detections for c in d.box_xyxy], abs=1e-3)
    # first both unmeasured (the order given), then each model on the server it has not yet run on
    assert [r.ran_on[1:] for r in results[:2]] == [tuple(addresses), tuple(reversed(addresses))]


def _requests_served(address: str, part: str) -> int:
    """How many requests the server at `address` has run on `part` (Triton's statistics)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(address) as triton:
        stats = triton.get_inference_statistics(part).model_stats
    return sum(entry.inference_stats.success.count for entry in stats)


def test_a_spatial_split_runs_the_detectors_bands_on_two_servers(analyzer, servers, study):
    """Stages [0, 6) of the detector on two bands of the image, one per server, joined here, the rest on an edge:
    the unsplit model's result within 1e-4; the served band part equals PyTorch on its band; with one server, one
    band runs there and the other here."""
    addresses = [s.grpc_address for s in servers]
    split, spec = analyzer.band_part(analyzer.detector, DETECTOR_CUT, 2)
    band = analyzer.model_inputs(study)[ModelKind.DETECTOR][:, :, split.starts[1]:split.starts[1] + split.rows]
    client = EdgeClient(EdgeSettings(addresses[1]))
    group = EdgeGroup([EdgeSettings(address) for address in addresses])
    try:
        served = client.infer(spec, {"image": band.cpu().numpy()}, tuple(t.name for t in spec.outputs))
        unsplit = analyzer.analyze(study, analyzer.local_plan(), allow_fallback=False)
        plan = Plan(ModelPlan(DETECTOR_CUT, bands=2), ModelPlan(analyzer.classifier.stage_count))
        before = [_requests_served(address, spec.name) for address in addresses]
        on_two = analyzer.with_edge(group).analyze(study, plan, allow_fallback=False)
        assert [_requests_served(address, spec.name) - n for address, n in zip(addresses, before, strict=True)] \
            == [1, 1]  # a band on each server
        on_one = analyzer.with_edge(client).analyze(study, plan, allow_fallback=False)
    finally:
        client.close()
        group.close()
    with torch.inference_mode():
        want = analyzer.detector.run_stages({INPUT: band}, 0, DETECTOR_CUT)
    for name, tensor in zip((t.name for t in spec.outputs), want.values(), strict=True):
        assert part_difference(ModelKind.DETECTOR, name, tensor.cpu().numpy(), served.outputs[name], 128) < 1e-4
    for result, where in ((on_two, {WORKSTATION, *addresses}), (on_one, {WORKSTATION, addresses[1]})):
        assert result.models[ModelKind.DETECTOR].bands == 2 and not result.fallback_reason
        assert set(result.ran_on) == where
        assert len(result.detections) == len(unsplit.detections) > 0
        for got, want_box in zip(result.detections, unsplit.detections, strict=True):
            assert got.score == pytest.approx(want_box.score, abs=1e-4)
            assert got.box_xyxy == pytest.approx(want_box.box_xyxy, abs=1e-4 * 320)  # 1e-4 of the image's side


def test_the_planner_predicts_a_spatial_split_only_with_servers_for_its_bands(analyzer, servers, study):
    """With two servers the automatic split weighs the detector's spatial split (its band part measured on the
    edge) beside the same cut unsplit, and chooses it only where it is predicted faster; a session with one
    server plans for one (no bands to spread)."""
    group = EdgeGroup([EdgeSettings(s.grpc_address) for s in servers])
    try:
        session = AnalysisSession(analyzer.with_edge(group), _plan(analyzer), auto=True, with_heat_maps=False)
        planner = session.planner
        assert planner is not None and planner.servers == 2
        plan = session.prepare(study)
        served = set(group.status().models)
        _, spec = analyzer.band_part(analyzer.detector, DETECTOR_CUT, 2)
        assert planner.profile_band(analyzer.detector, DETECTOR_CUT, 2) == planner.measured.edge_part_ms[spec.name]
        options = planner.candidates(ModelKind.DETECTOR, analyzer.detector, served, spatial=True)
        banded = next(o for o in options if o.bands == 2)
        unsplit = next(o for o in options if o.cut == DETECTOR_CUT and o.wire is banded.wire and not o.bands)
        assert banded.measured_edge and banded.edge_ms > unsplit.edge_ms and banded.local_ms < unsplit.local_ms
        chosen = planner.options[ModelKind.DETECTOR]  # the split where it pays (local wins near-ties)
        assert study_preference(chosen) <= study_preference(banded) and plan.detector.bands == chosen.bands
        assert banded.predicted_ms == pytest.approx(banded.local_ms + banded.transfer_ms + banded.edge_ms)
        single = AnalysisSession(analyzer.with_edge(group.clients[0]), _plan(analyzer), auto=True).planner
        assert single is not None and single.servers == 1
    finally:
        group.close()


def test_the_planner_measures_each_server_against_the_first(analyzer, servers, study):
    """A worklist's plan counts each edge at its own measured speed: two equal servers come out near 1 (the
    same part timed on each), a server that does not answer as infinitely slow (no studies planned for it)."""
    addresses = [s.grpc_address for s in servers]
    host, port = addresses[1].rsplit(":", 1)
    with Relay((host, int(port))) as relay:
        group = EdgeGroup([EdgeSettings(addresses[0]), EdgeSettings(addresses[1]),
                           EdgeSettings(relay.address, timeout_s=2)])
        try:
            session = AnalysisSession(analyzer.with_edge(group), _plan(analyzer), auto=True, with_heat_maps=False)
            planner = session.planner
            assert planner is not None and planner.servers == 3
            relay.cut()
            session.prepare(study, edges=3)
            first, equal, down = planner.server_slowness()
        finally:
            group.close()
    assert first == 1.0 and 1 / 3 < equal < 3 and down == float("inf")


def _held(session: AnalysisSession) -> threading.Event:
    """The session's planner waits for the returned event before it measures the link (and the edge)."""
    planner = session.planner
    assert planner is not None
    release, measure = threading.Event(), planner.measure_link

    def held():
        release.wait(120)
        return measure()
    planner.measure_link = held  # type: ignore[method-assign]
    return release


def _worklist_while_measuring(session: AnalysisSession, release: threading.Event, study) -> None:
    """Six studies through `session`: the first result arrives while its planner is still held, then it is let go;
    every study comes exactly once."""
    results = []
    for result in session.analyze_series(_studies(study, 6)):
        if not results:
            assert session.measuring()
            release.set()
        results.append(result)
    _exactly_once(results, _studies(study, 6))


def test_the_first_studies_do_not_wait_for_the_planner(analyzer, servers, study):
    """Auto with nothing measured yet: a study, and a worklist, start at once on the fixed cuts while the planner
    measures the link and the edge in the background (held here until a result is in); a worklist begun during a
    single study's measurement gets its own plan when it ends; the next study runs on the planner's plan."""
    fixed = _plan(analyzer)
    client = EdgeClient(EdgeSettings(servers[0].grpc_address))
    try:
        worklist = AnalysisSession(analyzer.with_edge(client), fixed, auto=True, with_heat_maps=False)
        release = _held(worklist)
        _worklist_while_measuring(worklist, release, study)
        assert worklist.wait_for_plan(120) and worklist.measured

        session = AnalysisSession(analyzer.with_edge(client), fixed, auto=True, with_heat_maps=False)
        release = _held(session)
        first = session.analyze(study)
        assert session.measuring()  # the result came before the planner measured anything
        assert {kind: run.cut for kind, run in first.models.items()} == {kind: p.cut for kind, p in fixed.items()}
        assert all(run.predicted_ms is None for run in first.models.values())
        _worklist_while_measuring(session, release, study)  # begun while the single study's plan measures
        assert session.wait_for_plan(120) and session.measured
        edges = [lane for lane in session.lanes() if lane.analyzer.edge is not None]
        planned = session.plan if session.plan.uses_edge(analyzer.stage_counts) else fixed  # (local: lanes stay)
        assert all(lane.plan == planned for lane in edges)
        second = session.analyze(study)
        assert all(run.predicted_ms is not None for run in second.models.values())
    finally:
        client.close()


def test_cancel_stops_every_lane(analyzer, servers, study):
    lanes = [_edge_lane(analyzer, servers[0].grpc_address), _workstation(analyzer)]
    cancel = threading.Event()
    results = []
    from inference.analysis.analyzer import AnalysisCancelled
    try:
        with pytest.raises(AnalysisCancelled):
            for result in SpreadWorklist(lanes, _studies(study, 200), with_heat_maps=False, cancel=cancel):
                results.append(result)
                if len(results) == 3:
                    cancel.set()
    finally:
        _close(lanes)
    assert 3 <= len(results) < 20
    assert not [t for t in threading.enumerate() if t.name.startswith(("lane ", "worklist-reader"))]


def test_a_lane_s_pace_follows_its_recent_turns_and_its_company():
    """A lane's time between results: a pipelined lane's pairs (short and long turns) average out, and one slow
    turn does not hold the estimate up while the lane is back at its pace (a worklist's end went to a slower lane
    in the benchmark when it did: docs/benchmarks.md)."""
    from inference.analysis.spread import _interval

    lane = Lane("edge", analyzer=None, plan=Plan(ModelPlan(0), ModelPlan(0)))  # type: ignore[arg-type]
    assert _interval(lane) is None
    lane.turns.extend([0.2, 2.4, 0.2])  # a pipelined lane's first turns, in pairs
    assert _interval(lane) == pytest.approx(2.8 / 3)
    lane.turns.append(2.4)
    assert _interval(lane) == pytest.approx(1.3)
    lane.turns.extend([1.3, 3.2, 1.2, 1.4])  # one turn slowed down
    assert _interval(lane) == pytest.approx(1.35)
    # this workstation's pace learned alone does not hold beside edge lanes (it runs on what they leave of the CPU)
    here = Lane("workstation", analyzer=None, plan=lane.plan, background=True)  # type: ignore[arg-type]
    for each in (lane, here):  # each pace learned alone
        each.turns.extend([3.3] * 4)
        each.quickest, each.beside = 3.3, frozenset({each.name})
    SpreadWorklist([here], [])
    assert _interval(here) == pytest.approx(3.3)  # alone again: kept
    SpreadWorklist([lane, here], [])
    assert _interval(here) is None and here.quickest is None  # beside an edge: learned again
    assert _interval(lane) == pytest.approx(3.3)  # an edge lane's own server sets its pace: kept


def test_the_worklist_plan_shares_the_workstation_between_the_edges_studies_and_its_own():
    """`worklist_rate`: an edge lane is bound by its link or its server, the workstation's CPU by its part of
    the edges' studies plus its own studies with what is left."""
    from inference.config import ModelKind
    from inference.planning.planner import Option, series_bound_ms, worklist_rate

    def option(here, link, edge):
        return Option(ModelKind.DETECTOR, 0, WireFormat.INT8, here + link + edge, here, link, edge)

    whole_here = 2000.0  # a study analysed here, ms
    offload = (option(50, 50, 1000),)   # the edge does it all: 1 study/s per edge, 5 % of this workstation each
    split = (option(800, 50, 250),)     # the workstation does most: the edges wait on it
    assert worklist_rate(offload, 0, whole_here, 1) == pytest.approx(1 + 0.95 / 2)
    assert worklist_rate(offload, 0, whole_here, 2) == pytest.approx(2 + 0.90 / 2)
    # the split is bound by the workstation (1 / 0.8 s), leaving it nothing of its own
    assert worklist_rate(split, 0, whole_here, 2) == pytest.approx(1 / 0.8)
    assert worklist_rate(offload, 0, whole_here, 2) > worklist_rate(split, 0, whole_here, 2)
    # with a single slow edge and a strong workstation, the split wins
    slow_offload = (option(20, 50, 4000),)
    assert worklist_rate(split, 0, whole_here, 1) > worklist_rate(slow_offload, 0, whole_here, 1)
    # all here: the edges take nothing, the rate is this workstation's
    here = (option(2000, 0, 0),)
    assert worklist_rate(here, 0, whole_here, 3) == pytest.approx(0.5)
    # serving takes CPU at both ends, which one study alone hides in the link's time: the gRPC client's here, and
    # the edge's beyond its compute when busy
    talkative = (Option(ModelKind.DETECTOR, 6, WireFormat.INT8, 900, 700, 100, 100, client_ms=100),)
    assert worklist_rate(talkative, 0, whole_here, 2) == pytest.approx(1 / 0.8)
    assert series_bound_ms(talkative, 50) == pytest.approx(850)  # 50 + 700 + 100, not the 750 of its stages
    served = (Option(ModelKind.DETECTOR, 0, WireFormat.INT8, 1100, 50, 50, 1000, busy_ms=1250),)
    assert series_bound_ms(served, 0) == pytest.approx(1250)
    assert worklist_rate(served, 0, whole_here, 1) == pytest.approx(1 / 1.25 + (1 - 0.05 / 1.25) / 2)


def test_a_worklist_plan_keeps_the_workstation_busy_only_where_that_pays():
    """`worklist_preference`: of the plans predicted within WORKSTATION_MARGIN of the fastest, the one taking the
    least of this workstation's CPU for the edges' studies comes first; beyond the margin, speed decides."""
    from inference.config import ModelKind
    from inference.planning.planner import WORKSTATION_MARGIN, Option, worklist_preference, worklist_rate

    whole_here = 4000.0
    offload = (Option(ModelKind.DETECTOR, 0, WireFormat.INT8, 1100, 50, 50, 1000),)
    split = (Option(ModelKind.DETECTOR, 6, WireFormat.INT8, 1180, 780, 50, 350),)

    def first(plans, edges):
        rates = {plan: worklist_rate(plan, 0, whole_here, edges) for plan in plans}
        return min(plans, key=lambda plan: worklist_preference(plan, rates[plan], max(rates.values())))

    # one edge: the split, bound by this workstation, is predicted 1.28/s against full offload's 1.24/s (4 %)
    assert 1 < worklist_rate(split, 0, whole_here, 1) / worklist_rate(offload, 0, whole_here, 1) < 1 + WORKSTATION_MARGIN
    assert first([split, offload], 1) == offload
    # a faster edge's split gains beyond the margin: taken
    quick_split = (Option(ModelKind.DETECTOR, 6, WireFormat.INT8, 700, 300, 50, 350),)
    assert worklist_rate(quick_split, 0, whole_here, 1) > (1 + WORKSTATION_MARGIN) * worklist_rate(offload, 0, whole_here, 1)
    assert first([offload, quick_split], 1) == quick_split
