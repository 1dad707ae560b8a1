"""One analysis session for the viewer and the command line: the plan → analyse → observe → re-plan loop.

A session holds an `Analyzer` and, for the automatic split, its `Planner`. It plans (measuring the link, the
edge and this workstation once, then from what is cached), analyses a study or a pipelined series, compares
each result with the plan and plans again when they drift apart. The viewer's analysis service and `infer` /
`evaluate` are thin adapters over it; it has no Qt, and reports what it is doing through `progress`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator

from inference.analysis.analyzer import AHEAD, Analyzer, StudyError
from inference.edge.client import EdgeError
from inference.models.findings import Findings
from inference.planning.plan import Plan
from inference.planning.planner import Planner
from viewer.radiograph import Radiograph


class AnalysisSession:
    """Analyses with `analyzer` under `fixed` (a fixed split), or under the planner's choice when `auto` and
    the analyzer has an edge — `fixed` then being the documented cuts used while the edge cannot be measured."""

    def __init__(self, analyzer: Analyzer, fixed: Plan, auto: bool, with_heat_maps: bool = True,
                 progress: Callable[[str], None] = lambda message: None) -> None:
        self.analyzer = analyzer
        self.fixed = fixed
        self.with_heat_maps = with_heat_maps
        self.progress = progress
        self.planner = (Planner(analyzer, analyzer.edge, with_heat_maps=with_heat_maps)
                        if auto and analyzer.edge is not None else None)
        self.plan = fixed
        self._lock = threading.Lock()  # one plan at a time (the viewer's worker threads)

    def prepare(self, study: Radiograph | None, series: bool = False) -> Plan:
        """The plan for the next study, or for a pipelined `series` (the plan of the highest throughput).
        Auto: the planner's choice — measured on the first call, then from its cache — with `study`, a real
        radiograph, teaching it how the wire compresses; the fixed cuts when the edge cannot be measured."""
        if self.planner is None:
            return self.fixed
        with self._lock:
            if study is not None:
                self.planner.learn_from(study)
            if self.planner.link is None or not self.planner.options:
                self.progress("measuring the link and the edge to choose the cuts…")
            try:
                self.plan = self.planner.plan(series=series)
            except EdgeError as exc:
                self.progress(f"cannot measure the edge ({exc}); using the fixed auto cuts")
                self.plan = self.fixed
            else:
                self.progress("plan: " + ", ".join(f"{o.model} cut {o.cut} {o.wire.value} (predicted "
                                                   f"{o.predicted_ms:.0f} ms)" for o in self.planner.options.values()))
            return self.plan

    def analyze(self, radiograph: Radiograph, cancel: threading.Event | None = None,
                allow_fallback: bool = True) -> Findings:
        """One study, on the plan made for it (`AnalysisCancelled` when `cancel` is set, `EdgeError` when the
        edge fails and `allow_fallback` is False)."""
        plan = self.prepare(radiograph)
        where = "on this workstation" if not plan.uses_edge(self.analyzer.stage_counts) else "here and on the edge"
        self.progress(f"running both models {where}…")
        findings = self.analyzer.analyze(radiograph, plan, with_heat_maps=self.with_heat_maps,
                                         allow_fallback=allow_fallback, cancel=cancel)
        return self._observed(findings, None, series=False)

    def analyze_series(self, studies: Iterable[Radiograph | StudyError], cancel: threading.Event | None = None,
                       allow_fallback: bool = True, planned: bool = False,
                       for_throughput: bool = True) -> Iterator[Findings | StudyError]:
        """A pipelined series (`Analyzer.analyze_many`: results in input order, a failed study as its
        `StudyError`), planned on its first radiograph unless `planned` (already prepared) — for throughput,
        or with `for_throughput=False` each study's own fastest plan, pipelined all the same — held to its
        pace and planned again when that drifts."""
        ready = planned or self.planner is None

        def first_plans(studies):
            nonlocal ready
            for study in studies:
                if not ready and isinstance(study, Radiograph):
                    self.prepare(study, series=for_throughput)
                    ready = True
                yield study

        arrived: list[float] = []  # when each result came: a series plan is held to the time between them
        for result in self.analyzer.analyze_many(first_plans(studies), lambda: self.plan,
                                                 with_heat_maps=self.with_heat_maps, allow_fallback=allow_fallback,
                                                 cancel=cancel):
            arrived.append(time.perf_counter())
            if isinstance(result, Findings):
                # the first results come as the pipeline fills: their spacing says nothing of its pace
                period = (arrived[-1] - arrived[-2]) * 1e3 if len(arrived) > AHEAD + 1 else None
                # a study's own plan is not held to pipelined times (they stretch as the studies share the
                # workstation and the edge: read as drift, the edge was measured again mid-series, 3× slower)
                result = self._observed(result, period, series=True) if for_throughput else self._predicted(result)
            yield result

    def _predicted(self, findings: Findings) -> Findings:
        """The result with the plan's predictions beside it."""
        if self.planner is None or not self.planner.options:
            return findings
        return findings.predicted({kind: option.predicted_ms for kind, option in self.planner.options.items()})

    def _observed(self, findings: Findings, period_ms: float | None, series: bool) -> Findings:
        """The result with the plan's predictions beside it; on lasting drift the next study is planned
        again."""
        planner = self.planner
        if planner is None or not planner.options:
            return findings
        findings = self._predicted(findings)
        measured = {kind: run.measured_ms for kind, run in findings.models.items()}
        if not findings.fallback_reason and planner.observe(measured, findings.timing_ms["queued"], period_ms):
            self.prepare(None, series=series and planner.series_ms is not None)
        return findings
