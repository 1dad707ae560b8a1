"""The viewer with real widgets under pytest-qt: reading tools, overlays, settings, analysis (local and edge)."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt, QTimer
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from app.settings import AppSettings, SplitMode, load_settings, save_settings
from app.settings_dialog import SettingsDialog
from app.theme import Theme
from inference.config import ModelKind, Runtime, SplitPolicy
from inference.models.findings import Detection, Findings, Mode, ModelRun
from inference.models.weights import data_dir
from viewer.display import render_8bit
from viewer.loader import load_radiograph
from viewer.radiograph import Window

from certificates import make_certificates
from conftest import cuts

CHEST = "dicom/DX_chest_966_fixed.dcm"


@pytest.fixture
def store(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, store):
    window = MainWindow(store)
    window.resize(1200, 800)
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    return window


def open_and_wait(qtbot, window, path) -> None:
    """Open and wait until the study is shown (waiting on the state, not on a signal that may already be
    queued before the wait begins)."""
    window.open_path(path)
    qtbot.waitUntil(lambda: window.current == str(path), timeout=30000)


def test_open_shows_the_radiograph(qtbot, window, shared_cxr):
    path = shared_cxr / "dicom/CR-MONO1-10-chest"
    open_and_wait(qtbot, window, path)
    assert np.array_equal(window.canvas.displayed_image(), render_8bit(load_radiograph(path)))
    assert len(window.study_list.paths) == 1 and window.study_list.rows[window.current].modality == "CR"
    assert window.tag_browser.tree.topLevelItemCount() > 10
    window.tag_browser.search.setText("WindowCenter")
    assert window.tag_browser.visible_rows() == ["WindowCenter"]
    tree = window.tag_browser.tree  # in the panel's width the value keeps most of it (it kept 3–4 characters)
    assert tree.columnWidth(2) < 60 and tree.columnWidth(1) <= 120 and tree.columnWidth(3) >= tree.viewport().width() / 3


def test_bad_file_shows_its_reason(qtbot, window, shared_cxr):
    # waiting on what the window shows: the worker's `finished` may be emitted before a wait on it begins (CI
    # missed it so once, under load)
    window.open_path(shared_cxr / "other/pydicom_test-SR.dcm")
    qtbot.waitUntil(lambda: "no image in this file" in window.statusBar().currentMessage(), timeout=30000)
    assert window.canvas.displayed_image() is None


def _drag(widget, start: QPoint, end: QPoint, button=Qt.MouseButton.RightButton, steps: int = 8) -> None:
    """A real mouse drag (press, moves with the button held, release) delivered to the widget."""
    viewport = widget.viewport()

    def send(kind, point, buttons):
        event = QMouseEvent(kind, QPointF(point), QPointF(viewport.mapToGlobal(point)), button, buttons,
                            Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(viewport, event)

    send(QEvent.Type.MouseButtonPress, start, button)
    for step in range(1, steps + 1):
        point = start + (end - start) * step / steps
        send(QEvent.Type.MouseMove, point, button)
    send(QEvent.Type.MouseButtonRelease, end, Qt.MouseButton.NoButton)


def test_right_drag_changes_window_level(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    before = window.canvas.current_window()
    image_before = window.canvas.displayed_image().copy()
    centre = window.canvas.viewport().rect().center()
    _drag(window.canvas, centre, centre + QPoint(120, 60))
    after = window.canvas.current_window()
    # wider; and darker: this MONOCHROME1 image darkens as its level goes down (its high values are dark)
    assert after.width > before.width and after.center < before.center
    assert not np.array_equal(window.canvas.displayed_image(), image_before)


def test_presets_and_invert(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    canvas = window.canvas
    default = canvas.displayed_image().copy()
    assert window.window_label.text() == "W 4096  L 2048"  # the file's own window, as the status bar says
    canvas.apply_preset("Full range")
    assert canvas.current_window() == Window.from_range(*canvas.radiograph.value_range)
    full = canvas.current_window()
    assert window.window_label.text() == f"W {full.width:.0f}  L {full.center:.0f}"  # as readers say it (was 1187.17)
    canvas.apply_preset("Lung")
    lung = canvas.current_window()
    # this DX's lungs stay grey, the mediastinum goes white (fixed fractions of its range turned 69 % white, the
    # diseased lung among it); Soft tissue the reverse
    assert 0.15 < (canvas.displayed_image() >= 254).mean() < 0.4
    canvas.apply_preset("Soft tissue")
    assert (canvas.displayed_image() >= 254).mean() < 0.05 and (canvas.displayed_image() <= 1).mean() > 0.2
    canvas.apply_preset("Bone")
    assert canvas.current_window() != lung
    canvas.apply_preset("DICOM default")
    assert np.array_equal(canvas.displayed_image(), default)
    window.invert_action.trigger()
    assert np.array_equal(canvas.displayed_image(), 255 - default)


def test_rotate_flip_and_cursor_in_mm(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / CHEST)  # 2128 rows × 2000 columns, 0.16 mm pixels
    canvas = window.canvas
    assert canvas.describe_position(100, 50).endswith("16.0, 8.0 mm")
    rows, cols = canvas.radiograph.rows, canvas.radiograph.columns

    def shown(x, y):
        point = canvas.group.mapToScene(QPointF(x, y))
        return canvas.view.mapSceneToView(point)

    canvas.rotate(90)  # clockwise: the image's top edge becomes its right edge
    shown_rect = canvas.image_item.mapRectToView(canvas.image_item.boundingRect())
    assert (shown_rect.width(), shown_rect.height()) == pytest.approx((rows, cols))
    assert shown(cols / 2, 0).x() > shown(cols / 2, rows).x()
    canvas.rotate(-90)
    canvas.flip(horizontal=True)  # left and right swap, top stays top
    assert shown(10, rows / 2).x() > shown(cols - 10, rows / 2).x()
    assert shown(cols / 2, 10).y() < shown(cols / 2, rows - 10).y()
    # Under the cursor the original pixel is reported, whatever the orientation.
    x, y = canvas.image_position(canvas.group.mapToScene(QPointF(10.5, 20.5)))
    assert (x, y) == pytest.approx((10.5, 20.5))


def test_distance_tool_in_mm(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    canvas = window.canvas
    canvas.start_ruler()
    length, unit = canvas.ruler_length()
    assert unit == "mm" and length == pytest.approx(canvas.radiograph.columns / 3 * 0.16, rel=1e-3)
    assert window.distance_label.text() == f"Distance {length:.1f} mm"  # kept while the line is there
    QTest.keyClick(window, Qt.Key.Key_Delete)
    assert canvas.ruler_length() is None and window.distance_label.text() == ""
    # several lines at once (M replaced the line), each with its length; Delete takes the newest
    for _ in range(3):
        QTest.keyClick(window, Qt.Key.Key_M)
    first, second, third = canvas._rulers
    _, (x2, y2) = canvas._ends(second[0])
    second[0].movePoint(second[0].getHandles()[1], QPointF(x2, y2 + 300), coords="parent")  # dragged: now the last
    assert len(canvas.ruler_lengths()) == 3 and canvas.ruler_length()[0] > length  # (the line dragged last)
    assert window.distance_label.text() == f"Distance {canvas.ruler_length()[0]:.1f} mm"
    assert second[1].textItem.toPlainText() == window.distance_label.text().removeprefix("Distance ")
    QTest.keyClick(window, Qt.Key.Key_Delete)
    assert [r for r, _ in canvas._rulers] == [first[0], third[0]]
    kept = canvas.ruler_lengths()
    window.cursor_label.setText("x 205, y 215 px · value 326")  # a reading of this image
    open_and_wait(qtbot, window, shared_cxr / "dicom/CR-MONO1-10-chest")
    # another image: neither the lines, their length nor the readout of the one before stay
    assert window.distance_label.text() == "" and window.cursor_label.text() == "" and not canvas._rulers
    window.show_study(str(shared_cxr / CHEST))  # back: its lines are there again (they were lost)
    assert [length for length, _ in canvas.ruler_lengths()] == pytest.approx([length for length, _ in kept])
    window.close_current()
    open_and_wait(qtbot, window, shared_cxr / CHEST)  # closed and opened again: a new read, no old lines
    assert canvas.ruler_lengths() == []


def test_the_same_right_drag_darkens_either_polarity(qtbot, window, shared_cxr, tmp_path):
    """MONOCHROME1 (high values dark) and MONOCHROME2: dragging down darkens both (it brightened MONOCHROME1)."""
    for path in (shared_cxr / CHEST, shared_cxr / "raster/txv_nih_00027426_000_512px.png"):
        open_and_wait(qtbot, window, path)
        canvas = window.canvas
        before = float(canvas.displayed_image().mean())
        canvas.view.windowDragged.emit(0.0, 150.0)
        assert float(canvas.displayed_image().mean()) < before - 5, path


def test_confidence_slider_filters_boxes_without_new_analysis(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    findings = Findings(path=window.current, detections=(
        Detection("opacity", 0.9, (100, 100, 400, 400)), Detection("opacity", 0.6, (800, 900, 1200, 1300)),
        Detection("opacity", 0.45, (1300, 300, 1700, 800))), probabilities={"Effusion": 0.7}, models={})
    window.studies.set_findings(window.current, findings)  # the model changes: the canvas follows
    assert window.canvas.visible_box_count() == 3
    window.confidence_slider.setValue(70)
    assert window.canvas.visible_box_count() == 1
    window.confidence_slider.setValue(50)
    assert window.canvas.visible_box_count() == 2
    window.boxes_action.trigger()
    assert window.canvas.visible_box_count() == 0
    # the slider starts at the detector's own threshold: below it there is no box to show
    assert window.confidence_slider.minimum() == 40
    window.confidence_slider.setValue(40)
    assert window.confidence_label.text() == "0.40"
    ran = {ModelKind.DETECTOR: ModelRun("demo", 32)}
    window.studies.set_findings(window.current, replace(findings, models=ran))
    assert window.findings_panel.detections_label.text() == "Opacities: 3 boxes (highest score 0.90)"
    window.studies.set_findings(window.current, replace(findings, detections=(), models=ran))
    assert window.findings_panel.detections_label.text() == "Opacities: none found"  # (said nothing)


def test_settings_round_trip_and_refusals(qtbot, store, tmp_path):
    settings = AppSettings(edge_addresses=("edge.hospital.local:8001", "[::1]:9001"), timeout_s=3.5,
                           split_mode=SplitMode.MANUAL, detector_cut=15, classifier_cut=7, wire="fp16",
                           finding_thresholds={"Effusion": 0.3}, recent_files=("/data/a.dcm",))
    save_settings(settings, store)
    loaded, problem = load_settings(QSettings(store.fileName(), QSettings.Format.IniFormat))
    assert problem is None and loaded == settings
    assert loaded.split == SplitPolicy.manual(detector=15, classifier=7)

    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    for bad, reason in (("edge-without-port", "not host:port"), ("edge:99999", "outside 1..65535")):
        dialog.addresses.setPlainText(bad)
        dialog.accept()
        assert dialog.result_settings is None and reason in dialog.error.text()
    dialog.addresses.setPlainText("10.0.0.5:8001")
    dialog.tls.setChecked(True)
    dialog.ca_file.setText(str(tmp_path / "missing.pem"))
    dialog.accept()
    assert "CA file not found" in dialog.error.text()
    not_pem = tmp_path / "hostname"
    not_pem.write_text("workstation-7\n")
    dialog.ca_file.setText(str(not_pem))
    dialog.accept()
    assert dialog.result_settings is None and "the CA file for the edge is not a PEM certificate" in dialog.error.text()
    dialog.ca_file.setText("")
    dialog.client_certificate_file.setText(str(not_pem))
    dialog.client_key_file.setText(str(not_pem))
    dialog.accept()
    assert dialog.result_settings is None and "not a PEM certificate and its private key" in dialog.error.text()
    dialog.client_certificate_file.setText("")
    dialog.client_key_file.setText("")
    dialog.accept()
    assert dialog.result_settings.edge_addresses == ("10.0.0.5:8001",) and dialog.result_settings.tls
    # the PACS's TLS files: each must exist, the certificate with its key; they reach every node of the list
    # … and are read as PEM at OK, a certificate with its own key
    files = make_certificates(tmp_path)
    certificate = files["client.pem"]
    dialog.pacs_nodes.setPlainText("tls:PACS@pacs.example.org:2762")
    for field, value, reason in ((dialog.pacs_ca_file, tmp_path / "no-ca.pem", "PACS CA file not found"),
                                 (dialog.pacs_ca_file, not_pem, "the CA file for the PACS is not a PEM certificate"),
                                 (dialog.pacs_certificate_file, certificate, "needs its key")):
        field.setText(str(value))
        dialog.accept()
        assert reason in dialog.error.text()
        field.setText("")
    dialog.pacs_certificate_file.setText(str(certificate))
    dialog.pacs_key_file.setText(str(files["server.key"]))  # another certificate's key
    dialog.accept()
    assert "certificate and key for the PACS are not a PEM certificate and its private key" in dialog.error.text()
    dialog.pacs_key_file.setText(str(files["client.key"]))
    dialog.pacs_ca_file.setText(str(files["ca.pem"]))
    dialog.accept()
    [node] = dialog.result_settings.pacs
    assert node.tls and node.tls_files.certificate_file == str(certificate)

    store.setValue("timeout_s", "not a number")
    defaults, problem = load_settings(store)
    assert defaults == AppSettings() and "timeout_s" in problem


class Watchdog:
    """Measures the longest gap between 20 ms ticks of a main-thread timer: how long the UI was blocked."""

    def __init__(self) -> None:
        self.timer = QTimer(interval=20)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.longest_ms = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.longest_ms = max(self.longest_ms, (now - self.last) * 1e3)
        self.last = now

    def __enter__(self):
        self.last = time.perf_counter()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()


def analyse_and_wait(qtbot, window, timeout_ms: int = 120000):
    with qtbot.waitSignal(window.analysis.finished, timeout=timeout_ms) as blocker:
        window.analyze_action.trigger()
    return blocker.args[1]


def test_local_analysis_draws_overlays_without_blocking_the_ui(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / "raster/txv_nih_00027426_000_512px.png")
    window.apply_settings(replace(window.settings, edge_addresses=(), split_mode=SplitMode.LOCAL))
    with Watchdog() as watchdog:
        findings = analyse_and_wait(qtbot, window)
    assert watchdog.longest_ms < 200, f"UI blocked for {watchdog.longest_ms:.0f} ms"
    assert findings.mode is Mode.LOCAL and len(findings.probabilities) == 14
    assert window.banner.isVisible() and window.findings_panel.banner.isVisible()  # demo weights
    assert "local" in window.findings_panel.mode_label.text()
    assert window.findings_panel.mode_label.text().endswith("Ran on: this workstation")  # no cuts: none was made
    assert len(window.findings_panel.rows) == 14
    top = max(findings.probabilities, key=findings.probabilities.get)
    window.findings_panel.rows[top][0].click()
    assert window.canvas.heat_item.isVisible() and window.canvas.heat_item.image.shape == (512, 512)
    assert window.canvas.colour_bar is not None and window.canvas.colour_bar.scene() is not None
    assert window.study_list.status(window.current) == "analysed here"
    open_and_wait(qtbot, window, shared_cxr / "dicom/CR-MONO1-10-chest")  # no heat map: no colour bar either
    assert not window.canvas.heat_item.isVisible() and window.canvas.colour_bar is None


def test_auto_s_first_runtime_choice_is_shown_for_as_long_as_it_runs(qtbot, window, shared_cxr, tmp_path,
                                                                     monkeypatch):
    """Settings pick auto on a machine where it has not chosen yet: the choice runs for minutes beside the
    analyses (which run on PyTorch meanwhile), and the status bar says so until it ends — a study's progress
    line would be replaced by the next at once (seen on an X screen)."""
    import inference.analysis.analyzer as analyzer_module

    data = tmp_path / "data"
    data.mkdir()
    for entry in data_dir().iterdir():  # the demo weights; no runtime chosen on this machine yet
        if entry.name != "local-onnx":
            (data / entry.name).symlink_to(entry)
    monkeypatch.setenv("MEDEDGE_DATA_DIR", str(data))
    release = threading.Event()

    def held(*args):  # the choice, held until the test has looked (then: PyTorch, as if measured fastest)
        assert release.wait(timeout=120)
        return Runtime.TORCH, None
    monkeypatch.setattr(analyzer_module, "choose_runtime", held)
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    window.apply_settings(replace(window.settings, edge_addresses=(), split_mode=SplitMode.LOCAL,
                                  runtime=Runtime.AUTO))
    assert not window.background_label.isVisible()
    findings = analyse_and_wait(qtbot, window)
    assert {run.runtime for run in findings.models.values()} == {Runtime.TORCH}
    assert window.background_label.isVisible()
    assert "Choosing this workstation's runtimes" in window.background_label.text()
    release.set()
    qtbot.waitUntil(lambda: not window.background_label.isVisible(), timeout=30000)


def test_int8_stages_built_in_the_background_are_shown_until_built(qtbot, window, shared_cxr, monkeypatch):
    """A split study at a cut whose calibrated INT8 stages are not built yet queues them for the analyzer's
    background builder (minutes: it runs the model on the site's radiographs) and runs them in PyTorch meanwhile;
    the status bar says so until the builder is done. The queueing itself needs an edge and a site's INT8 build
    (tests/test_runtimes.py): here the analyzer's own queue is handed a cut, and the build is held, then refused
    as a failing gate would."""
    import inference.analysis.analyzer as analyzer_module

    open_and_wait(qtbot, window, shared_cxr / CHEST)
    window.apply_settings(replace(window.settings, edge_addresses=(), split_mode=SplitMode.LOCAL))
    analyse_and_wait(qtbot, window)
    analyzer = window.analysis._analyzer
    assert analyzer is not None and not window.background_label.isVisible()
    release = threading.Event()

    def held(*args):
        assert release.wait(timeout=120)
        raise RuntimeError("the split at this cut fails the fidelity gate")
    monkeypatch.setattr(analyzer_module, "head_session", held)
    analyzer._build_head_in_background(analyzer.classifier, 4)
    analyse_and_wait(qtbot, window)  # a study ends: the window looks for work going on
    qtbot.waitUntil(window.background_label.isVisible, timeout=10000)
    assert "Building the classifier's" in window.background_label.text()
    assert "before cut 4" in window.background_label.text()
    release.set()
    qtbot.waitUntil(lambda: not window.background_label.isVisible(), timeout=30000)
    assert not analyzer.building_heads and analyzer.heads_under_way == []


def test_cancel(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    window.apply_settings(replace(window.settings, edge_addresses=(), split_mode=SplitMode.LOCAL))
    analyse_and_wait(qtbot, window)  # models loaded: the next run is cancelled mid-way
    with qtbot.waitSignal(window.analysis.cancelled, timeout=60000):
        window.analyze_action.trigger()
        qtbot.wait(150)
        window.cancel_action.trigger()
    assert window.study_list.status(window.current) == "cancelled"
    assert not window.progress.isVisible()


def test_edge_analysis_and_fallback_state(qtbot, window, shared_cxr, tmp_path):
    """Against a real edge server (MedEdge's cuts), then with the server stopped: the fallback is shown."""
    from inference.analysis.analyzer import Analyzer
    from inference.config import WireFormat
    from inference.edge.repository import PartRequest, write_repository
    from inference.planning.plan import AUTO_CUTS

    from test_edge import start_server

    models = Analyzer()  # the GUI's default models: P5 at 512 px, demo weights
    write_repository(tmp_path / "repository", [
        PartRequest(models.detector, models.detector_source, AUTO_CUTS["detector"], WireFormat.FP32),
        PartRequest(models.classifier, models.classifier_weights.source, AUTO_CUTS["classifier"], WireFormat.FP32)],
        gpu=False)
    server = start_server(tmp_path / "repository", tmp_path)
    try:
        open_and_wait(qtbot, window, shared_cxr / "raster/txv_nih_00027426_000_512px.png")
        window.apply_settings(replace(window.settings, edge_addresses=(server.grpc_address,),
                                      split_mode=SplitMode.MANUAL, detector_cut=6, classifier_cut=7))
        qtbot.waitUntil(lambda: "connected" in window.edge_label.text(), timeout=20000)
        findings = analyse_and_wait(qtbot, window)
        assert findings.mode is Mode.DISTRIBUTED and cuts(findings) == {"detector": 6, "classifier": 7}
        assert "distributed" in window.findings_panel.mode_label.text()
        assert f"Ran on: this workstation, edge {server.grpc_address}" in window.findings_panel.mode_label.text()
        # Auto: the first study does not wait for the planner (the documented auto cuts); it measures the link
        # and the edge in the background, then the next study runs on its choice among local and the served parts.
        messages: list[str] = []
        window.analysis.progress.connect(lambda path, message: messages.append(message))
        window.apply_settings(replace(window.settings, split_mode=SplitMode.AUTO))
        findings = analyse_and_wait(qtbot, window, timeout_ms=300000)
        assert cuts(findings) == {"detector": 6, "classifier": 7}
        assert all(run.predicted_ms is None for run in findings.models.values())
        qtbot.waitUntil(lambda: any(message.startswith("plan:") for message in messages), timeout=300000)
        findings = analyse_and_wait(qtbot, window, timeout_ms=300000)
        assert all(run.predicted_ms is not None for run in findings.models.values())
        assert cuts(findings)["detector"] in (6, 32) and cuts(findings)["classifier"] in (7, 10)
    finally:
        server.stop()
    findings = analyse_and_wait(qtbot, window)
    assert findings.mode is Mode.LOCAL_FALLBACK
    assert "local fallback" in window.findings_panel.mode_label.text()
    assert "unreachable" in window.findings_panel.mode_label.text()
    window.check_edge()
    qtbot.waitUntil(lambda: "unreachable" in window.edge_label.text(), timeout=20000)


def test_a_stalled_edge_never_blocks_the_ui_and_the_study_completes_locally(qtbot, window, shared_cxr, tmp_path):
    """The link to the edge stalls (a TCP relay holds every byte): the request times out in a worker, the
    window keeps painting (no main-thread gap over 200 ms) and the study completes locally with the reason."""
    from bench.relay import Relay
    from inference.analysis.analyzer import Analyzer
    from inference.config import WireFormat
    from inference.edge.repository import PartRequest, write_repository

    from test_edge import start_server

    models = Analyzer()
    write_repository(tmp_path / "repository", [PartRequest(models.classifier, models.classifier_weights.source, 7,
                                                           WireFormat.FP32)], gpu=False)
    server = start_server(tmp_path / "repository", tmp_path)
    host, port = server.grpc_address.rsplit(":", 1)
    try:
        with Relay((host, int(port))) as relay:
            open_and_wait(qtbot, window, shared_cxr / "raster/txv_nih_00027426_000_512px.png")
            window.apply_settings(replace(window.settings, edge_addresses=(relay.address,), timeout_s=3,
                                          split_mode=SplitMode.MANUAL, detector_cut=32, classifier_cut=7))
            assert analyse_and_wait(qtbot, window).mode is Mode.DISTRIBUTED
            relay.stall()
            with Watchdog() as watchdog:
                findings = analyse_and_wait(qtbot, window)
            assert watchdog.longest_ms < 200, f"UI blocked for {watchdog.longest_ms:.0f} ms"
            assert findings.mode is Mode.LOCAL_FALLBACK and "did not answer" in findings.fallback_reason
            assert "local fallback" in window.findings_panel.mode_label.text()
            relay.resume()
    finally:
        server.stop()


def test_export_png(qtbot, window, shared_cxr, tmp_path, monkeypatch):
    """The view as shown; once analysed with the demo weights, a red band above says so, and which finding the heat
    map is of (the panels do not go with the picture). The status bar says where it went, or that it could not be
    written; the next export dialog, the DICOM SR's too, starts in the folder exported to last."""
    from PySide6.QtGui import QImage
    from PySide6.QtWidgets import QFileDialog

    open_and_wait(qtbot, window, shared_cxr / CHEST)
    assert not window.export_view(str(tmp_path / "no such folder" / "view.png"))
    assert "View not exported" in window.statusBar().currentMessage()
    assert window.export_view(str(tmp_path / "view.png"))
    assert (tmp_path / "view.png").stat().st_size > 10_000
    assert window.statusBar().currentMessage() == f"View exported: {tmp_path / 'view.png'}"
    asked = []  # where each dialog starts; each is then cancelled

    def save_file_name(parent, title, start, kinds):
        asked.append(start)
        return "", ""

    def existing_directory(parent, title, start):
        asked.append(start)
        return ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_file_name)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", existing_directory)
    window.choose_export()
    window.choose_sr_export()
    assert asked == [str(tmp_path / "DX_chest_966_fixed-view.png"), str(tmp_path)]
    plain = QImage(str(tmp_path / "view.png"))
    assert plain.size() == window.canvas.size()
    window.apply_settings(replace(window.settings, edge_addresses=(), split_mode=SplitMode.LOCAL))
    findings = analyse_and_wait(qtbot, window)
    top = max(findings.probabilities, key=findings.probabilities.get)
    window.findings_panel.rows[top][0].click()
    assert window.export_view(str(tmp_path / "analysed.png"))
    marked = QImage(str(tmp_path / "analysed.png"))
    band = marked.height() - window.canvas.height()
    assert marked.width() == window.canvas.width() and band >= 2 * window.fontMetrics().height()
    assert marked.pixelColor(2, 2).name() == "#b00020"  # the demo banner's red
    text = sum(marked.pixelColor(x, y).lightness() > 200 for x in range(400) for y in range(band))
    assert text > 300  # two lines of white text on it


def test_screenshot_command(shared_cxr, tmp_path):
    import subprocess
    import sys

    from PySide6.QtGui import QImage

    from conftest import ROOT

    out = tmp_path / "shot.png"
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--screenshot", str(out),
                           str(shared_cxr / "dicom/CR-MONO1-10-chest")], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 0, done.stderr
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1440, 900)


def test_test_connection_reports_version_models_round_trip_and_bandwidth(qtbot, window, tmp_path):
    from inference.edge.repository import write_repository
    from inference.edge.server import free_ports

    from test_edge import start_server

    write_repository(tmp_path / "repository", [], gpu=False)  # just the link probe
    server = start_server(tmp_path / "repository", tmp_path)
    try:
        dialog = SettingsDialog(AppSettings())
        qtbot.addWidget(dialog)
        down = f"127.0.0.1:{free_ports(1)[0]}"
        dialog.addresses.setPlainText(f"{server.grpc_address}\n{down}")  # each server is tested, not the first only
        with Watchdog() as watchdog:  # waiting on what the dialog shows (a worker's signal may come before a wait)
            dialog.test_connection()
            qtbot.waitUntil(lambda: not dialog.test_result.text().startswith("Testing"), timeout=60000)
        assert watchdog.longest_ms < 200  # the dialog never froze
        first, second = dialog.test_result.text().splitlines()
        assert first.startswith(f"{server.grpc_address}: live: True, ready: True, Triton 2.")
        assert "mededge_probe" in first and "round trip" in first and "Mbit/s" in first
        assert second.startswith(f"{down}: failed: ") and "unreachable" in second
        window.apply_settings(replace(window.settings, edge_addresses=(server.grpc_address, down)))
        qtbot.waitUntil(lambda: window.edge_label.text().startswith("Edges:"), timeout=30000)
        # one of two down is said (the label read "connected" from the first server alone)
        assert window.edge_label.text().startswith(f"Edges: 1 of 2 connected; edge server {down} unreachable")
        assert window.edge_label.toolTip().splitlines()[0].startswith(f"{server.grpc_address}: connected")
    finally:
        server.stop()
    dialog.addresses.setPlainText(server.grpc_address)
    dialog.test_connection()
    qtbot.waitUntil(lambda: not dialog.test_result.text().startswith("Testing"), timeout=60000)
    assert dialog.test_result.text().startswith(f"{server.grpc_address}: failed:")
    assert "unreachable" in dialog.test_result.text()


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_open_and_close_100_studies_without_growth(qtbot, window, tmp_path):
    """Each study is 8 MB of pixels: were closed studies kept, 100 of them would add 800 MB."""
    import gc

    from dicom_factory import dataset, gradient, write

    paths = []
    for index in range(5):
        ds = dataset(gradient(2048, 2048, bits=12, seed=index), bits_stored=12, PatientName=f"Study^{index}")
        paths.append(write(ds, tmp_path / f"study {index}.dcm"))

    def open_close(path) -> None:
        open_and_wait(qtbot, window, path)
        assert window.canvas.displayed_image() is not None
        window.close_current()
        assert window.current is None and not window.study_list.paths and not len(window.studies)
        assert window.canvas.displayed_image() is None and window.windowTitle() == "MedEdge Viewer"

    for path in paths * 2:  # warm-up: caches, the first worker threads
        open_close(path)
    gc.collect()
    before = _rss_mb()
    for round_ in range(100):
        open_close(paths[round_ % len(paths)])
    gc.collect()
    grown = _rss_mb() - before
    assert grown < 80, f"resident memory grew {grown:.0f} MB over 100 studies opened and closed"


def test_closing_one_of_several_studies_shows_the_next(qtbot, window, shared_cxr):
    first, second = shared_cxr / "dicom/CR-MONO1-10-chest", shared_cxr / "raster/txv_nih_00027426_000_512px.png"
    open_and_wait(qtbot, window, first)
    open_and_wait(qtbot, window, second)
    assert window.study_list.paths == [str(first), str(second)]
    window.close_study(str(second))
    assert window.current == str(first) and window.study_list.paths == [str(first)]
    assert np.array_equal(window.canvas.displayed_image(), render_8bit(load_radiograph(first)))


def test_the_status_bar_result_follows_the_study_on_screen(qtbot, window, tmp_path):
    from dicom_factory import dataset, gradient, write

    analysed, unanalysed = (write(dataset(gradient(128, 128, bits=12, seed=seed), bits_stored=12),
                                  tmp_path / f"study {seed}.dcm") for seed in (1, 2))
    open_and_wait(qtbot, window, analysed)
    open_and_wait(qtbot, window, unanalysed)
    findings = Findings(path=str(analysed), detections=(), probabilities={"Effusion": 0.7}, models={},
                        mode=Mode.LOCAL, timing_ms={"total": 1724.0, "local": 1500.0})
    window.analysis.finished.emit(str(analysed), findings)  # as the service ends a study (Analyze all) off screen
    assert window.mode_label.text() == ""
    window.show_study(str(analysed))
    assert window.mode_label.text().startswith("local · Time 1724 ms: ")
    window.show_study(str(unanalysed))
    assert window.mode_label.text() == ""  # not the other study's timing
    window.show_study(str(analysed))
    assert window.mode_label.text().startswith("local · Time 1724 ms: ")
    window.close_current()
    window.close_current()
    assert window.current is None and window.mode_label.text() == "" and window.window_label.text() == ""


def test_a_ct_is_shown_but_not_analysed_and_the_findings_panel_says_why(qtbot, window, shared_cxr, tmp_path):
    """A study of another modality says it is not analysed, and why, as it opens (it said "opened" and invited F5,
    then "failed"); Analyze and Analyze all leave it be. Also after another study was on screen."""
    from pydicom.uid import CTImageStorage, XRayAngiographicImageStorage

    from dicom_factory import dataset, gradient, write

    ct = write(dataset(gradient(128, 128, bits=12), bits_stored=12, modality="CT", sop_class=CTImageStorage),
               tmp_path / "ct.dcm")
    angiogram = write(dataset(gradient(128, 128, bits=12), bits_stored=12, modality="XA",
                              sop_class=XRayAngiographicImageStorage), tmp_path / "xa.dcm")
    open_and_wait(qtbot, window, ct)
    why = "a CT image, not a chest radiograph: the models read CR and DX radiographs only"
    assert window.study_list.status(str(ct)) == f"not analysed: {why}"
    assert window.findings_panel.mode_label.text() == f"Not analysed: {why}"
    window.analyze_action.trigger()
    assert not window.analysis.busy and window.statusBar().currentMessage() == f"Not analysed: {why}"
    window.analyze_all_action.trigger()
    assert window.studies.batch is None and "no study open is a chest radiograph" in window.statusBar().currentMessage()
    open_and_wait(qtbot, window, angiogram)
    assert window.study_list.status(str(angiogram)).startswith("not analysed: an XA image")  # (was "a XA")
    open_and_wait(qtbot, window, shared_cxr / "dicom/CR-MONO1-10-chest")
    assert window.findings_panel.mode_label.text().startswith("No analysis yet")
    window.show_study(str(ct))
    assert window.findings_panel.mode_label.text() == f"Not analysed: {why}"


def test_the_settings_dialog_fits_the_screen_with_ok_in_sight(qtbot):
    """Its fields are taller than a 1366 × 768 screen: they scroll, and OK, Cancel and the reason a value is refused
    stay on the screen (the offscreen platform's is 800 px high)."""
    from PySide6.QtWidgets import QDialogButtonBox

    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    screen = dialog.screen().availableGeometry()
    assert dialog.frameGeometry().height() <= min(screen.height(), 768)
    dialog.test_result.setText("Cannot test: CA file not found: /nonexistent/ca.pem")  # a test's outcome…
    dialog.ca_file.setText("/etc/ssl/hospital-ca.pem")  # …goes when a value it ran with changes
    assert dialog.test_result.text() == ""
    dialog.pacs_result.setText("PACS: no answer")
    dialog.ae_title.setText("READER2")
    assert dialog.pacs_result.text() == ""
    ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
    bottom = ok.mapTo(dialog, ok.rect().bottomRight())
    assert ok.isVisible() and dialog.rect().contains(bottom)
    # Test connection gives up the focus while it runs: to the field below it, not to the PACS's button at the
    # bottom (the fields scrolled away from its result)
    dialog.test_button.setFocus()
    dialog.test_button.setEnabled(False)
    assert dialog.focusWidget() is dialog.split
    dialog.test_button.setEnabled(True)
    dialog.addresses.setPlainText("edge-without-port")
    dialog.accept()
    assert dialog.error.isVisible() and dialog.rect().contains(dialog.error.mapTo(dialog, dialog.error.rect().center()))


def test_stepping_through_and_closing_follow_the_studies_list(qtbot, window, shared_cxr):
    """PgDown/PgUp go through the images in the Studies list's order (patient by patient); closing one shows the
    next below it (it showed the first added); a patient row chosen stays chosen (the arrow keys jumped and stuck)."""
    from PySide6.QtWidgets import QTreeWidgetItemIterator

    for name in (CHEST, "raster/txv_nih_00027426_000_512px.png", "dicom/CR-MONO1-10-chest"):
        open_and_wait(qtbot, window, shared_cxr / name)
    order = window.study_list.in_order_shown()
    assert sorted(order) == sorted(window.study_list.paths) and len(order) == 3
    window.show_study(order[0])
    window.study_list.setFocus()
    for expected in (order[1], order[2], order[2]):  # none past the end
        QTest.keyClick(window.study_list, Qt.Key.Key_PageDown)
        assert window.current == expected
    window.canvas.setFocus()
    QTest.keyClick(window.canvas, Qt.Key.Key_PageUp)
    assert window.current == order[1]
    # PgDown elsewhere pages its own list: the image stays
    window.tag_browser.tree.setFocus()
    QTest.keyClick(window.tag_browser.tree, Qt.Key.Key_PageDown)
    assert window.current == order[1]

    tree = window.study_list
    tree.setFocus()  # (clicked into, as a reader does)
    patient = QTreeWidgetItemIterator(tree).value()
    tree.setCurrentItem(patient)
    assert tree.currentItem() is patient and window.current == order[0]  # its image shown, the row kept
    QTest.keyClick(tree, Qt.Key.Key_Down)
    assert tree.currentItem() is patient.child(0)  # its study: the next row, not one further down
    QTest.keyClick(tree, Qt.Key.Key_PageDown)  # another image: its row is selected (the study row stayed)
    assert window.current == order[1] and tree.currentItem().data(0, Qt.ItemDataRole.UserRole) == order[1]

    window.close_current()
    assert window.current == order[2]  # the next below it
    window.close_current()
    assert window.current == order[0]  # the last closed: the one above


def test_opening_a_study_again_keeps_its_analysis(qtbot, window, shared_cxr):
    path = shared_cxr / "dicom/CR-MONO1-10-chest"
    open_and_wait(qtbot, window, path)
    findings = Findings(path=str(path), detections=(), probabilities={"Effusion": 0.7}, models={})
    window.studies.set_findings(str(path), findings)
    window.canvas.rotate(90)
    batch = window.open_paths([str(path)])  # Open recent, or the same file dropped again
    qtbot.waitUntil(lambda: batch.done, timeout=30_000)
    assert window.studies.findings(str(path)) is findings and window.findings_panel.rows
    assert window.canvas.state.rotation == 90  # as the reader left it


def test_the_findings_scroll_on_a_small_screen(qtbot, window, shared_cxr):
    """At 1024 × 600 the fourteen findings do not fit the panel's height: they scroll (the last rows were painted
    under the tabs and over the status bar, squeezed)."""
    from inference.models.classifier import CHESTXRAY14

    open_and_wait(qtbot, window, shared_cxr / CHEST)
    findings = Findings(path=window.current, detections=(), models={},
                        probabilities={name: 0.05 * (i + 1) for i, name in enumerate(CHESTXRAY14)})
    window.studies.set_findings(window.current, findings)
    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.height() <= 600)
    panel, scroll = window.findings_panel, window.findings_scroll
    qtbot.waitUntil(lambda: scroll.verticalScrollBar().maximum() > 0)
    assert panel.height() >= panel.minimumSizeHint().height()  # not squeezed: the rows keep their size
    last = panel.rows[min(findings.probabilities, key=findings.probabilities.get)][0]
    scroll.ensureWidgetVisible(last)
    top_left = last.mapTo(scroll.viewport(), last.rect().topLeft())
    assert scroll.viewport().rect().contains(top_left)  # the last finding is reached by scrolling


def test_the_light_appearance_applies_at_ok(qtbot, window, monkeypatch):
    """Settings → Appearance → Light → OK: the window turns light at once (the combo box handed over plain text,
    not a Theme, and the dark palette was applied again until a restart)."""
    from PySide6.QtGui import QPalette

    from app.settings_dialog import SettingsDialog

    def choose_light(dialog: SettingsDialog) -> int:
        dialog.theme.setCurrentIndex(dialog.theme.findData("light"))
        dialog.accept()
        return 1

    monkeypatch.setattr(SettingsDialog, "exec", choose_light)
    window.open_settings()
    assert window.settings.theme is Theme.LIGHT
    assert QApplication.instance().palette().color(QPalette.ColorRole.Base).lightness() > 200
    window.apply_settings(replace(window.settings, theme=Theme.DARK))  # (the other tests expect the dark one)
    assert QApplication.instance().palette().color(QPalette.ColorRole.Base).lightness() < 60


def test_the_image_says_who_what_and_which_way(qtbot, window, shared_cxr):
    """Corner text (patient, study, window and zoom, what the reader changed) and the patient's directions at the
    edges from Patient Orientation, following rotation and flips (a flip left no trace on screen)."""
    open_and_wait(qtbot, window, shared_cxr / CHEST)  # Patient Orientation L\F: the patient's left on the right
    canvas = window.canvas

    def shown(place: str) -> str:
        label = canvas.text[place]
        return label.text() if label.isVisible() else ""

    assert (shown("left"), shown("right"), shown("top"), shown("bottom")) == ("R", "L", "H", "F")
    info = canvas.radiograph.info
    assert info.patient_id in shown("top-left") and "DX" in shown("top-right")
    assert shown("bottom-left").startswith("W 4096  L 2048\nZoom ") and shown("bottom-right") == ""
    canvas.flip(horizontal=True)
    assert (shown("left"), shown("right")) == ("L", "R") and shown("bottom-right") == "Mirrored"
    canvas.flip(horizontal=True)
    canvas.rotate(90)  # clockwise: the head is on the right now, the patient's right at the top
    assert (shown("left"), shown("right"), shown("top"), shown("bottom")) == ("F", "H", "R", "L")
    QTest.keyClick(window, Qt.Key.Key_H)  # left–right as seen, rotated or not (it turned the image upside down)
    assert (shown("left"), shown("right"), shown("top"), shown("bottom")) == ("H", "F", "R", "L")
    assert shown("bottom-right") == "Mirrored\nRotated 90°"
    QTest.keyClick(window, Qt.Key.Key_H)
    # every rotation and flip: the letter at an edge is the direction the image's axes point to on screen there
    rows, cols = canvas.radiograph.rows, canvas.radiograph.columns
    for turns, flips in itertools.product(range(4), ((), (True,), (False,), (True, False))):
        canvas.show_radiograph(canvas.radiograph)  # a fresh display state
        for horizontal in flips:
            canvas.flip(horizontal=horizontal)
        canvas.rotate(90 * turns)

        def edge(dx, dy):
            a, b = (canvas.group.mapToScene(QPointF(cols / 2 + k * dx, rows / 2 + k * dy)) for k in (0, 100))
            x, y = b.x() - a.x(), b.y() - a.y()
            return ("right" if x > 0 else "left") if abs(x) > abs(y) else ("bottom" if y > 0 else "top")

        assert (shown(edge(1, 0)), shown(edge(0, 1)), shown(edge(-1, 0))) == ("L", "F", "R"), (turns, flips)
    canvas.show_radiograph(canvas.radiograph)
    canvas.rotate(90)
    # the labels sit where they say, inside the canvas
    assert canvas.text["right"].geometry().center().x() > canvas.width() / 2 > canvas.text["left"].geometry().x()
    QTest.keyClick(window, Qt.Key.Key_T)  # off, and on again
    assert not any(label.isVisible() for label in canvas.text.values())
    QTest.keyClick(window, Qt.Key.Key_T)
    assert shown("right") == "H"
    # the patient's text comes back after an export's picture (which goes without it: the test below)
    canvas.grab_without_identity()
    assert info.patient_id in shown("top-left")
    canvas.radiograph = replace(canvas.radiograph, info=replace(info, patient_name="<b>Doe</b>^<i>Jane</i>"))
    canvas.set_text_visible(True)
    assert shown("top-left").startswith("<b>Doe</b>, <i>Jane</i>")  # a header's markup is text, not formatting


def test_the_exported_view_carries_no_patient_text(qtbot, window, shared_cxr, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QWidget

    open_and_wait(qtbot, window, shared_cxr / CHEST)
    seen = {}
    grab = QWidget.grab

    def spy(widget, *args):
        seen[widget] = {place: label.isVisible() for place, label in window.canvas.text.items()}
        return grab(widget, *args)

    monkeypatch.setattr(QWidget, "grab", spy)
    assert window.export_view(str(tmp_path / "view.png"))
    visible = seen[window.canvas]
    assert not visible["top-left"] and not visible["top-right"] and visible["right"]


def test_the_files_other_windows_are_offered(qtbot, window, tmp_path):
    """A DX with three windows (NORMAL, HARDER, SOFTER): W steps through them, the menu lists them; one that does
    not fit the pixel values is left out (only the first was ever used)."""
    from dicom_factory import dataset, gradient, write

    path = write(dataset(gradient(128, 128, bits=12), bits_stored=12, WindowCenter=[2048, 1800, 2300, 90000],
                         WindowWidth=[4096, 2000, 3000, 10], WindowCenterWidthExplanation=["NORMAL", "HARDER",
                                                                                          "SOFTER", "BROKEN"]),
                 tmp_path / "three windows.dcm")
    open_and_wait(qtbot, window, path)
    radiograph = window.canvas.radiograph
    assert radiograph.other_windows == (("HARDER", Window(1800, 2000)), ("SOFTER", Window(2300, 3000)))
    assert [a.text() for a in window.file_windows_menu.actions()] == [
        "NORMAL (W 4096  L 2048)", "HARDER (W 2000  L 1800)", "SOFTER (W 3000  L 2300)"]
    for expected in (Window(1800, 2000), Window(2300, 3000), Window(2048, 4096)):
        QTest.keyClick(window, Qt.Key.Key_W)
        assert window.canvas.current_window() == expected
    assert window.canvas.state.window is None  # back to the file's own VOI


def test_open_recent_lists_the_folder_that_was_opened(qtbot, window, shared_cxr, tmp_path):
    """A folder opened is one entry of Open recent, which opens it again (its ten files filled the list)."""
    import shutil

    folder = tmp_path / "ward 3"
    folder.mkdir()
    for name in ("dicom/CR-MONO1-10-chest", "raster/txv_nih_00027426_000_512px.png"):
        shutil.copy(shared_cxr / name, folder)
    batch = window.open_paths([str(folder)])
    qtbot.waitUntil(lambda: batch.done, timeout=30_000)
    assert window.settings.recent_files[0] == str(folder) and len(window.study_list.paths) == 2
    assert not any(p.startswith(str(folder) + "/") for p in window.settings.recent_files)
    window.close_current()
    window.close_current()
    [entry] = [a for a in window.recent_menu.actions() if a.text() == str(folder)]
    entry.trigger()
    qtbot.waitUntil(lambda: len(window.study_list.paths) == 2, timeout=30_000)
    before = window.settings.recent_files
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4\n")  # refused: not listed
    batch = window.open_paths([str(tmp_path / "report.pdf")])
    qtbot.waitUntil(lambda: batch.done, timeout=30_000)
    window._open_retrieved([str(shared_cxr / CHEST)], analyse=False)  # a PACS retrieve's cache files: not listed
    qtbot.waitUntil(lambda: len(window.study_list.paths) == 3, timeout=30_000)
    qtbot.wait(100)
    assert window.settings.recent_files == before


def test_a_zoomed_image_is_drawn_smooth(qtbot, window, shared_cxr):
    """Zoomed in tenfold, a row of the screen runs through many grey levels (bilinear), not a few blocks."""
    from PySide6.QtCore import QRectF

    open_and_wait(qtbot, window, shared_cxr / "raster/txv_nih_00027426_000_512px.png")
    canvas = window.canvas
    canvas.view.setRange(QRectF(200, 200, 40, 40), padding=0)
    qtbot.wait(50)
    picture = canvas.grab().toImage()
    y = picture.height() // 2
    levels = {picture.pixelColor(x, y).red() for x in range(picture.width() // 4, 3 * picture.width() // 4)}
    assert len(levels) > 40  # nearest-neighbour drawing gave about one level per image pixel crossed (~20)


def test_the_corner_text_keeps_to_its_corner(qtbot, window, shared_cxr):
    """A long name and description in a 1024 × 600 window: each corner's lines are cut to its half (they ran into
    each other); beside a heat map's colour bar the right-hand corners stay on the image's side."""
    import numpy as np

    open_and_wait(qtbot, window, shared_cxr / CHEST)
    canvas = window.canvas
    info = canvas.radiograph.info
    canvas.radiograph = replace(canvas.radiograph, info=replace(
        info, patient_name="Vandermeulen-Oppenheimer-Hohenzollern^Maximiliane Antonia", patient_id="ABCDEFGHIJKLMNOPQR",
        study_description="CHEST PA AND LATERAL WITH ADDITIONAL OBLIQUE VIEWS", study_date="20240115"))
    window.resize(1024, 600)
    qtbot.waitUntil(lambda: window.width() <= 1024)
    canvas.set_text_visible(True)
    left, right = canvas.text["top-left"].geometry(), canvas.text["top-right"].geometry()
    assert left.right() < right.left() and "…" in canvas.text["top-left"].text()
    canvas.show_heat_map(np.random.default_rng(1).random((64, 64)).astype(np.float32))
    qtbot.wait(50)
    view = canvas.mapFromScene(canvas.view.sceneBoundingRect()).boundingRect()
    assert canvas.text["top-right"].geometry().right() <= view.right()
    assert canvas.text["bottom-right"].geometry().right() <= view.right() < canvas.width() - 20  # (the bar's room)


def test_copy_view_puts_the_view_without_the_patient_on_the_clipboard(qtbot, window, shared_cxr):
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    QApplication.clipboard().clear()
    window.canvas.setFocus()
    QTest.keyClick(window.canvas, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    copied = QApplication.clipboard().pixmap()
    assert not copied.isNull() and copied.width() == window.canvas.width()
    assert "without the patient" in window.statusBar().currentMessage()
    assert window.canvas.text["top-left"].isVisible()  # on screen, the patient's text is back


def test_the_cardiothoracic_ratio(qtbot, window, shared_cxr):
    """C puts the heart's and the thorax's widths on the image; their ratio follows the lines, is kept with the
    image while another is shown, and C again removes it."""
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    canvas = window.canvas
    window.canvas.setFocus()
    QTest.keyClick(window, Qt.Key.Key_C)
    ratio, heart, thorax, unit = canvas.cardiothoracic_ratio()
    cols = canvas.radiograph.columns
    assert unit == "mm" and heart == pytest.approx(0.3 * cols * 0.16) and thorax == pytest.approx(0.7 * cols * 0.16)
    assert ratio == pytest.approx(0.3 / 0.7) and window.distance_label.text().startswith("CTR 0.43 (heart ")
    canvas.rotate(90)  # turned after it was drawn: the same widths (they were measured along the other axis)
    assert canvas.cardiothoracic_ratio()[:3] == pytest.approx((ratio, heart, thorax))
    canvas.rotate(-90)
    heart_line = canvas._ratio[0]
    (x1, y1), (x2, y2) = canvas._ends(heart_line)
    heart_line.movePoint(heart_line.getHandles()[1], QPointF(x2 + 0.1 * cols, y2 + 40), coords="parent")
    assert canvas.cardiothoracic_ratio()[0] == pytest.approx(0.4 / 0.7, rel=1e-3)  # across the image only
    assert canvas._ratio[2].textItem.toPlainText() == "CTR 0.57"
    open_and_wait(qtbot, window, shared_cxr / "dicom/CR-MONO1-10-chest")
    assert canvas.cardiothoracic_ratio() is None and window.distance_label.text() == ""
    window.show_study(str(shared_cxr / CHEST))
    assert canvas.cardiothoracic_ratio()[0] == pytest.approx(0.4 / 0.7, rel=1e-3)
    QTest.keyClick(window, Qt.Key.Key_C)
    assert canvas.cardiothoracic_ratio() is None and window.distance_label.text() == ""


def test_the_reading_is_saved_as_a_presentation_state(qtbot, window, shared_cxr, tmp_path):
    """File → Save the reading (GSPS): the window, polarity, rotation and the measurements on screen, for a PACS
    viewer to show the radiograph as it was read."""
    import pydicom

    open_and_wait(qtbot, window, shared_cxr / CHEST)
    canvas = window.canvas
    canvas.rotate(90)
    canvas.start_ruler()
    canvas.toggle_ratio()  # (placed across the screen: along the image's rows)
    canvas.apply_preset("Lung")
    path = window.export_presentation_state(str(tmp_path))
    assert path is not None and "Presentation state (GSPS) written" in window.statusBar().currentMessage()
    state = pydicom.dcmread(path)
    assert (int(state.ImageRotation), state.ImageHorizontalFlip, state.PresentationLUTShape) == (90, "N", "INVERSE")
    window_shown = canvas.current_window()
    [voi] = state.SoftcopyVOILUTSequence
    assert float(voi.WindowWidth) == pytest.approx(window_shown.width, rel=1e-4)
    [annotation] = state.GraphicAnnotationSequence
    texts = [t.UnformattedTextValue for t in annotation.TextObjectSequence]
    assert len(annotation.GraphicObjectSequence) == 3 and texts[0].endswith(" mm") and texts[1].startswith("CTR 0.43")
    assert str(state.PatientID) == str(canvas.radiograph.header.PatientID)  # filed with the patient's study
    window.update_sr_action()
    assert window.gsps_action.isEnabled()
    open_and_wait(qtbot, window, shared_cxr / "raster/txv_nih_00027426_000_512px.png")
    window.update_sr_action()  # (as the File menu opens) a PNG has no study to file a reading in
    assert not window.gsps_action.isEnabled() and not window.send_reading_action.isEnabled()


def test_the_ratio_needs_its_lines_in_place_and_delete_takes_the_last_moved(qtbot, window, shared_cxr):
    """A thorax line narrower than the heart's gives no ratio (it gave "CTR 685.56" and saved it); a line's end
    dragged off the image stays on its edge; Delete removes the measurement moved last, the ratio too."""
    open_and_wait(qtbot, window, shared_cxr / CHEST)
    canvas = window.canvas
    canvas.toggle_ratio()
    canvas.start_ruler()
    heart, thorax, label = canvas._ratio
    (x1, y1), _ = canvas._ends(thorax)
    thorax.movePoint(thorax.getHandles()[1], QPointF(x1 + 1, y1 - 50), coords="parent")
    ratio, _, width, _ = canvas.cardiothoracic_ratio()
    assert ratio is None and label.textItem.toPlainText() == "CTR —"
    assert "the thorax's line must be the wider" in window.distance_label.text()
    assert not any(text.startswith("CTR") for *_, text in canvas.measurement_lines())  # nothing to save
    thorax.movePoint(thorax.getHandles()[1], QPointF(-500, y1), coords="parent")  # past the image's left edge
    (a, _), (b, _) = canvas._ends(thorax)
    assert min(a, b) == 0  # the end stopped at the edge
    width = canvas.cardiothoracic_ratio()[2]
    thorax.setPos(thorax.pos() + QPointF(200, 0))  # the whole line dragged right: it keeps its length
    assert canvas.cardiothoracic_ratio()[2] == pytest.approx(width)  # (an end came back from a stale record)
    thorax.setPos(thorax.pos() + QPointF(-5000, 0))  # and dragged off the left: put back inside, as it is
    (a, _), (b, _) = canvas._ends(thorax)
    assert min(a, b) == pytest.approx(0) and canvas.cardiothoracic_ratio()[2] == pytest.approx(width)
    QTest.keyClick(window, Qt.Key.Key_Delete)  # the thorax line was moved last: the ratio goes, the line stays
    assert canvas.cardiothoracic_ratio() is None and len(canvas.ruler_lengths()) == 1
    assert window.distance_label.text().startswith("Distance ")  # the line still there is said
    # turned sideways, the chest's width runs along the image's rows: the ratio is measured across the screen
    canvas.rotate(90)
    canvas.toggle_ratio()
    ratio, heart_mm, thorax_mm, _ = canvas.cardiothoracic_ratio()
    rows = canvas.radiograph.rows
    assert (heart_mm, thorax_mm) == pytest.approx((0.3 * rows * 0.16, 0.7 * rows * 0.16)) and ratio == pytest.approx(
        0.3 / 0.7)
