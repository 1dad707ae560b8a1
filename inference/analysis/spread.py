"""A worklist spread over devices: this workstation and each edge server analyse whole studies side by side.

Each device is a `Lane`: an `Analyzer` sharing the loaded models, with its own edge client (none for this
workstation) and its own plan. A lane takes the next study whenever it has room — an edge lane keeps its
pipeline full (`Analyzer.analyze_many`), this workstation takes one study at a time at a low CPU priority, so
that the edge lanes' share of the workstation (pre- and post-processing, encoding) always comes first. Each
device therefore gets studies in proportion to its throughput as it is now, with no model of it beyond its
recent results (forgotten when its plan changes between worklists).
When the number of studies is known, the last ones go where they finish soonest: a lane takes one only if,
handing the studies left one by one to the lane that would finish each first (from each lane's recent time
between results, the quickest it ever finished one, and what it holds), it gets one — a slow lane does not take
a last study that a faster one would finish sooner (it would hold the worklist's end). When nothing is left to
take, a free lane runs again a study that a slower lane still holds, if it would finish it sooner (work stealing
at the tail); the first result is kept. A lane whose edge fails steps aside while another lane can go on: its
studies go to the others, and it takes studies again once its server answers (fail-back). Results come as they
finish, each saying where it ran (`Findings.ran_on`), each study once.
"""

from __future__ import annotations

import heapq
import os
import queue
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field

from inference.analysis.analyzer import AnalysisCancelled, Analyzer, StudyError
from inference.edge.client import EdgeError
from inference.models.findings import Findings, Mode
from inference.planning.plan import Plan
from viewer.radiograph import Radiograph

BACKGROUND_NICE = 19  # this workstation's lane: it runs on what the edge lanes leave of the CPU
READ_AHEAD = 2        # studies loaded beyond those the lanes hold (a reader at normal priority loads them)
RETRY_S = 10.0        # a lane whose edge failed waits this long before asking the server again
SMOOTHING = 0.3       # weight of the latest study in a lane's time per study
RECENT = 4            # results a lane's time between results is taken over (a pipelined lane's come in pairs)


@dataclass
class Lane:
    """One device of a worklist: its analyzer (the edge it talks to, none here) and its plan."""

    name: str
    analyzer: Analyzer
    plan: Plan
    background: bool = False  # this workstation: a low CPU priority
    seconds_per_study: float | None = None  # claim to result, smoothed; None until one finished
    active: bool = True  # False while stepped aside after its edge failed
    done: int = 0  # results this lane delivered (stolen duplicates it lost not counted)
    # a study's turn on this lane (from its result before, or from taking it if later) to its result, recent ones:
    # the lane's time between results when busy — a pipelined lane's throughput, where seconds_per_study is latency
    turns: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    last_result: float | None = None  # when this lane last finished a study, kept or not (perf_counter)
    quickest: float | None = None  # the shortest claim to result it had: the least one more study takes here
    # When set: the lane takes studies only once this is set (this workstation while the planner measures in the
    # background: the two would share its CPU, and a first study here could hold a whole worklist's first result)
    joins: threading.Event | None = None
    beside: frozenset[str] | None = None  # the lanes of the worklist its pace was learned in (itself included)

    def use(self, plan: Plan) -> None:
        """Run `plan` from the next worklist on; a different plan forgets the pace learned on this one (it would
        mislead where the worklist's end goes). Not while a worklist runs on this lane."""
        if plan != self.plan:
            self.plan = plan
            self.forget_pace()

    def forget_pace(self) -> None:
        self.seconds_per_study = self.last_result = self.quickest = None
        self.turns.clear()


@dataclass
class _Held:
    study: Radiograph
    lanes: dict[str, float] = field(default_factory=dict)  # lane → when it took the study


def lower_priority() -> None:
    """This thread (and the compute threads it starts) yields the CPU to the process's other threads."""
    if sys.platform.startswith("linux"):  # elsewhere setpriority would reach the whole process
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        except OSError:
            pass  # not allowed: the lane runs at the normal priority


def _interval(lane: Lane) -> float | None:
    """A lane's recent time between results when busy: the median of its last RECENT turns (one slow turn — a
    pause, a load beside it — would hold a mean up for four results while the lane is back at its pace); a
    pipelined lane's results come in pairs, short and long turns, whose mean the median of an even number is, so
    with fewer turns their mean. None until it finished one."""
    if not lane.turns:
        return None
    return statistics.median(lane.turns) if len(lane.turns) == RECENT else statistics.fmean(lane.turns)


def _alone(lane: Lane) -> float | None:
    """How long one more study takes on this lane when it holds nothing: at least its pace, and at least the
    quickest it ever went through (a link's round trip, a pipelined lane's own stages); None until known."""
    interval = _interval(lane)
    return None if interval is None or lane.quickest is None else max(interval, lane.quickest)


def _expected(since: float, seconds_per_study: float | None, now: float) -> float:
    """When a lane that took a study at `since` should finish it; infinity when it has not finished one yet or
    has taken twice its usual time (it stalled, or its device slowed down)."""
    if seconds_per_study is None or now - since > 2 * seconds_per_study:
        return float("inf")
    return since + seconds_per_study


class SpreadWorklist:
    """Runs `studies` over `lanes`; iterate it for the results (`Findings` or `StudyError`), as they finish or
    with `in_order` in the order of the input.

    `started(study, lane)` is called as a lane takes a study. `allow_fallback=False`: a study whose edge failed
    goes to another edge (not to this workstation); when none can take it, it comes out as its `StudyError` (an
    `EdgeError`) and the worklist ends. Setting `cancel` ends it with `AnalysisCancelled`. `count`: how many
    studies the input holds (its length when it has one), for the last ones to go where they finish soonest."""

    def __init__(self, lanes: list[Lane], studies: Iterable[Radiograph | StudyError], with_heat_maps: bool = True,
                 allow_fallback: bool = True, cancel: threading.Event | None = None, retry_s: float = RETRY_S,
                 started: Callable[[Radiograph, str], None] | None = None, in_order: bool = False,
                 count: int | None = None) -> None:
        if not lanes:
            raise ValueError("a worklist needs at least one device")
        self.lanes = lanes
        company = frozenset(lane.name for lane in lanes)
        for lane in lanes:  # this workstation runs on what the edge lanes leave of its CPU: its pace learned
            if lane.background and lane.beside != company:  # alone (3 s a study here) was 24 s beside two edges
                lane.forget_pace()
            lane.beside = company
        self._count = len(studies) if count is None and isinstance(studies, Sized) else count
        self._studies = iter(studies)
        self._with_heat_maps, self._allow_fallback = with_heat_maps, allow_fallback
        self._cancel = cancel or threading.Event()
        self._retry_s = retry_s
        self._started = started or (lambda study, lane: None)
        self._in_order = in_order
        self._state = threading.Condition()
        self._ready: deque[tuple[int, Radiograph]] = deque()  # read, not taken
        self._returned: deque[int] = deque()  # given back by a lane whose edge failed: taken first
        self._held: dict[int, _Held] = {}     # taken, no result yet
        self._read = 0                        # studies read so far (their indices)
        self._exhausted = False               # the input is over
        self._stop = threading.Event()        # the worklist ends: lanes take nothing more
        self._results: queue.Queue[tuple[int, Findings | StudyError] | BaseException] = queue.Queue()
        # per lane: stop analysing (the caller cancelled, or another lane delivered every study it holds)
        self._interrupt = {lane.name: threading.Event() for lane in lanes}

    # ------------------------------------------------------------ the caller's side

    def __iter__(self) -> Iterator[Findings | StudyError]:
        if not self._in_order:
            yield from (result for _, result in self._delivered())
            return
        waiting: dict[int, Findings | StudyError] = {}
        following = 0
        for index, result in self._delivered():
            waiting[index] = result
            while following in waiting:
                yield waiting.pop(following)
                following += 1
        yield from (waiting[index] for index in sorted(waiting))  # the worklist ended early: those it has

    def _delivered(self) -> Iterator[tuple[int, Findings | StudyError]]:
        """(index in the input, result) as each finishes."""
        threads = [threading.Thread(target=self._reader, name="worklist-reader", daemon=True)]
        threads += [threading.Thread(target=self._lane, args=(lane,), name=f"lane {lane.name}", daemon=True)
                    for lane in self.lanes]
        for thread in threads:
            thread.start()
        try:
            while True:
                if self._cancel.is_set():  # the lanes stop at their next stage (the finally below)
                    raise AnalysisCancelled("analysis cancelled")
                try:
                    item = self._results.get(timeout=0.05)
                except queue.Empty:
                    with self._state:  # every study has its result (a duplicate may still be stopping)
                        over = self._finished() or not any(thread.is_alive() for thread in threads[1:])
                    if over and self._results.empty():
                        return
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # ended, cancelled, or the caller stopped reading: nothing is left running
            self._stop.set()
            with self._state:
                self._state.notify_all()
            for interrupt in self._interrupt.values():  # a lane stops at its next stage
                interrupt.set()
            for thread in threads:
                thread.join()

    # ------------------------------------------------------------ reading the input

    def _reader(self) -> None:
        """Reads (loads) the studies a little ahead of the lanes, at the normal priority."""
        try:
            for study in self._studies:
                with self._state:
                    if isinstance(study, StudyError):  # did not load: its result is its error
                        self._results.put((self._read, study))
                        self._read += 1
                        continue
                    self._ready.append((self._read, study))
                    self._read += 1
                    self._state.notify_all()
                    while len(self._ready) >= READ_AHEAD and not self._stop.is_set():
                        self._state.wait()
                if self._stop.is_set():
                    return
        except BaseException as exc:  # the input itself failed: the caller sees it
            self._results.put(exc)
            self._stop.set()
        finally:
            with self._state:
                self._exhausted = True
                self._state.notify_all()

    # ------------------------------------------------------------ a lane

    def _lane(self, lane: Lane) -> None:
        if lane.background:
            lower_priority()
        try:
            if not self._joined(lane):
                return
            while not self._stop.is_set():
                if not self._wait_for_work(lane):
                    return
                if not self._run(lane) and not self._rejoin(lane):
                    return
        except AnalysisCancelled:
            self._stop.set()
        except BaseException as exc:  # a defect, not a study's failure (those are StudyErrors): shown
            self._results.put(exc)
            self._stop.set()

    def _joined(self, lane: Lane) -> bool:
        """Until the lane may take studies (True), or the worklist is over first (False)."""
        while lane.joins is not None and not lane.joins.wait(0.2):
            with self._state:
                if self._stop.is_set() or self._finished():
                    return False
        return not self._stop.is_set()

    def _wait_for_work(self, lane: Lane) -> bool:
        """Until there is a study this lane may take (True), or the worklist is over (False)."""
        with self._state:
            while not self._stop.is_set():
                if self._may_take_new(lane) or self._straggler(lane) is not None:
                    return True
                if self._finished():
                    return False
                self._state.wait(timeout=0.2)  # with time a straggler becomes worth stealing, a last study ours
        return False

    def _run(self, lane: Lane) -> bool:
        """Analyse studies as the lane takes them, until there is none to take; False when its edge failed
        and it stepped aside."""
        claimed: deque[int] = deque()
        stepped_aside = False
        interrupt = self._interrupt[lane.name]
        if not self._cancel.is_set():
            interrupt.clear()

        def feed() -> Iterator[Radiograph]:
            while not stepped_aside:
                taken = self._take(lane, idle=not claimed)
                if taken is None:
                    return
                claimed.append(taken[0])
                self._started(taken[1], lane.name)
                yield taken[1]

        try:
            for result in lane.analyzer.analyze_many(feed(), lambda: lane.plan, with_heat_maps=self._with_heat_maps,
                                                     allow_fallback=self._allow_fallback, cancel=interrupt):
                index = claimed.popleft()
                failed = isinstance(result, StudyError) and isinstance(result.error, EdgeError)
                if failed or (isinstance(result, Findings) and result.mode is Mode.LOCAL_FALLBACK):
                    stepped_aside = self._step_aside(lane)
                if failed and stepped_aside:
                    self._give_back(lane, [index])
                    continue
                self._deliver(lane, index, result)
                if failed:  # no other lane could take it: the worklist ends with this study's failure
                    self._stop.set()
        except AnalysisCancelled:
            if self._cancel.is_set() or self._stop.is_set():
                raise
            # another lane delivered every study this one held: free for the next
        finally:
            self._give_back(lane, list(claimed))  # abandoned when the series ended early
        return not stepped_aside

    def _rejoin(self, lane: Lane) -> bool:
        """After its edge failed: wait, ask the server, and take studies again once it answers."""
        edge = lane.analyzer.edge
        while True:
            with self._state:
                deadline = time.monotonic() + self._retry_s
                while not (self._stop.is_set() or self._finished()) and time.monotonic() < deadline:
                    self._state.wait(timeout=deadline - time.monotonic())
                if self._stop.is_set() or self._finished():
                    return False
            try:
                if edge is not None:
                    edge.status()
            except EdgeError:
                continue
            with self._state:
                lane.active = True
            return True

    def _finished(self) -> bool:
        """Every study read has its result, and the input is over. Called with the state held."""
        return self._exhausted and not self._ready and not self._held

    # ------------------------------------------------------------ the shared state

    def _take(self, lane: Lane, idle: bool) -> tuple[int, Radiograph] | None:
        with self._state:
            if self._stop.is_set():
                return None
            if self._returned and self._may_take_back(lane):  # `_may_take_new`'s two cases, here taking the study
                index = self._returned.popleft()
                study = self._held[index].study
            elif self._ready and self._finishes_one_first(lane):
                index, study = self._ready.popleft()
                self._held[index] = _Held(study)
                self._state.notify_all()  # the reader may read on
            elif idle and (straggler := self._straggler(lane)) is not None:
                index, study = straggler, self._held[straggler].study
            else:
                return None
            self._held[index].lanes[lane.name] = time.perf_counter()
            return index, study

    def _may_take_new(self, lane: Lane) -> bool:
        """Whether there is a study nobody holds that this lane should take: one a failed edge gave back at once
        (it has waited already), a new one if this lane would finish one of those left first. Called with the
        state held."""
        if self._returned and self._may_take_back(lane):
            return True
        return bool(self._ready) and self._finishes_one_first(lane)

    def _finishes_one_first(self, lane: Lane) -> bool:
        """Whether, handing the studies nobody holds yet one by one to the lane that would finish each first, this
        lane gets one (True too while the number of studies or this lane's pace is not known yet). A lane whose
        pace is not known, that waits to join, stepped aside, or has stalled on what it holds is left out (this
        one too: it then takes one only when no other lane counts)."""
        if self._count is None or _alone(lane) is None:
            return True
        unread = 0 if self._exhausted else max(0, self._count - self._read)  # (an input may end early)
        left = unread + len(self._ready) + len(self._returned)
        now = time.perf_counter()
        finishes: list[tuple[float, int, float]] = []  # (when the lane would finish one more study, lane, interval)
        for number, other in enumerate(self.lanes):
            interval, alone = _interval(other), _alone(other)
            if (interval is None or alone is None or not other.active
                    or (other.joins is not None and not other.joins.is_set())):
                continue
            holds = self._expected_finishes(other, now)
            if float("inf") in holds.values():  # stalled: it may never finish what it holds (this lane too)
                continue
            # one more: an interval after what it holds, and no sooner than the quickest study it ever ran
            finish = max(max([now, *holds.values()]) + interval, now + alone)
            heapq.heappush(finishes, (finish, number, interval))
        for _ in range(left):
            if not finishes:
                return True
            finish, number, interval = heapq.heappop(finishes)
            if self.lanes[number] is lane:
                return True
            heapq.heappush(finishes, (finish + interval, number, interval))
        return False

    def _straggler(self, lane: Lane) -> int | None:
        """A study that other lanes hold and this one, free, would finish sooner (none while its own time
        per study is not known). Called with the state held."""
        if lane.seconds_per_study is None or not lane.active or self._ready or self._returned:
            return None
        now = time.perf_counter()
        expected: dict[int, float] = {}  # study → when the first of its holders is expected to finish it
        for other in self.lanes:
            if other is not lane:
                for index, finish in self._expected_finishes(other, now).items():
                    expected[index] = min(finish, expected.get(index, float("inf")))
        best, latest = None, now + (_alone(lane) or lane.seconds_per_study)
        for index, finish in expected.items():
            if lane.name not in self._held[index].lanes and finish > latest:
                best, latest = index, finish
        return best

    def _expected_finishes(self, lane: Lane, now: float) -> dict[int, float]:
        """When `lane` should finish each study it holds: one interval apart in the order it took them, from its
        last result or its first claim, and none sooner than the quickest it ever ran one after taking it (before
        its pace is known: its time per study after taking it). Infinity for a study held twice as long as expected
        (it stalled, or its device slowed down) or, before it finished one, for all. Called with the state held."""
        claims = sorted((held.lanes[lane.name], index) for index, held in self._held.items() if lane.name in held.lanes)
        interval, alone = _interval(lane), _alone(lane)
        if interval is None or alone is None:
            return {index: _expected(since, lane.seconds_per_study, now) for since, index in claims}
        finishes = {}
        start = max(lane.last_result or 0.0, claims[0][0]) if claims else now
        for position, (since, index) in enumerate(claims):
            finish = max(start + (position + 1) * interval, since + alone)
            finishes[index] = float("inf") if now - since > 2 * (finish - since) else finish
        return finishes

    def _deliver(self, lane: Lane, index: int, result: Findings | StudyError) -> None:
        with self._state:
            now = time.perf_counter()
            previous_result, lane.last_result = lane.last_result, now
            held = self._held.get(index)
            if held is None or lane.name not in held.lanes:
                return  # a stolen study's second result: the first was kept
            took = now - held.lanes[lane.name]
            if isinstance(result, Findings):  # (a failure can come at once: it says nothing of the lane's pace)
                lane.quickest = took if lane.quickest is None else min(lane.quickest, took)
                lane.turns.append(now - max(held.lanes[lane.name], previous_result or 0.0))
            previous = lane.seconds_per_study
            lane.seconds_per_study = took if previous is None else SMOOTHING * took + (1 - SMOOTHING) * previous
            lane.done += 1
            del self._held[index]
            self._results.put((index, result))
            for other in held.lanes:  # those running it too stop, when it was all they held
                if other != lane.name and not any(other in h.lanes for h in self._held.values()):
                    self._interrupt[other].set()
            self._state.notify_all()

    def _give_back(self, lane: Lane, indices: list[int]) -> None:
        """Studies this lane took and will not finish: to the others (unless another lane holds them)."""
        with self._state:
            for index in indices:
                held = self._held.get(index)
                if held is None:
                    continue
                held.lanes.pop(lane.name, None)
                if not held.lanes and index not in self._returned:
                    self._returned.append(index)
            self._state.notify_all()

    def _may_take_back(self, lane: Lane) -> bool:
        """Whether `lane` may take a study an edge gave back: without fallback, only another edge."""
        return self._allow_fallback or lane.analyzer.edge is not None

    def _step_aside(self, lane: Lane) -> bool:
        """The lane's edge failed: it steps aside if another lane is active that may take its studies (True)."""
        with self._state:
            if not any(other.active and self._may_take_back(other) for other in self.lanes if other is not lane):
                return False
            lane.active = False
            return True
