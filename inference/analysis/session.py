"""One analysis session for the viewer and the command line: the plan → analyse → observe → re-plan loop.

A session holds an `Analyzer` and, for the automatic split, its `Planner`. It plans (measuring the link, the
edge and this workstation once, then from what is cached), analyses a study — comparing the result with the
plan and planning again when they drift apart — or a worklist spread over this workstation and every edge.
Nothing waits for the planner's measurements: this workstation's stage times are measured once per machine
(kept), and the link and the edge are measured in the background at a low priority while the studies start on
the plan at hand (the fixed cuts at first); the plan changes when the measurements are done.
The viewer's analysis service and `infer` / `evaluate` are thin adapters over it; it has no Qt, and reports
what it is doing through `progress`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized

from inference.analysis.analyzer import Analyzer, StudyError
from inference.analysis.spread import Lane, SpreadWorklist, lower_priority
from inference.edge.client import EdgeError, EdgeGroup
from inference.models.findings import WORKSTATION, Findings, ModelRun
from inference.planning.plan import Plan
from inference.planning.planner import Option, Planner, PlanningStopped
from viewer.radiograph import Radiograph

RETRY_S = 60.0  # after the background measurement failed (not the edge being down): the fixed cuts this long


def _ran_as(run: ModelRun, option: Option) -> bool:
    """The model ran as the planner's option says: same cut, wire (when cut for the edge) and bands."""
    return (run.cut, run.bands) == (option.cut, option.bands) and run.wire in (None, option.wire)


class AnalysisSession:
    """Analyses with `analyzer` under `fixed` (a fixed split), or under the planner's choice when `auto` and
    the analyzer has an edge — `fixed` then being the documented cuts used while the edge cannot be measured."""

    def __init__(self, analyzer: Analyzer, fixed: Plan, auto: bool, with_heat_maps: bool = True,
                 progress: Callable[[str], None] = lambda message: None) -> None:
        self.analyzer = analyzer
        self.fixed = fixed
        self.with_heat_maps = with_heat_maps
        self.progress = progress
        # measured on the first server, the others relative to it: requests spread over several would mix speeds
        first = analyzer.edge.clients[0] if isinstance(analyzer.edge, EdgeGroup) else analyzer.edge
        others = tuple(analyzer.edge.clients[1:]) if isinstance(analyzer.edge, EdgeGroup) else ()
        self.planner = (Planner(analyzer, first, with_heat_maps=with_heat_maps, others=others)
                        if auto and first is not None else None)
        self.plan = fixed
        self._lock = threading.Lock()  # one plan at a time (the viewer's worker threads)
        self._lanes: list[Lane] | None = None
        self.measured = False  # the last plan was the planner's (not the fixed cuts for an edge it could not measure)
        self._measuring: threading.Thread | None = None  # the planner measuring in the background
        self._thread: threading.Thread | None = None     # the last such thread (it may still run what follows)
        self._after: list[Callable[[], None]] = []  # run when that measurement ends (worklists begun meanwhile)
        self._after_lock = threading.Lock()
        self._retry_at = 0.0  # after a measurement failed: not tried again before (monotonic s)

    def prepare(self, study: Radiograph | None, edges: int = 0) -> Plan:
        """The plan for the next study, or with `edges` the plan of a worklist's edge lanes (that many, beside
        this workstation analysing studies of its own) for their throughput together (`Planner.plan`). Auto: the planner's choice —
        measured on the first call, then from its cache — with `study`, a real radiograph, teaching it how the
        wire compresses; the fixed cuts when the edge cannot be measured."""
        if self.planner is None:
            return self.fixed
        with self._lock:
            if study is not None:
                self.planner.learn_from(study)
            if self.planner.link is None or not self.planner.options:
                self.progress("measuring the link and the edge to choose the cuts…")
            try:
                self.plan, self.measured = self.planner.plan(edges=edges), True
            except EdgeError as exc:
                self.progress(f"cannot measure the edge ({exc}); using the fixed auto cuts")
                self.plan, self.measured = self.fixed, False
            else:
                self.progress("plan: " + ", ".join(f"{o.model} cut {o.cut} {o.wire.value} (predicted "
                                                   f"{o.predicted_ms:.0f} ms)" for o in self.planner.options.values()))
            return self.plan

    def measuring(self) -> bool:
        """The planner is measuring the link and the edge in the background."""
        thread = self._measuring  # set to None by the thread when it is done
        return thread is not None and thread.is_alive()

    def wait_for_plan(self, timeout_s: float | None = None) -> bool:
        """Until the background measurement (if any) and what follows it are done; False when they are still
        going at the timeout."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self._thread is None or not self._thread.is_alive()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the background measurement and auto's runtime choice, if any, and wait for them (a process must not
        exit under a thread in the middle of a gRPC call or a model run)."""
        if self.planner is not None:
            self.planner.stop.set()
        self.analyzer.stop_runtime_choice(timeout_s)
        self.wait_for_plan(timeout_s)

    def _unmeasured(self) -> bool:
        """The planner has yet to measure the link and the edge (first plan, or after a drift), or to plan with the
        runtimes auto is still choosing in the background (the plan depends on them)."""
        return self.planner is not None and (self.planner.link is None or not self.planner.options
                                             or not self.analyzer.runtime_choice_done(0))

    def _may_measure(self) -> bool:
        """A background measurement is due: none going on, and not within RETRY_S of one that failed."""
        return self._unmeasured() and not self.measuring() and time.monotonic() >= self._retry_at

    def _when_measured(self, call: Callable[[], None]) -> bool:
        """`call()` once the background measurement ends; False (not kept) when none is going on."""
        with self._after_lock:
            if not self.measuring():
                return False
            self._after.append(call)
            return True

    def _measure_in_background(self, study: Radiograph | None, edges: int = 0,
                               then: Callable[[Plan], None] = lambda plan: None) -> None:
        """This workstation's stage times (kept per machine: measured only the first time) and the study's
        pre-processing now, not under the studies' load; then the link and the edge measured in a thread at a low
        priority, and the plan made; `then(plan)` when it is.
        An edge that does not answer at all is not measured: the fixed cuts, as when it cannot be measured."""
        planner = self.planner
        if planner is None or self.measuring():
            return
        for name, model in planner.models().items():  # before auto's runtime choice may start beside it
            planner.local_ms(name, model)
        try:
            planner.edge.status()
        except EdgeError as exc:
            self.progress(f"cannot measure the edge ({exc}); using the fixed auto cuts")
            self.plan, self.measured = self.fixed, False
            return
        if study is not None:  # the study's pre-processing timed now, not under the studies' load
            planner.learn_from(study)
        self.analyzer.start_runtime_choice()  # after those timings (a first start on this machine)
        self.progress(("measuring" if self.analyzer.runtime_choice_done(0) else
                       "once this workstation's runtimes are chosen, measuring")
                      + " the link and the edge in the background; starting on the "
                      + ("fixed cuts…" if self.plan is self.fixed else "last plan…"))

        def measure() -> None:
            lower_priority()
            try:
                # this workstation's times depend on the runtimes, and are timed on a quiet CPU: after the stages
                # the choice builds once it has chosen, too
                while not self.analyzer.runtime_choice_done(timeout_s=1.0):
                    if planner.stop.is_set():
                        raise PlanningStopped("the session is closing")
                then(self.prepare(study, edges=edges))
            except PlanningStopped:
                return  # the session is closing
            except Exception as exc:  # a defect or a damaged cache: said in one line, the fixed cuts kept
                self._retry_at = time.monotonic() + RETRY_S
                self.progress(f"could not measure the link and the edge ({type(exc).__name__}: {exc}); "
                              "using the fixed auto cuts")
            finally:
                for lane in self._lanes or []:  # a worklist's lanes held for the measurement join it now
                    if lane.joins is not None:
                        lane.joins.set()
                with self._after_lock:
                    after, self._after = self._after, []
                    self._measuring = None
            for call in after:
                call()

        self._measuring = self._thread = threading.Thread(target=measure, name="planner", daemon=True)
        self._thread.start()

    def analyze(self, radiograph: Radiograph, cancel: threading.Event | None = None,
                allow_fallback: bool = True) -> Findings:
        """One study, on the plan made for it (`AnalysisCancelled` when `cancel` is set, `EdgeError` when the
        edge fails and `allow_fallback` is False) — on the plan at hand while the planner measures."""
        if self._may_measure():
            self._measure_in_background(radiograph)
        # measured: the planner's choice now (quick); otherwise the plan at hand, never a measurement here
        plan = self.plan if self._unmeasured() or self.measuring() else self.prepare(radiograph)
        where = "on this workstation" if not plan.uses_edge(self.analyzer.stage_counts) else "here and on the edge"
        self.progress(f"running both models {where}…")
        findings = self.analyzer.analyze(radiograph, plan, with_heat_maps=self.with_heat_maps,
                                         allow_fallback=allow_fallback, cancel=cancel)
        return self._observed(findings)

    def lanes(self) -> list[Lane]:
        """The devices a worklist is spread over: every edge server, on the session's plan, and with the
        automatic split this workstation too (whole models here); made once, their plans set per worklist."""
        if self._lanes is None:
            edge = self.analyzer.edge
            if self.planner is None and not self.fixed.uses_edge(self.analyzer.stage_counts):
                edge = None  # a local split: the edge is not asked
            servers = edge.clients if isinstance(edge, EdgeGroup) else [edge] if edge is not None else []
            self._lanes = [Lane(server.settings.address, self.analyzer.with_edge(server), self.plan)
                           for server in servers]
            if self.planner is not None or not self._lanes:
                self._lanes.append(Lane(WORKSTATION, self.analyzer.with_edge(None), self.analyzer.local_plan(),
                                        background=bool(self._lanes)))
        return self._lanes

    def analyze_series(self, studies: Iterable[Radiograph | StudyError], cancel: threading.Event | None = None,
                       allow_fallback: bool = True, started: Callable[[Radiograph, str], None] | None = None,
                       in_order: bool = False, count: int | None = None) -> Iterator[Findings | StudyError]:
        """A worklist, results as they finish by default (a failed study as its `StudyError`): spread over the lanes
        (`SpreadWorklist`: each edge server and, with the automatic split, this workstation), planned on its
        first radiograph for the throughput of all the lanes together (this workstation joins only when the edge
        could be measured). Without an edge, one study after another here.
        `started(study, lane)` is called as a lane takes a study; `in_order`: results in the input's order;
        `count`: how many studies there are (the input's length when it has one), for the worklist's end."""
        if count is None and isinstance(studies, Sized):
            count = len(studies)
        lanes = self.lanes()
        edge_lanes = [lane for lane in lanes if lane.analyzer.edge is not None]
        studies = iter(studies)
        head: list[Radiograph | StudyError] = []  # up to the first radiograph, which the plan is made on
        for lane in lanes:  # this workstation held back while the planner measures (set before it starts)
            lane.joins = threading.Event() if lane.analyzer.edge is None and edge_lanes else None
        if self.planner is not None and edge_lanes:
            for study in studies:
                head.append(study)
                if isinstance(study, Radiograph):
                    if self._when_measured(self._replanning(study, edge_lanes)):
                        pass  # measuring for a single study: then the worklist's plan, from what it measured
                    elif self._may_measure():  # the edges start now; their plan and this workstation follow
                        self._measure_in_background(study, len(edge_lanes), then=self._adopting(edge_lanes))
                    elif not self._unmeasured():  # measured: the worklist's plan from what is known (quick)
                        self.prepare(study, edges=len(edge_lanes))
                    break
        if not self.measuring():  # (while it measures: the edges on the plan at hand, then this workstation too)
            for lane in lanes:
                lane.joins = None
            if self.planner is None or not edge_lanes:
                pass
            elif not self.measured:  # the edge could not be measured: the edges on the fixed cuts, as planned
                lanes = edge_lanes
            elif not self.plan.uses_edge(self.analyzer.stage_counts):  # the edges would only run it here too
                lanes = [lane for lane in lanes if lane.analyzer.edge is None]
        for lane in edge_lanes:
            lane.use(self.plan)
        if edge_lanes:
            self.progress("analysing on " + ", ".join(
                "this workstation" if lane.name == WORKSTATION else f"edge {lane.name}" for lane in lanes) + "…")
        worklist = SpreadWorklist(lanes, itertools.chain(head, studies), with_heat_maps=self.with_heat_maps,
                                  allow_fallback=allow_fallback, cancel=cancel, started=started,
                                  in_order=in_order, count=count)
        for result in worklist:
            yield self._predicted(result) if isinstance(result, Findings) else result

    def _adopting(self, edge_lanes: list[Lane]) -> Callable[[Plan], None]:
        return lambda plan: self._adopt(plan, edge_lanes)

    def _replanning(self, study: Radiograph, edge_lanes: list[Lane]) -> Callable[[], None]:
        """The worklist's plan made from what was measured, and adopted by its edge lanes."""
        return lambda: self._adopt(self.prepare(study, edges=len(edge_lanes)), edge_lanes)

    def _adopt(self, plan: Plan, edge_lanes: list[Lane]) -> None:
        """The measured plan for the edge lanes of a worklist under way (each reads it for its next study). A
        plan that keeps everything here leaves them on the plan at hand: this workstation's own lane already
        runs whole studies, and the lanes of a running worklist stay."""
        if self.measured and plan.uses_edge(self.analyzer.stage_counts):
            for lane in edge_lanes:  # mid-worklist: its recent results follow the new plan within a few studies
                lane.plan = plan

    def _predicted(self, findings: Findings) -> Findings:
        """The result with the plan's predictions beside the models that ran as planned."""
        if self.planner is None or not self.planner.options:
            return findings
        return findings.predicted({kind: option.predicted_ms for kind, option in self.planner.options.items()
                                   if findings.models[kind].cut == option.cut})

    def _observed(self, findings: Findings) -> Findings:
        """The result with the plan's predictions beside it; on lasting drift the next study is planned
        again."""
        planner = self.planner
        if planner is None or not planner.options:
            return findings
        findings = self._predicted(findings)
        if self.measuring() or any(not _ran_as(findings.models[kind], option) for kind, option in planner.options.items()):
            return findings  # not the planner's plan (it ran on the plan at hand while the planner measured)
        measured = {kind: run.measured_ms for kind, run in findings.models.items()}
        if not findings.fallback_reason and planner.observe(measured, findings.timing_ms["queued"]):
            self._measure_in_background(None)  # the next studies on this plan until the new one is made
        return findings
