"""EdgeDI's spatial split with rows swapped after every layer (inference/models/halo.py): bands run by threads here
equal the whole detector, and a band given the wrong rows does not (so the comparison can fail); the halo part on
two real Triton servers, swapping rows over their peer channel, equals the whole detector; and from an attacker's
side: the peer channel ignores strangers, refuses peers the operator did not name and, beyond loopback, anyone
without a certificate the peers' CA signed."""

from __future__ import annotations

import dataclasses
import secrets
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import torch

from bench.relay import Relay
from inference.analysis.analyzer import Analyzer, ModelChoice
from inference.analysis.session import AnalysisSession
from inference.config import ModelKind, WireFormat
from inference.edge.client import EdgeClient, EdgeError, EdgeGroup, EdgeSettings
from inference.edge.halo import detect_on_bands
from inference.edge.repository import HALO_ADDRESS, PartRequest, write_repository
from inference.edge.server import EdgeServer, EdgeServerError, TlsFiles, free_ports
from inference.models.detector import YoloDetector
from inference.models.findings import WORKSTATION, Mode
from inference.models.halo import HEAD_MAPS, HaloBand, halo_part_spec, run_bands_here, trading_with
from inference.models.parts import part_difference
from inference.planning.plan import ModelPlan, Plan
from inference.planning.planner import study_preference
from viewer.loader import load_radiograph

from certificates import make_certificates
from test_edge import TINY, start_server

pytestmark = pytest.mark.timeout(600)
HALO_WAIT_S = 10  # python_model.py's: how long an edge waits for the other band's connection
SIZE = 384  # two bands of 192 rows: 6 rows at stride 32, as far as the SPP's widest pool reaches


def _demo_detector(size: int) -> YoloDetector:
    """The narrow test detector at `size` px with its demo weights (random ones leave its outputs blind to the
    image: the comparisons below could not fail)."""
    return Analyzer(ModelChoice(detector=dataclasses.replace(TINY, input_size=size))).detector


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(ModelChoice(detector=dataclasses.replace(TINY, input_size=SIZE), runtime="torch"))


@pytest.fixture(scope="module")
def detector(analyzer) -> YoloDetector:
    return analyzer.detector


@pytest.fixture(scope="module")
def band(detector) -> HaloBand:
    return HaloBand(detector)


def _difference(detector: YoloDetector, expected: torch.Tensor, got: torch.Tensor) -> float:
    return part_difference(ModelKind.DETECTOR, "output", expected.numpy(), got.numpy(), detector.config.input_size)


@pytest.mark.parametrize("count", [2, 3])
def test_bands_swapping_rows_equal_the_whole_detector(count):
    detector = _demo_detector(192 * count)  # 6 rows of stride 32 a band
    band = HaloBand(detector)
    image = torch.rand(1, 3, 192 * count, 192 * count)
    with torch.inference_mode():
        expected = detector(image)
    got = run_bands_here(band, image, count)
    assert band.exchanges > 10  # every 3×3 convolution and pool swaps
    assert _difference(detector, expected, got) < 1e-4  # FP32: the order of sums differs on a band


def test_a_band_given_zeros_for_its_neighbours_rows_differs(detector, band):
    image = torch.rand(1, 3, SIZE, SIZE)
    split = band.split(2)

    class Blind:  # the padding a band alone would use: what the exchange replaces
        def swap(self, first, last):
            return torch.zeros_like(last), torch.zeros_like(first)

    with torch.inference_mode():
        expected = detector(image)
        maps = []
        for rows in split.bands(image):
            with trading_with(Blind()):
                maps.append(band(rows))
        blind = band.decode(split.join(maps))
    assert _difference(detector, expected, blind) > 0.1


def test_bands_too_thin_for_the_widest_pool_are_refused(band):
    with pytest.raises(ValueError, match=r"4 bands of 96 rows are too thin for the detector: its layer \S+ reaches \d rows at stride 32"):
        band.split(4)  # 96 rows: 3 at stride 32
    with pytest.raises(ValueError, match="do not split into 5 bands"):
        band.split(5)


@pytest.fixture(scope="module")
def repository(detector, tmp_path_factory):
    root = tmp_path_factory.mktemp("halo") / "repository"
    write_repository(root, [PartRequest(detector, "demo", 0, WireFormat.FP32, halo_bands=2)], gpu=False)
    return root


@pytest.fixture(scope="module")
def pair(repository, tmp_path_factory):
    """Two edge servers on loopback serving the halo part, each naming the other as its only peer."""
    listen = [f"127.0.0.1:{port}" for port in free_ports(2)]
    servers = [start_server(repository, tmp_path_factory.mktemp(f"halo-edge{i}"), halo_listen=listen[i],
                            halo_peers=(listen[1 - i],)) for i in range(2)]
    clients = [EdgeClient(EdgeSettings(server.grpc_address, timeout_s=60)) for server in servers]
    yield servers, clients, listen
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def test_two_edges_swapping_rows_give_the_whole_detector(detector, band, pair):
    servers, clients, _ = pair
    spec = halo_part_spec(band, 2, "demo")
    image = torch.rand(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        expected = detector(image)
    for order in (clients, clients[::-1]):  # either edge may hold the top band
        reply = detect_on_bands(order, spec, band, image)
        assert _difference(detector, expected, reply.detections) < 1e-4
        assert reply.servers == tuple(client.settings.address for client in order)
        assert 0 < reply.edge_ms <= reply.round_trip_ms


def _request(client: EdgeClient, spec, band: HaloBand, **parameters):
    rows = band.split(2).bands(torch.rand(1, 3, SIZE, SIZE))[0]
    return client.infer(spec, {"image": rows.numpy()}, HEAD_MAPS, timeout_s=30, parameters=parameters)


def test_an_edge_connects_only_to_the_peers_its_operator_named(detector, band, pair):
    _, clients, _ = pair
    spec = halo_part_spec(band, 2, "demo")
    stranger = socket.socket()
    stranger.bind(("127.0.0.1", 0))
    stranger.listen()
    stranger.settimeout(2)
    with pytest.raises(EdgeError, match="is not one of this edge's halo peers"):
        _request(clients[0], spec, band, mededge_halo_session="ab" * 16, mededge_halo_band=0,
                 mededge_halo_below=f"127.0.0.1:{stranger.getsockname()[1]}")
    with pytest.raises(TimeoutError):
        stranger.accept()  # no connection was made to it
    stranger.close()
    with pytest.raises(EdgeError, match="needs its session"):
        _request(clients[0], spec, band, mededge_halo_band=0, mededge_halo_below="x")


def test_strangers_on_the_peer_channel_get_nothing_and_change_nothing(detector, band, pair):
    _, clients, listen = pair
    host, port = listen[1].rsplit(":", 1)
    junk = socket.create_connection((host, int(port)), timeout=5)
    junk.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(64))
    assert _closed(junk)  # unanswered
    junk.close()
    posing = socket.create_connection((host, int(port)), timeout=1)  # a well-formed hello for a session no one runs
    posing.sendall(b"MEDEDGE-HALO-1\n" + bytes(range(16)) + bytes(16) + (1).to_bytes(4, "big"))
    spec = halo_part_spec(band, 2, "demo")
    image = torch.rand(1, 3, SIZE, SIZE)
    with torch.inference_mode():
        expected = detector(image)
    assert _difference(detector, expected, detect_on_bands(clients, spec, band, image).detections) < 1e-4
    with pytest.raises(TimeoutError):
        posing.recv(1024)  # no rows reach it
    posing.close()
    elsewhere = socket.create_connection((host, int(port)), timeout=5, source_address=("127.0.0.2", 0))
    elsewhere.sendall(b"MEDEDGE-HALO-1\n" + bytes(range(16)) + bytes(16) + (1).to_bytes(4, "big"))
    assert _closed(elsewhere)  # not from a peer's address: closed at once, its hello unread
    elsewhere.close()


def _closed(connection: socket.socket) -> bool:
    """Whether the other end closed `connection` (or reset it, with our bytes unread) without a byte sent."""
    try:
        return connection.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_a_band_whose_upper_neighbour_never_comes_fails_with_the_reason(detector, band, pair):
    _, clients, _ = pair
    spec = halo_part_spec(band, 2, "demo")
    with pytest.raises(EdgeError, match="the edge running band 0 did not connect"):
        _request(clients[1], spec, band, mededge_halo_session="cd" * 16, mededge_halo_band=1)


def test_a_peer_channel_beyond_loopback_needs_mutual_tls(tmp_path):
    files = make_certificates(tmp_path)
    options = dict(host="127.0.0.1", halo_listen="0.0.0.0:7011", halo_peers=("10.0.0.2:7011",))
    plain = EdgeServer(tmp_path, tmp_path / "run", **options)
    with pytest.raises(EdgeServerError, match="halo peers on 0.0.0.0:7011.*--tls-client-ca"):
        plain.check_exposure()
    one_way = EdgeServer(tmp_path, tmp_path / "run", tls=TlsFiles(files["server.pem"], files["server.key"]),
                         **options)
    with pytest.raises(EdgeServerError, match="halo peers"):
        one_way.check_exposure()
    mutual = EdgeServer(tmp_path, tmp_path / "run", tls=TlsFiles(files["server.pem"], files["server.key"],
                                                                 files["ca.pem"]), **options)
    assert mutual.check_exposure() == []
    # listening on loopback, but sending rows to a peer elsewhere: plaintext on the network too
    outward = EdgeServer(tmp_path, tmp_path / "run", halo_listen="127.0.0.1:7011", halo_peers=("10.0.0.2:7011",))
    with pytest.raises(EdgeServerError, match="halo peer on 10.0.0.2:7011"):
        outward.check_exposure()


def test_peers_over_mutual_tls_swap_rows_and_refuse_a_stranger_s_certificate(detector, band, repository, tmp_path):
    files = make_certificates(tmp_path)
    tls = TlsFiles(files["server.pem"], files["server.key"], files["ca.pem"])
    listen = [f"127.0.0.1:{port}" for port in free_ports(2)]
    servers = []
    try:
        for i in range(2):
            servers.append(start_server(repository, tmp_path / f"edge{i}", tls=tls, halo_listen=listen[i],
                                        halo_peers=(listen[1 - i],)))
        clients = [EdgeClient(EdgeSettings(server.grpc_address, tls=True, root_certificate=files["ca.pem"],
                                           client_certificate=files["client.pem"], client_key=files["client.key"],
                                           timeout_s=60)) for server in servers]
        image = torch.rand(1, 3, SIZE, SIZE)
        with torch.inference_mode():
            expected = detector(image)
        reply = detect_on_bands(clients, halo_part_spec(band, 2, "demo"), band, image)
        assert _difference(detector, expected, reply.detections) < 1e-4  # the peers' certificates: accepted
        host, port = listen[1].rsplit(":", 1)
        stranger = _self_signed(tmp_path)
        assert _tls_hello_refused(host, int(port), files["ca.pem"], None)
        assert _tls_hello_refused(host, int(port), files["ca.pem"], stranger)
        # a certificate the peers' CA signed gets past TLS (its hello then waits for a band): the check can fail
        assert not _tls_hello_refused(host, int(port), files["ca.pem"], (files["client.pem"], files["client.key"]))
        for client in clients:
            client.close()
    finally:
        for server in servers:
            server.stop()


def _tls_hello_refused(host: str, port: int, authority, certificate) -> bool:
    """Whether the peer channel closes on (or alerts) a TLS client with `certificate` (None: without one) that
    sends a well-formed hello; False where it holds the connection open, waiting for that session's band."""
    context = ssl.create_default_context(cafile=str(authority))
    if certificate is not None:
        context.load_cert_chain(*certificate)
    with socket.create_connection((host, port), timeout=3) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=host) as tls_socket:
                tls_socket.sendall(b"MEDEDGE-HALO-1\n" + bytes(range(16)) + bytes(16) + (1).to_bytes(4, "big"))
                return tls_socket.recv(1024) == b""
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


def _self_signed(folder) -> tuple:
    import subprocess

    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "stranger.key", "-out",
                    "stranger.pem", "-days", "1", "-subj", "/CN=stranger"], check=True, capture_output=True, cwd=folder)
    return folder / "stranger.pem", folder / "stranger.key"


def _real_study(shared_cxr: Path):
    return load_radiograph(str(shared_cxr / "dicom" / "DX_chest_966_fixed.dcm"))


def test_a_study_s_detector_runs_on_two_edges_swapping_rows(analyzer, pair, shared_cxr):
    servers, _, _ = pair
    study = _real_study(shared_cxr)
    group = EdgeGroup([EdgeSettings(server.grpc_address, timeout_s=60) for server in servers])
    lane = analyzer.with_edge(group)
    local = analyzer.with_edge(None).analyze(study, analyzer.local_plan(), with_heat_maps=False)
    on_bands = lane.analyze(study, Plan(ModelPlan(0, halo=2), ModelPlan(analyzer.classifier.stage_count)),
                            with_heat_maps=False, allow_fallback=False)
    assert on_bands.mode is Mode.DISTRIBUTED and on_bands.fallback_reason is None
    assert set(on_bands.ran_on) == {WORKSTATION, *(server.grpc_address for server in servers)}
    assert on_bands.models[ModelKind.DETECTOR].bands == 2 and on_bands.models[ModelKind.DETECTOR].cut == 0
    assert local.detections and [d.label for d in on_bands.detections] == [d.label for d in local.detections]
    for ours, theirs in zip(on_bands.detections, local.detections, strict=True):
        assert abs(ours.score - theirs.score) < 1e-4
        assert max(abs(a - b) for a, b in zip(ours.box_xyxy, theirs.box_xyxy, strict=True)) < 1e-2  # pixels of the radiograph
    group.close()


def test_an_edge_gone_from_the_bands_leaves_the_study_analysed_here(analyzer, pair, shared_cxr):
    servers, _, _ = pair
    gone = f"127.0.0.1:{free_ports(1)[0]}"
    group = EdgeGroup([EdgeSettings(servers[0].grpc_address, timeout_s=20), EdgeSettings(gone, timeout_s=5)])
    study = _real_study(shared_cxr)
    findings = analyzer.with_edge(group).analyze(
        study, Plan(ModelPlan(0, halo=2), ModelPlan(analyzer.classifier.stage_count)), with_heat_maps=False)
    assert findings.mode is Mode.LOCAL_FALLBACK and gone in (findings.fallback_reason or "")
    assert findings.ran_on == (WORKSTATION,)
    group.close()


def test_the_planner_weighs_the_detector_on_bands_swapping_rows(analyzer, pair, shared_cxr):
    """With two servers serving the halo part, a study's automatic split has the detector on two bands among its
    options, their time on the edges measured, and chooses it only where it is predicted faster."""
    servers, _, _ = pair
    group = EdgeGroup([EdgeSettings(server.grpc_address, timeout_s=60) for server in servers])
    try:
        session = AnalysisSession(analyzer.with_edge(group), analyzer.local_plan(), auto=True, with_heat_maps=False)
        planner = session.planner
        assert planner is not None and planner.servers == 2
        plan = session.prepare(_real_study(shared_cxr))
        _, spec = analyzer.halo_part(2)
        assert planner.profile_halo(2) == planner.measured.edge_part_ms[spec.name] > 0
        options = planner.candidates(ModelKind.DETECTOR, analyzer.detector, set(group.status().models), spatial=True)
        on_bands = next(o for o in options if o.halo == 2)
        assert on_bands.cut == 0 and on_bands.measured_edge and on_bands.edge_ms >= planner.measured.edge_part_ms[
            spec.name]
        assert on_bands.predicted_ms == pytest.approx(on_bands.local_ms + on_bands.transfer_ms + on_bands.edge_ms)
        chosen = planner.options[ModelKind.DETECTOR]
        assert study_preference(chosen) <= study_preference(on_bands) and plan.detector.halo == chosen.halo
    finally:
        group.close()


def test_bands_of_two_studies_crossing_on_the_same_two_edges_both_finish(band, pair):
    """Two studies' bands in crossed order, each edge receiving one study's top band and the other's bottom band,
    the top bands first: an edge that ran one band at a time would hold its top band while waiting for rows from
    the other edge, which holds the other study's top band (they met only at the time limits, and failed)."""
    _, clients, listen = pair
    spec = halo_part_spec(band, 2, "demo")
    rows = band.split(2).bands(torch.rand(1, 3, SIZE, SIZE))
    first, second = secrets.token_hex(16), secrets.token_hex(16)
    outcomes: dict[str, str] = {}

    def send(name: str, client: EdgeClient, session: str, index: int, below: str | None) -> None:
        parameters: dict[str, str | int] = {"mededge_halo_session": session, "mededge_halo_band": index}
        if below:
            parameters["mededge_halo_below"] = below
        try:
            client.infer(spec, {"image": rows[index].numpy()}, HEAD_MAPS, timeout_s=30, parameters=parameters)
            outcomes[name] = "done"
        except EdgeError as error:
            outcomes[name] = str(error)

    started = time.monotonic()
    threads = []
    for arguments in (("first's top on A", clients[0], first, 0, listen[1]),
                      ("second's top on B", clients[1], second, 0, listen[0]),
                      ("second's bottom on A", clients[0], second, 1, None),
                      ("first's bottom on B", clients[1], first, 1, None)):
        threads.append(threading.Thread(target=send, args=arguments))
        threads[-1].start()
        time.sleep(0.3)  # in this order
    for thread in threads:
        thread.join()
    assert set(outcomes.values()) == {"done"}, outcomes
    assert time.monotonic() - started < 8  # not at a time limit (10 s)


def test_an_edge_whose_link_fails_is_set_aside_and_the_next_studies_do_not_wait_for_it(analyzer, pair, shared_cxr):
    """Edge B behind a relay that is cut: the study that meets it falls back here at once (not after edge A's band
    waits out its rows), and the next one does not try B again while it is set aside."""
    servers, _, _ = pair
    host, port = servers[1].grpc_address.rsplit(":", 1)
    study = _real_study(shared_cxr)
    plan = Plan(ModelPlan(0, halo=2), ModelPlan(analyzer.classifier.stage_count))
    with Relay((host, int(port))) as relay:
        group = EdgeGroup([EdgeSettings(servers[0].grpc_address, timeout_s=30),
                           EdgeSettings(relay.address, timeout_s=30)], retry_s=60)
        lane = analyzer.with_edge(group)
        try:
            assert lane.analyze(study, plan, with_heat_maps=False).mode is Mode.DISTRIBUTED  # through the relay
            relay.cut()
            for reason in (relay.address, "needs 2 working edge servers, 1 answer"):
                started = time.monotonic()
                findings = lane.analyze(study, plan, with_heat_maps=False)
                assert findings.mode is Mode.LOCAL_FALLBACK and reason in (findings.fallback_reason or "")
                assert time.monotonic() - started < 5  # not edge A's band waiting for rows (10 s)
                assert findings.ran_on == (WORKSTATION,)
        finally:
            group.close()
    time.sleep(HALO_WAIT_S + 1)  # edge A's abandoned band has ended (its neighbour never came) before the next test


def test_a_halo_part_reloaded_by_the_operator_still_names_where_its_peers_reach_it(detector, band, pair):
    """(Last here: it unloads a part of the module's servers, after the bands of studies crossing on them.) `edge
    control unload` then `load` makes the part's entry again; the address its peers reach it at stays, and a
    study's bands run as before."""
    servers, _, listen = pair
    operator = servers[1].operator()
    started = time.monotonic()
    operator.unload("detector_halo2")
    assert time.monotonic() - started < 15  # gone once its requests are answered (not held to the 30 s limit)
    operator.load("detector_halo2")
    operator.close()
    spec = halo_part_spec(band, 2, "demo")
    fresh = [EdgeClient(EdgeSettings(server.grpc_address, timeout_s=60)) for server in servers]
    try:
        assert fresh[1].part_parameter(spec, HALO_ADDRESS) == listen[1]
        image = torch.rand(1, 3, SIZE, SIZE)
        with torch.inference_mode():
            expected = detector(image)
        assert _difference(detector, expected, detect_on_bands(fresh, spec, band, image).detections) < 1e-4
    finally:
        for client in fresh:
            client.close()
