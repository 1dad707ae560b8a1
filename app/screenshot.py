"""`--screenshot OUT.png [FILES]`: open, analyse with the current settings, wait, render at 1440×900, save."""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import QEventLoop

ANALYSIS_TIMEOUT_S = 600


def _wait(app, condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    return True


def take_screenshot(app, window, paths: list[str], out: str) -> int:
    window.resize(1440, 900)
    batch = window.open_paths(paths) if paths else None
    if batch is not None and not _wait(app, lambda: batch.done, 120):
        print("mededge --screenshot: opening the files timed out", file=sys.stderr)
        return 1
    if window.current is not None:
        done = []
        for signal in (window.analysis.finished, window.analysis.failed, window.analysis.cancelled):
            signal.connect(lambda *args: done.append(args))
        window.analyze_current()
        if not _wait(app, lambda: bool(done), ANALYSIS_TIMEOUT_S):
            print("mededge --screenshot: the analysis did not finish in time", file=sys.stderr)
            return 1
        findings = window.studies.findings(window.current)
        if findings is not None and findings.probabilities:
            top = max(findings.probabilities, key=findings.probabilities.get)
            window.findings_panel.rows[top][0].click()  # show the most probable finding's heat map
    for _ in range(3):  # let the heat map, panels and status bar lay out before grabbing
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    image = window.grab()
    if not image.save(out, "PNG"):
        print(f"mededge --screenshot: cannot write {out}", file=sys.stderr)
        return 1
    return 0
