"""The open studies, their findings and the Analyze-all batch: one Qt-side model that the views follow.

The main window changes it (a file opened, a study closed or shown, an analysis ended); the Studies list, the
canvas and its overlays, the findings panel and the batch's progress follow its signals. A test can change the
model and see every view follow, without going through the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal

from inference.models.findings import WORKSTATION, Findings, Mode
from viewer.radiograph import Radiograph


@dataclass
class Study:
    radiograph: Radiograph
    findings: Findings | None = None
    status: str = ""  # what its row in the Studies list says: queued, analysing, local, failed: …
    failure: str = ""  # why its last analysis failed, or why it is not analysed; "" unless either
    out_of_scope: str = ""  # why the models do not read it (a CT, MedEdge's own annotated copy…); "" for a radiograph

    @property
    def path(self) -> str:
        return self.radiograph.path


@dataclass
class Batch:
    """Analyze all: its studies without a result yet, and how many ended each way."""

    pending: list[str]
    total: int
    done: int = 0
    failed: int = 0
    reason: str = ""  # why the series stopped early, when it failed as a whole

    @property
    def ended(self) -> int:
        return self.done + self.failed


class StudyModel(QObject):
    added = Signal(object, object)     # Study, its thumbnail's grey pixels (or None)
    removed = Signal(str)              # path
    current_changed = Signal(object)   # the Study shown, or None
    findings_changed = Signal(object)  # the Study whose findings came
    status_changed = Signal(str, str)  # path, what its row says
    batch_changed = Signal(object)     # the running Batch after a step
    batch_ended = Signal(object, bool)  # the Batch, cancelled

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._studies: dict[str, Study] = {}
        self.current: str | None = None
        self.batch: Batch | None = None

    # ------------------------------------------------------------ reading

    def __contains__(self, path: object) -> bool:
        return path in self._studies

    def __len__(self) -> int:
        return len(self._studies)

    def get(self, path: str | None) -> Study | None:
        return self._studies.get(path) if path is not None else None

    @property
    def current_study(self) -> Study | None:
        return self.get(self.current)

    def findings(self, path: str | None) -> Findings | None:
        study = self.get(path)
        return study.findings if study is not None else None

    # ------------------------------------------------------------ changing

    def add(self, radiograph: Radiograph, thumbnail: np.ndarray | None = None) -> Study:
        """A study opened (opened again: its image replaces the old one, and its findings go)."""
        study = Study(radiograph)
        self._studies[radiograph.path] = study
        self.added.emit(study, thumbnail)
        return study

    def remove(self, path: str, then: str | None = None) -> None:
        """The study is closed; when it was shown, `then` is shown instead (or nothing)."""
        if self._studies.pop(path, None) is None:
            return
        if self.batch is not None and path in self.batch.pending:
            self.batch.pending.remove(path)
            self.batch.total -= 1
            self.batch_changed.emit(self.batch)
        self.removed.emit(path)
        if path == self.current:
            self.show(then)

    def show(self, path: str | None) -> None:
        """Show this study (None: none)."""
        if path is not None and path not in self._studies or path == self.current:
            return  # (on screen already: its window, zoom and flips stay as the reader left them)
        self.current = path
        self.current_changed.emit(self.get(path))

    def set_findings(self, path: str, findings: Findings) -> bool:
        """The study's analysis ended with `findings`; False when it was closed meanwhile."""
        study = self._studies.get(path)
        if study is None:
            return False
        study.findings = findings
        self.findings_changed.emit(study)
        self.set_status(path, result_status(findings))
        return True

    def set_status(self, path: str, status: str, failure: str = "") -> None:
        study = self._studies.get(path)
        if study is not None:
            study.status, study.failure = status, failure
            self.status_changed.emit(path, status)

    def set_out_of_scope(self, path: str, reason: str) -> None:
        """Not a chest radiograph: said on its row and in the Findings panel when it opens, and never analysed (a
        failure it is not)."""
        study = self._studies.get(path)
        if study is not None:
            study.out_of_scope = reason
            self.set_status(path, f"not analysed: {reason}", failure=reason)

    def set_failed(self, path: str, reason: str) -> None:
        """Its analysis failed: the row says so, and the Findings panel why."""
        self.set_status(path, f"failed: {reason}", failure=reason)

    # ------------------------------------------------------------ Analyze all

    def begin_batch(self, paths: list[str]) -> Batch:
        self.batch = Batch([p for p in paths if p in self._studies], total=0)
        self.batch.total = len(self.batch.pending)
        for path in self.batch.pending:
            self.set_status(path, "queued")
        self.batch_changed.emit(self.batch)
        return self.batch

    def batch_study_began(self, path: str, where: str = "") -> None:
        if self.batch is not None and path in self.batch.pending:
            self.set_status(path, f"analysing on {where}" if where else "analysing")

    def batch_study_ended(self, path: str, status: str = "", failure: str = "") -> None:
        """One of the batch's studies ended, with `status`, or failed for `failure` (a single study's analysis is
        not the batch's: ignored)."""
        if self.batch is None or path not in self.batch.pending:
            return
        self.batch.pending.remove(path)
        if failure:
            self.batch.failed += 1
            self.set_failed(path, failure)
        else:
            self.batch.done += 1
            self.set_status(path, status)
        self.batch_changed.emit(self.batch)

    def end_batch(self, cancelled: bool, reason: str) -> None:
        """The series ended: what did not get a result was cancelled (Esc, Cancel, a newer analysis) or failed
        with the series (`reason`)."""
        batch, self.batch = self.batch, None
        if batch is None:
            return
        batch.reason = reason
        for path in batch.pending:
            if cancelled or not reason:
                self.set_status(path, "cancelled")
            else:
                self.set_failed(path, reason)
        self.batch_ended.emit(batch, cancelled)


def result_status(findings: Findings) -> str:
    """A study's row after its analysis: where it ran, in a few words (the row is narrow; its tooltip has them all)."""
    edges = ", ".join(where for where in findings.ran_on if where != WORKSTATION)
    return {Mode.LOCAL: "analysed here", Mode.LOCAL_FALLBACK: "analysed here (edge failed)",
            Mode.DISTRIBUTED: f"analysed here + {edges}", Mode.EDGE: f"analysed on {edges}"}[findings.mode]
