"""Analysis for the GUI: builds the Analyzer from the settings (in a worker, once) and runs studies off the UI thread."""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, Signal

from app.settings import AppSettings
from app.workers import Worker, start
from inference.analyze import AnalysisCancelled, Analyzer, ModelChoice
from inference.edge_client import EdgeClient, EdgeError, LinkMeasurement, ServerStatus, connect
from inference.edge_repository import PROBE_MODEL
from inference.plan import Plan, parse_split
from inference.planner import Planner
from inference.wire import WireFormat
from viewer.radiograph import Radiograph


@dataclass
class Job:
    path: str
    worker: Worker
    cancel: threading.Event


class AnalysisService(QObject):
    """One analysis at a time; `progress` says what runs, `finished`/`failed`/`cancelled` end each job."""

    progress = Signal(str, str)     # path, message
    finished = Signal(str, object)  # path, Findings
    failed = Signal(str, str)       # path, one-line reason
    cancelled = Signal(str)         # path

    def __init__(self, settings: AppSettings, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._analyzer: Analyzer | None = None
        self._analyzer_key: tuple | None = None
        self._build_lock = threading.Lock()
        self._planner: Planner | None = None
        self.job: Job | None = None
        # The cyclic GC's full passes hold the interpreter for as long as they scan; with torch and the
        # models loaded (tens of thousands of long-lived objects) that was 150-270 ms, measured, and
        # the window stalled. Frozen objects are never scanned again: freeze what exists now, and the
        # models once built.
        gc.freeze()

    def update_settings(self, settings: AppSettings) -> None:
        self.settings = settings  # the analyzer is rebuilt on the next run when models or edge changed

    @property
    def busy(self) -> bool:
        return self.job is not None

    def analyze(self, radiograph: Radiograph) -> Job:
        if self.job is not None:
            self.job.cancel.set()  # a newer request replaces a running one
        cancel = threading.Event()
        worker = Worker(self._run, radiograph, self.settings, cancel)
        job = Job(radiograph.path, worker, cancel)
        worker.signals.returned.connect(lambda findings, j=job: self._done(j, findings))
        worker.signals.errored.connect(lambda error, j=job: self._error(j, error))
        self.job = job
        start(worker)
        return job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel.set()

    def _analyzer_for(self, settings: AppSettings, path: str) -> Analyzer:
        key = (settings.detector_weights, settings.classifier_weights, settings.device, settings.runtime,
               tuple(settings.edges))
        with self._build_lock:
            if self._analyzer is None or self._analyzer_key != key:
                self.progress.emit(path, "loading models…")
                edge = connect(settings.edges) if settings.edges else None
                choice = ModelChoice(detector_weights=settings.detector_weights or None,
                                     classifier_weights=settings.classifier_weights or None, device=settings.device,
                                     runtime=settings.runtime)
                self._analyzer, self._analyzer_key = Analyzer(choice, edge=edge), key
                gc.freeze()
            return self._analyzer

    def _run(self, radiograph: Radiograph, settings: AppSettings, cancel: threading.Event):
        analyzer = self._analyzer_for(settings, radiograph.path)
        if cancel.is_set():
            raise AnalysisCancelled("analysis cancelled")
        plan = parse_split(settings.split, analyzer.stage_counts, WireFormat(settings.wire))
        planner = self._planner if settings.split == "auto" else None
        if settings.split == "auto":
            planner, plan = self._auto_plan(analyzer, radiograph, plan)
        where = "on this workstation" if not plan.uses_edge(analyzer.stage_counts) else "here and on the edge"
        self.progress.emit(radiograph.path, f"running both models {where}…")
        findings = analyzer.analyze(radiograph, plan, cancel=cancel)
        if planner is not None and planner.options:
            findings = replace(findings, predicted_ms={n: o.predicted_ms for n, o in planner.options.items()})
            if not findings.fallback_reason:  # lasting drift: the next study measures and plans again
                planner.observe(findings.model_ms, findings.timing_ms["queued"])
        return findings

    def _auto_plan(self, analyzer: Analyzer, radiograph: Radiograph, fixed: Plan):
        """Auto: the planner's choice for this link; the documented fixed cuts if the edge cannot be measured."""
        if self._planner is None or self._planner.analyzer is not analyzer:
            self._planner = Planner(analyzer, analyzer.edge)
        self._planner.learn_from(radiograph)  # the first study: how a real radiograph's tensors compress
        if self._planner.link is None or not self._planner.options:
            self.progress.emit(radiograph.path, "measuring the link and the edge to choose the cuts…")
        try:
            return self._planner, self._planner.plan()
        except EdgeError:
            return None, fixed

    def _done(self, job: Job, findings) -> None:
        if self.job is job:
            self.job = None
        if job.cancel.is_set():
            self.cancelled.emit(job.path)
        else:
            self.finished.emit(job.path, findings)

    def _error(self, job: Job, error: BaseException) -> None:
        if self.job is job:
            self.job = None
        if isinstance(error, AnalysisCancelled):
            self.cancelled.emit(job.path)
        else:
            self.failed.emit(job.path, " ".join(str(error).split()) or type(error).__name__)


def check_edge(settings: AppSettings) -> ServerStatus:
    """Live/ready/version/models and round trip of the preferred edge (raises EdgeError)."""
    client = EdgeClient(settings.edge)
    try:
        return client.status()
    finally:
        client.close()


def test_connection(settings: AppSettings) -> tuple[ServerStatus, LinkMeasurement | None, str | None]:
    """`check_edge` plus the link probe (round trip and bandwidth) when the server has the probe model."""
    client = EdgeClient(settings.edge)
    try:
        status = client.status()
        if PROBE_MODEL not in status.models:
            return status, None, f"no {PROBE_MODEL} model on the server: bandwidth not measured"
        return status, client.probe(), None
    finally:
        client.close()
