"""Analysis for the GUI: the analysis session (inference/analysis/session.py) built from the settings (in a worker,
once), run off the UI thread, its results as Qt signals."""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from app.settings import AppSettings
from app.workers import Worker, start
from inference.analysis.analyzer import AnalysisCancelled, Analyzer, ModelChoice, StudyError
from inference.analysis.session import AnalysisSession
from inference.config import SplitMode
from inference.edge.client import EdgeClient, EdgeError, LinkMeasurement, ServerStatus, connect
from inference.edge.repository import PROBE_MODEL
from inference.planning.plan import plan_for
from viewer.radiograph import Radiograph


@dataclass
class Job:
    path: str  # the study; "" for a series
    worker: Worker
    cancel: threading.Event


class AnalysisService(QObject):
    """One analysis at a time — a study, or a worklist (Analyze all) — through the analysis session
    (inference/analysis/session.py) in a worker. `progress` says what runs; `finished`/`failed`/`cancelled` end each
    study's analysis; a series also says when each of its studies `started`, and `series_ended` once."""

    progress = Signal(str, str)     # path, message
    finished = Signal(str, object)  # path, Findings
    failed = Signal(str, str)       # path, one-line reason
    cancelled = Signal(str)         # path
    started = Signal(str, str)      # path, where: a series' study begins on this workstation or an edge
    series_ended = Signal(bool, str)  # cancelled, the reason it stopped ("" when every study ended)
    background = Signal(str)        # what this workstation does meanwhile, for minutes ("" when nothing)
    _said = Signal(object, str)     # an analyzer's background work, as its watcher's thread saw it

    def __init__(self, settings: AppSettings, parent=None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._analyzer: Analyzer | None = None
        self._analyzer_key: tuple | None = None
        self._session: AnalysisSession | None = None
        self._session_key: tuple | None = None
        self._build_lock = threading.Lock()
        self._path = ""  # the study the session's progress is about
        self.job: Job | None = None
        self._said.connect(self._say)
        self._watcher: threading.Thread | None = None
        self._watched: Analyzer | None = None
        self._watch_lock = threading.Lock()
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
        return self._start(radiograph.path, self._run, radiograph)

    def analyze_all(self, radiographs: list[Radiograph]) -> Job:
        """The studies as one worklist, spread over every edge server and (auto) this workstation."""
        return self._start("", self._run_series, list(radiographs))

    def _start(self, path: str, run, what) -> Job:
        if self.job is not None:
            self.job.cancel.set()  # a newer request replaces a running one
        cancel = threading.Event()
        worker = Worker(run, what, self.settings, cancel)
        job = Job(path, worker, cancel)
        if path:
            worker.signals.returned.connect(lambda findings, j=job: self._done(j, findings))
            worker.signals.errored.connect(lambda error, j=job: self._error(j, error))
        else:
            worker.signals.returned.connect(lambda _, j=job: self._series_done(j, None))
            worker.signals.errored.connect(lambda error, j=job: self._series_done(j, error))
        self.job = job
        start(worker)
        return job

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel.set()

    def close(self) -> None:
        """The session's background measurement stopped (the window is closing)."""
        if self._session is not None:
            self._session.close(timeout_s=10)

    def _analyzer_for(self, settings: AppSettings, path: str) -> Analyzer:
        key = (settings.detector_weights, settings.classifier_weights, settings.device, settings.runtime,
               tuple(settings.edges))
        if self._analyzer is None or self._analyzer_key != key:
            self.progress.emit(path, "loading models…")
            edge = connect(settings.edges) if settings.edges else None
            choice = ModelChoice(detector_weights=settings.detector_weights or None,
                                 classifier_weights=settings.classifier_weights or None, device=settings.device,
                                 runtime=settings.runtime)
            analyzer = Analyzer(choice, edge=edge, choose_in_background=True)
            self._analyzer, self._analyzer_key = analyzer, key
            gc.freeze()
            self.background.emit("")  # (a replaced analyzer's work is no longer this window's)
            self._watch_background(analyzer)
        return self._analyzer

    def _watch_background(self, analyzer: Analyzer) -> None:
        """Work `analyzer` does for minutes beside the analyses — auto's first runtime choice on this machine (or
        after an upgrade), the INT8 stages before a cut a split study queued — said in the status bar for as long
        as it runs (a study's progress line is replaced by the next at once); a watcher thread follows it. Called
        when the analyzer is made and after each study (a study may queue stages to build)."""
        with self._watch_lock:  # (from the worker threads of studies and series)
            watching = self._watcher is not None and self._watcher.is_alive() and self._watched is analyzer
            if _background_work(analyzer) and not watching:  # (a replaced analyzer's watcher ends on its own)
                self._watched = analyzer
                self._watcher = threading.Thread(target=self._watch, args=(analyzer,), name="background-work-watch",
                                                 daemon=True)
                self._watcher.start()

    def _watch(self, analyzer: Analyzer) -> None:
        """Says `analyzer`'s background work whenever it changes, until there is none, or the settings replaced
        the analyzer (its work may never start)."""
        said = None
        while self._analyzer is analyzer:
            message = _background_work(analyzer)
            if message != said:
                try:
                    self._said.emit(analyzer, message)
                except RuntimeError:  # the window closed (its close stops the work)
                    return
                said = message
            if not message:
                with self._watch_lock:  # (a study may have queued work just now, seeing this watcher alive)
                    if not _background_work(analyzer):
                        self._watched = None
                        return
                continue
            if analyzer.runtime_choice_done(timeout_s=0.5):  # a change is said within half a second
                analyzer.heads_built(timeout_s=0.5)

    def _say(self, analyzer: Analyzer, message: str) -> None:
        if analyzer is self._analyzer:  # (in the window's thread: a replaced analyzer's word comes too late)
            self.background.emit(message)

    def _session_for(self, settings: AppSettings, path: str) -> AnalysisSession:
        """The session for these settings: kept while they hold, with its planner's measurements."""
        with self._build_lock:
            self._path = path
            analyzer = self._analyzer_for(settings, path)
            key = (analyzer, settings.split, settings.wire)
            if self._session is None or self._session_key != key:
                fixed = plan_for(settings.split, analyzer.stage_counts, settings.wire)
                self._session = AnalysisSession(analyzer, fixed, auto=settings.split.mode is SplitMode.AUTO,
                                                progress=lambda message: self.progress.emit(self._path, message))
                self._session_key = key
            return self._session

    def _run(self, radiograph: Radiograph, settings: AppSettings, cancel: threading.Event):
        session = self._session_for(settings, radiograph.path)
        if cancel.is_set():
            raise AnalysisCancelled("analysis cancelled")
        try:
            return session.analyze(radiograph, cancel=cancel)
        finally:
            self._watch_background(session.analyzer)  # the study may have queued stages to build

    def _run_series(self, radiographs: list[Radiograph], settings: AppSettings, cancel: threading.Event) -> None:
        if not radiographs:
            return
        session = self._session_for(settings, radiographs[0].path)

        def started(radiograph: Radiograph, where: str) -> None:  # from the worklist's threads: queued signals
            self._path = radiograph.path
            self.started.emit(radiograph.path, where)

        for result in session.analyze_series(radiographs, cancel=cancel, started=started):
            if isinstance(result, StudyError):
                self.failed.emit(result.path, _one_line(result.error))
            else:
                self.finished.emit(result.path, result)
            self._watch_background(session.analyzer)

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
            self.failed.emit(job.path, _one_line(error))

    def _series_done(self, job: Job, error: BaseException | None) -> None:
        if self.job is job:
            self.job = None
        cancelled = isinstance(error, AnalysisCancelled) or job.cancel.is_set()
        self.series_ended.emit(cancelled, "" if error is None or cancelled else _one_line(error))


def _background_work(analyzer: Analyzer) -> str:
    """What `analyzer` does in the background that takes minutes, in a line ("" when nothing)."""
    if not analyzer.runtime_choice_done(0):
        return "Choosing this workstation's runtimes (once; PyTorch meanwhile)…"
    building = analyzer.heads_under_way
    if not building:
        return ""
    kind, cut = building[0]
    more = f", {len(building) - 1} more queued" if len(building) > 1 else ""
    # short: the status bar shares its width with the study's progress (a longer line was cut off, seen on X)
    runtime = analyzer.runtimes[kind].value
    return f"Building the {kind.value}'s {runtime} stages before cut {cut}{more} (PyTorch meanwhile)…"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


@dataclass(frozen=True)
class EdgeCheck:
    """One edge server as the workstation found it: its status (and link, when measured), or why not."""

    address: str
    status: ServerStatus | None = None
    link: LinkMeasurement | None = None
    problem: str | None = None   # why it could not be used; or, with a status, what was not measured


def check_edges(settings: AppSettings, measure_link: bool = False) -> list[EdgeCheck]:
    """Every configured edge server, in order: live, ready, version, models and round trip — and with
    `measure_link` the link probe's round trip and bandwidth, where the server has the probe model."""
    checks = []
    for edge in settings.edges:
        client = EdgeClient(edge)
        try:
            status = client.status()
            if not measure_link:
                checks.append(EdgeCheck(edge.address, status))
            elif PROBE_MODEL not in status.models:
                checks.append(EdgeCheck(edge.address, status, None, f"no {PROBE_MODEL} model on the server: "
                                                                    "bandwidth not measured"))
            else:
                checks.append(EdgeCheck(edge.address, status, client.probe()))
        except EdgeError as exc:
            checks.append(EdgeCheck(edge.address, problem=str(exc)))
        finally:
            client.close()
    return checks
