"""The findings panel: demo banner, how the result was made, and the 14 probabilities as sorted bars."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDoubleSpinBox, QGridLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from inference.config import ModelKind
from inference.models.findings import WORKSTATION, Findings, Mode, ModelRun

DEMO_BANNER = "Demo weights — untrained, not for diagnosis"
DEMO_COLOUR = "#b00020"  # the banner's, wherever a demo result is shown
MODE_TEXT = {Mode.LOCAL: "local (this workstation)", Mode.DISTRIBUTED: "distributed (workstation + edge)",
             Mode.EDGE: "edge (full offload)", Mode.LOCAL_FALLBACK: "local fallback"}


class FindingsPanel(QWidget):
    findingSelected = Signal(str)          # the finding whose heat map to show ("" = none)
    thresholdChanged = Signal(str, float)  # finding, new threshold

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        self.banner = QLabel(DEMO_BANNER)
        self.banner.setStyleSheet(f"background:{DEMO_COLOUR};color:white;font-weight:bold;padding:6px;")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setWordWrap(True)
        self.banner.setVisible(False)
        self.mode_label = QLabel("No analysis yet (F5 analyses the open study)")
        self.mode_label.setWordWrap(True)
        self.timing_label = QLabel("")
        self.timing_label.setWordWrap(True)
        self.detections_label = QLabel("")  # the detector's outcome in words: no box is a result too
        self.detections_label.setWordWrap(True)
        self.grid = QGridLayout()
        for widget in (self.banner, self.detections_label, self.mode_label, self.timing_label):
            layout.addWidget(widget)
        layout.addLayout(self.grid)
        layout.addStretch(1)
        self.findings: Findings | None = None
        self.thresholds: dict[str, float] = {}
        self.rows: dict[str, tuple[QPushButton, QProgressBar, QDoubleSpinBox]] = {}

    def show_demo_banner(self, demo: bool) -> None:
        self.banner.setVisible(demo)

    def show_findings(self, findings: Findings | None, failure: str = "") -> None:
        """`findings` of the study on screen; without any, why its last analysis failed (`failure`), if it did."""
        self.findings = findings
        while self.grid.count():
            item = self.grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.rows = {}
        if findings is None:
            self.mode_label.setText(f"Not analysed: {failure}" if failure else
                                    "No analysis yet (F5 analyses the open study)")
            self.timing_label.setText("")
            self.detections_label.setText("")
            self.mode_label.setToolTip("")
            return
        self.show_demo_banner(findings.demo_weights)
        text = f"Mode: {MODE_TEXT[findings.mode]}"
        if findings.fallback_reason:
            text += f" — {findings.fallback_reason}"
        runs = findings.models.items()
        cuts = ", ".join(f"{kind.value} cut {run.cut}" + (f" ({run.wire.value})" if run.wire else "")
                         + (_bands_text(run) if run.bands else "") for kind, run in runs)
        runtimes = ", ".join(f"{kind.value} {run.runtime.value}" for kind, run in runs)
        where = ", ".join("this workstation" if place == WORKSTATION else f"edge {place}" for place in findings.ran_on)
        # where the cuts were matters only for a split; the runtimes are for IT staff (in the tooltip)
        split = f"\nSplit: {cuts}" if findings.mode is Mode.DISTRIBUTED else ""
        self.mode_label.setText(f"{text}\nRan on: {where}{split}")
        self.mode_label.setToolTip(f"Split: {cuts}" + (f"\nLocal runtime: {runtimes}" if runtimes else ""))
        self.timing_label.setText(timing_text(findings.timing_ms))
        self.detections_label.setText(detections_text(findings))
        ordered = sorted(findings.probabilities.items(), key=lambda item: -item[1])
        for row, (name, probability) in enumerate(ordered):
            button = QPushButton(name.replace("_", " "))
            button.setCheckable(True)
            button.setFlat(True)
            button.setToolTip("show this finding's heat map")
            button.clicked.connect(lambda checked, n=name: self._select(n, checked))
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(round(probability * 1000))
            bar.setFormat(f"{probability:.3f}")
            threshold = QDoubleSpinBox()
            threshold.setRange(0.0, 1.0)
            threshold.setSingleStep(0.05)
            threshold.setDecimals(2)
            threshold.setValue(self.thresholds.get(name, 0.5))
            threshold.setToolTip("positive at or above this probability")
            threshold.valueChanged.connect(lambda value, n=name: self._set_threshold(n, value))
            for column, widget in enumerate((button, bar, threshold)):
                self.grid.addWidget(widget, row, column)
            self.rows[name] = (button, bar, threshold)
            self._highlight(name)

    def is_positive(self, name: str) -> bool:
        return self.findings.probabilities[name] >= self.thresholds.get(name, 0.5)

    def _set_threshold(self, name: str, value: float) -> None:
        self.thresholds[name] = value
        self._highlight(name)
        self.thresholdChanged.emit(name, value)

    def _highlight(self, name: str) -> None:
        button, bar, _ = self.rows[name]
        positive = self.is_positive(name)
        colour = "#d32f2f" if positive else "#607d8b"
        bar.setStyleSheet(f"QProgressBar::chunk {{ background: {colour}; }}")
        font = button.font()
        font.setBold(positive)
        button.setFont(font)

    def _select(self, name: str, checked: bool) -> None:
        for other, (button, _, _) in self.rows.items():
            if other != name:
                button.setChecked(False)
        self.findingSelected.emit(name if checked else "")


def timing_text(timing: dict[str, float]) -> str:
    phases = ("preprocess", "local", "transfer", "edge", *(("queued",) if timing.get("queued") else ()), "postprocess")
    parts = [f"{k} {timing.get(k, 0):.0f}" for k in phases]
    return f"Time {timing.get('total', 0):.0f} ms: " + " · ".join(parts)


def detections_text(findings: Findings) -> str:
    """What the opacity detector found, in one line: "no opacity found" says the detector ran."""
    if ModelKind.DETECTOR not in findings.models:
        return ""
    boxes = findings.detections
    if not boxes:
        return "Opacities: none found"
    return f"Opacities: {len(boxes)} box{'es' if len(boxes) > 1 else ''} (highest score {max(d.score for d in boxes):.2f})"


def _bands_text(run: ModelRun) -> str:
    """How a spatial split ran: its first stages on bands joined at the cut, or the whole model on bands whose edges
    swapped rows (cut 0)."""
    if run.cut == 0:
        return f", on {run.bands} bands, one per edge, rows swapped between them"
    return f", its first stages on {run.bands} bands"
