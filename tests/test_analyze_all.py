"""AI → Analyze all: every study in the list as one pipelined series off the UI thread, with progress and
per-study status."""

from __future__ import annotations

import time
from dataclasses import replace

from PySide6.QtWidgets import QToolBar

from app.settings import SplitMode
from inference.analysis.analyzer import Analyzer

from test_main_window import Watchdog, store, window  # noqa: F401  (pytest fixtures)
from test_worklist import _png

REAL = "raster/txv_nih_00027426_000_512px.png"


def _open_local(qtbot, window, paths) -> None:
    # Waiting on each loader's signal can miss it when a tiny file loads before the wait starts: wait for the rows.
    window.open_paths([str(p) for p in paths])
    qtbot.waitUntil(lambda: set(window.study_list.paths) == {str(p) for p in paths}, timeout=30_000)
    window.apply_settings(replace(window.settings, edge_addresses=(), split_mode=SplitMode.LOCAL))


def _statuses(window) -> list[str]:
    """In list order (rows appear as their files finish loading, so not necessarily in the order opened)."""
    return [window.study_list.status(p) for p in window.study_list.paths]


def test_analyze_all_goes_through_every_study(qtbot, window, shared_cxr, tmp_path, monkeypatch):
    paths = [shared_cxr / REAL, _png(tmp_path / "a.png", 1), _png(tmp_path / "b.png", 2)]
    _open_local(qtbot, window, paths)
    failing = str(paths[1])
    begin = Analyzer._begin

    def begin_or_fail(self, radiograph, *args):  # one study's analysis fails: the series goes on
        if radiograph.path == failing:
            raise RuntimeError("edge and local both unavailable")
        return begin(self, radiograph, *args)

    monkeypatch.setattr(Analyzer, "_begin", begin_or_fail)
    assert window.analyze_all_action in window.findChild(QToolBar, "Tools").actions()
    with Watchdog() as watchdog:
        window.analyze_all_action.trigger()
        assert _statuses(window) == ["queued", "queued", "queued"]
        assert window.progress.isVisible() and window.progress.maximum() == 3
        # as a lane of the worklist takes them, saying which
        qtbot.waitUntil(lambda: "analysing on workstation" in _statuses(window), timeout=60_000)
        qtbot.waitUntil(lambda: "Analyze all finished" in window.statusBar().currentMessage(), timeout=180_000)
    assert watchdog.longest_ms < 500, f"UI blocked for {watchdog.longest_ms:.0f} ms"
    assert {p: window.study_list.status(p) for p in window.study_list.paths} == {
        str(paths[0]): "analysed here", failing: "failed: edge and local both unavailable", str(paths[2]): "analysed here"}
    assert {str(p) for p in paths if window.studies.findings(str(p))} == {str(paths[0]), str(paths[2])}
    assert "2 of 3 analysed, 1 failed" in window.statusBar().currentMessage()
    assert not window.progress.isVisible() and window.progress.maximum() == 0  # back to the busy indicator
    # Single-study Analyze still works as before.
    with qtbot.waitSignal(window.analysis.finished, timeout=120_000):
        window.analyze_action.trigger()
    assert window.study_list.status(window.current) == "analysed here"
    # Analyze all again: only the study without findings (the others keep theirs)
    window.analyze_all_action.trigger()
    assert window.progress.maximum() == 1 and window.study_list.status(failing) == "queued"
    qtbot.waitUntil(lambda: "Analyze all finished: 0 of 1 analysed, 1 failed" in window.statusBar().currentMessage(),
                    timeout=60_000)
    assert window.study_list.status(str(paths[2])) == "analysed here"


def test_cancel_stops_the_rest(qtbot, window, shared_cxr, tmp_path, monkeypatch):
    paths = [_png(tmp_path / f"{i}.png", i) for i in range(3)]
    _open_local(qtbot, window, paths)
    begin = Analyzer._begin

    def later_ones_slow(self, radiograph, *args):  # the first result comes while the others still run
        if radiograph.path != str(paths[0]):
            time.sleep(2)
        return begin(self, radiograph, *args)

    monkeypatch.setattr(Analyzer, "_begin", later_ones_slow)
    window.analyze_all_action.trigger()
    qtbot.waitUntil(lambda: _statuses(window)[0].startswith("analysed"), timeout=180_000)
    window.cancel_action.trigger()  # Esc
    qtbot.waitUntil(lambda: "Analyze all stopped" in window.statusBar().currentMessage(), timeout=60_000)
    assert _statuses(window) == ["analysed here", "cancelled", "cancelled"]
    assert not window.progress.isVisible() and not window.analysis.busy
