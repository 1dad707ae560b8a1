"""`analyze(radiograph, plan) -> Findings`: both models on one radiograph, split as the plan says.

For each model: stages [0, k) run here, the tensors crossing cut k go to the edge, stages [k, n) run
there. If the edge fails, stages [k, n) run here instead and the result says why (`local-fallback`):
a study is never lost. Pre- and post-processing always run here.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from inference.config import MANUFACTURER, Device, DeviceKind, ModelKind, Runtime, WireFormat
from inference.edge.client import LINK_FAILURES, EdgeClient, EdgeError, EdgeFailure, EdgeGroup, EdgeReply
from inference.edge.halo import detect_on_bands
from inference.models.bands import BandSplit, band_split
from inference.models.classifier import CHESTXRAY14, CheXNet, ClassifierConfig
from inference.models.detector import DetectorConfig, YoloDetector
from inference.models.findings import WORKSTATION, ActivationMaps, Detection, Findings, Mode, ModelRun
from inference.models.halo import HaloBand, halo_part_spec
from inference.models.parts import EdgePartSpec, band_part_spec, kind_of, part_spec, tensor_name
from inference.models.postprocess import calibrate, decode_detections
from inference.models.preprocess import CropGeometry, Letterbox, classifier_crops, letterbox
from inference.models.stages import INPUT, StagedModel
from inference.models.weights import LoadedWeights, data_dir, load_classifier, load_detector
from inference.models.wire import encode
from inference.planning.plan import ModelPlan, Plan
from inference.planning.planner import analysis_input
from inference.runtimes.local import (
    HEAD_RUNTIMES,
    BuildPending,
    ChoiceStopped,
    LocalSession,
    NotBuilt,
    choose_runtime,
    detections_in_input,
    head_session,
    keep_head_timing,
    kept_head_timing,
    known_runtime,
    medians_in_turns,
    open_runtime,
)
from viewer.display import render_8bit
from viewer.errors import RadiographError
from viewer.radiograph import Radiograph


def _article(code: str) -> str:
    """"an XA", "an MR", "a CT", "a US": as the letters are spoken."""
    return "an" if code[:1] in "AEFHILMNORSX" and code[:1] else "a"


@dataclass(frozen=True)
class ModelChoice:
    """Which models and weights to run (None = demo weights)."""

    detector_weights: str | os.PathLike[str] | None = None
    classifier_weights: str | os.PathLike[str] | None = None
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    device: Device = Device()
    runtime: Runtime = Runtime.TORCH  # whole-model local runs; AUTO measures, per model

    def __post_init__(self) -> None:  # a command line's or a setting's text: checked here, once
        object.__setattr__(self, "device", Device.parse(self.device))
        try:
            object.__setattr__(self, "runtime", Runtime(self.runtime))
        except ValueError:
            raise ValueError(f"runtime must be one of {', '.join(r.value for r in Runtime)}, "
                             f"got {self.runtime!r}") from None

    @property
    def torch_device(self) -> torch.device:
        if self.device.kind is DeviceKind.AUTO:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(str(self.device))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA was asked for, but this PyTorch build or machine has no CUDA device")
        return device


class AnalysisCancelled(Exception):
    """The user cancelled; nothing is reported."""


# What the models read: projection radiographs (computed and digital radiography; DR and RG as some systems write
# them), and images that do not say what they are — PNG, JPEG, TIFF, and DICOM "OT" (often a digitised film).
RADIOGRAPHY = frozenset({"CR", "DX", "DR", "RG", "OT", ""})


class NotAChestRadiograph(RadiographError):
    """A study the models were not made for (a CT, MR, ultrasound, mammogram, segmentation…): its findings would
    mean nothing, so it is not analysed (and no report is written); the viewer still shows it."""


# Body Part Examined values (DICOM CID 4031 and their usual spellings) that name a radiograph of something else than
# the chest. Only those are refused: the attribute is often missing or free text ("THORAX", "PORTABLE"), and a chest
# film must not be turned away for it.
NOT_CHEST = ("ABDOMEN", "PELVIS", "HIP", "KNEE", "ANKLE", "FOOT", "HEEL", "TOE", "HAND", "FINGER", "THUMB", "WRIST",
             "ELBOW", "FOREARM", "HUMERUS", "SHOULDER", "FEMUR", "TIBIA", "FIBULA", "LEG", "ARM", "PATELLA", "SKULL",
             "HEAD", "BRAIN", "FACE", "JAW", "MANDIBLE", "SINUS", "NECK", "CSPINE", "LSPINE", "SSPINE", "SACRUM",
             "COCCYX", "BREAST", "EXTREMITY")


def check_in_scope(radiograph: Radiograph) -> None:
    """Raise `NotAChestRadiograph` for a DICOM image of another modality than radiography, or a radiograph whose
    Body Part Examined names another part of the body than the chest."""
    modality = radiograph.info.modality.strip().upper()
    if radiograph.file_format == "DICOM" and modality not in RADIOGRAPHY:
        raise NotAChestRadiograph(f"{_article(modality)} {modality} image, not a chest radiograph: the models read CR "
                                  "and DX radiographs only", radiograph.path)
    header = radiograph.header
    if header is not None and str(header.get("Manufacturer", "")).strip() == MANUFACTURER \
            and str(header.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        raise NotAChestRadiograph("an annotated copy of AI results (MedEdge's Secondary Capture), not the "
                                  "radiograph: analyse the original", radiograph.path)
    part = radiograph.info.body_part.strip().upper()
    compact = part.replace(" ", "").replace("_", "")
    if compact.startswith(NOT_CHEST) and "CHEST" not in compact and "THORAX" not in compact:  # (NECKCHEST is chest)
        raise NotAChestRadiograph(f"a radiograph of the {part.lower()} (Body Part Examined), not of the chest: the "
                                  "models read chest radiographs only", radiograph.path)


@dataclass(frozen=True)
class StudyError:
    """A study of a series that could not be loaded or analysed, in its place among the results."""

    path: str
    error: Exception


# LINK_FAILURES (edge.client) mean the server cannot be reached at all (not e.g. a missing model): the other
# model of the same study does not try again.
# Studies whose local stages are done before the oldest is finished, in a pipelined series: with two,
# the link (sending one) and the edge (computing another) work at once, beside the workstation.
AHEAD = 2
# A request's timeout: the settings' timeout (an edge that does not answer a lone request within it is taken
# for down) plus this many times the expected edge time of the requests queued ahead of it, of its own, and of
# the studies a pipelined series may send while it is out (the edge batches them with it, or shares its cores
# among them) — a series queues requests on purpose, and must not give up the edge for the wait it planned.
# Before any time is known (a fixed split, before its first reply), each request ahead or joining counts as the
# settings' timeout (not after a timeout of that part: then the bare timeout, until a reply comes).
QUEUE_MARGIN = 2.0


@dataclass(frozen=True)
class _Timed:
    """An edge reply, and how long its request took: in all, and with the part to itself."""

    reply: EdgeReply
    round_trip_ms: float  # sent → reply, waiting behind this series' earlier requests for the same part included
    service_ms: float     # from when the part finished the request before it (or from sending) to the reply
    band_servers: tuple[str, ...] = ()  # the edges that ran the bands of a split with rows swapped between them


@dataclass(frozen=True)
class _Banded:
    """How the bands of a spatial split ran: the wait for the edges' bands, split into compute and the rest."""

    edge_ms: float       # the slowest band's compute on its edge (within the wait)
    transfer_ms: float   # the rest of the wait
    servers: tuple[str, ...]
    error: EdgeError | None  # the first band that failed on the edge (it ran here instead)


@dataclass
class _Step:
    """One model after its local stages: the tensors kept here and the edge's reply to come."""

    model: StagedModel
    cut: int
    features: int | None  # CheXNet's feature stage, when heat maps are wanted
    here: dict[int, torch.Tensor]
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # set when the whole model ran here
    reply: Future | None = None  # of a _Timed
    local_ms: float = 0.0  # stages run here and the encoding of what crosses the cut
    bands: _Banded | None = None  # how stages [0, cut) ran on bands of the image, in a spatial split
    runtime: Runtime = Runtime.TORCH  # what ran the stages here: the model's runtime where it runs them
    batch: np.ndarray | None = None  # the model's input, kept where that runtime ran stages [0, cut): a fallback
    #                                  runs the whole model on it, as a local run would

    def link_down(self) -> str | None:
        """Why the edge could not be reached at all, if this step's request already failed that way."""
        if self.reply is None or not self.reply.done() or not isinstance(self.reply.exception(), EdgeError):
            return None
        error = self.reply.exception()
        return str(error) if isinstance(error, EdgeError) and error.failure in LINK_FAILURES else None


@dataclass
class _Begun:
    """A study whose local stages are done and whose edge requests are under way."""

    radiograph: Radiograph
    plan: Plan
    box_geometry: Letterbox
    crop_geometry: CropGeometry
    started: float
    preprocessed: float
    steps: dict[ModelKind, _Step]


@dataclass
class _Run:
    """How one model's stages ran."""

    outputs: dict[str, np.ndarray]
    local_ms: float = 0.0     # stages run here, a fallback's included
    transfer_ms: float = 0.0  # the request's own time on the link and the serve path (service − edge compute)
    edge_ms: float = 0.0      # the edge's compute, as the edge reports it
    queued_ms: float = 0.0    # waiting behind this series' earlier requests to the same part
    used_edge: bool = False
    server: str = ""          # the edge server that answered
    band_servers: tuple[str, ...] = ()  # the edge servers that ran bands of a spatial split
    ran_here: bool = True     # any of its stages ran on this workstation
    fallback_reason: str | None = None
    link_down: bool = False  # the server could not be reached at all (not e.g. a missing model)

    @property
    def model_ms(self) -> float:
        """This model's own time: what the planner predicts (a pipelined series' queueing left out)."""
        return self.local_ms + self.transfer_ms + self.edge_ms


def _abandon(pending: Iterable[_Begun | StudyError]) -> None:
    """The studies of a series that ended early: requests not yet sent are dropped and those out are waited
    for (each within its timeout), so that none outlives the series on the edge or its connection."""
    replies = [step.reply for entry in pending if isinstance(entry, _Begun)
               for step in entry.steps.values() if step.reply is not None]
    wait([reply for reply in replies if not reply.cancel()])


def _call_now(function, *args) -> Future:
    """`function(*args)` run here and now, as a finished Future (the sequential path)."""
    future: Future = Future()
    try:
        future.set_result(function(*args))
    except Exception as exc:  # handed to whoever reads the result, as a pool's Future would
        future.set_exception(exc)
    return future


def _raise(error: Exception):
    raise error


def _cancel_check(cancel: threading.Event | None):
    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise AnalysisCancelled("analysis cancelled")
    return check


@dataclass
class _HeadBuilds:
    """The stages before a cut that a calibrated INT8 runtime builds in the background, one cut after the other
    (each runs the model on the site's radiographs, held in memory meanwhile), by one thread while any is waiting;
    shared by an analyzer's lanes (changed under its `_heads_lock`; read from a copy)."""

    pending: list[tuple[StagedModel, int]] = field(default_factory=list)  # the first one under way
    thread: threading.Thread | None = None


@dataclass
class _PendingChoice:
    """auto's background runtime choice: the models it is for, and its thread once started (by the first analysis)."""

    models: list[tuple[ModelKind, StagedModel, str]]
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)  # set: it ends at its next step
    done: threading.Event = field(default_factory=threading.Event)  # chosen, and the stages built after it


class Analyzer:
    """Both models loaded once; `analyze` may be called from any thread (one analysis at a time)."""

    def __init__(self, choice: ModelChoice = ModelChoice(), edge: EdgeClient | EdgeGroup | None = None,
                 choose_in_background: bool = False) -> None:
        """`choose_in_background`: where `auto` has not chosen a model's runtime on this machine yet (or a library
        changed), the model runs on PyTorch meanwhile and the choice — export, INT8 build, gate, timing: minutes on
        a slow workstation — is made in a thread from the first analysis on (`start_runtime_choice`; what a session
        times before it, this workstation's stage profile, on a quiet CPU), `runtimes_ready` set when done; else
        before this returns."""
        self.choice = choice
        self.edge = edge
        self.device = choice.torch_device
        self.detector: YoloDetector
        self.detector, self.detector_source = load_detector(choice.detector, choice.detector_weights)
        self.classifier: CheXNet
        self.classifier_weights: LoadedWeights
        self.classifier, self.classifier_weights = load_classifier(choice.classifier, choice.classifier_weights)
        # channels-last: 1.06x (detector) and 1.27x (classifier) faster in eager mode on this CPU, results equal
        # to float rounding (bench/bench_torch_eager.py, docs/benchmarks.md)
        # Module.to takes memory_format (torch's own stubs leave it out)
        self.detector.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.classifier.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.onnx: dict[ModelKind, LocalSession] = {}  # models run whole here on another runtime than torch
        self.runtimes = dict.fromkeys(ModelKind, Runtime.TORCH)  # the local runtime of each whole model
        self._heads: dict[tuple[ModelKind, int], LocalSession] = {}  # stages [0, cut) on the model's runtime
        self._heads_lock = threading.Lock()  # shared by the lanes of a worklist, like the models; guards…
        self._head_locks: dict[tuple[ModelKind, int], threading.Lock] = {}  # … one per cut: built one at a time
        self._head_builds = _HeadBuilds()  # … calibrated INT8 ones built in the background
        # PyTorch runs these: they could not be exported or compiled, or (auto) were not faster on the runtime
        self._heads_refused: set[tuple[ModelKind, int]] = set()
        self._heads_measured = choice.runtime is Runtime.AUTO  # auto keeps only what it measured faster
        self.head_times: dict[tuple[ModelKind, int], float] = {}  # ms of the stages before a cut, where auto measured
        self._split_cuts: set[tuple[ModelKind, int, bool]] = set()  # (model, cut, heat maps) of the splits run so far
        folder = self._runtime_folder = data_dir() / "local-onnx"
        self.runtimes_ready = threading.Event()  # every model's runtime is the one asked for (auto: chosen)
        unchosen: list[tuple[ModelKind, StagedModel, str]] = []  # auto's choice made in the background
        if choice.runtime is not Runtime.TORCH:
            folder.mkdir(parents=True, exist_ok=True)
            unbuilt: list[NotBuilt] = []
            for name, model, weights in ((ModelKind.DETECTOR, self.detector, self.detector_source),
                                         (ModelKind.CLASSIFIER, self.classifier, self.classifier_weights.source)):
                if choose_in_background and choice.runtime is Runtime.AUTO and self.device.type == "cpu":
                    known = known_runtime(model, weights, folder)
                    if known is None:
                        unchosen.append((name, model, weights))
                    elif known[1] is not None:
                        self.onnx[name], self.runtimes[name] = known[1], known[1].runtime
                    continue
                # auto: the fastest that passes the fidelity gate; an explicit one that fails it raises
                try:
                    session = open_runtime(model, weights, folder, choice.runtime, self.device)
                except NotBuilt as exc:
                    # Models are pruned one by one (a detector's distillation takes hours on a CPU): one without
                    # a pruned copy runs unpruned, the reference, and its results say so. Any other runtime
                    # asked for must exist for both.
                    if choice.runtime is not Runtime.PRUNED:
                        raise
                    unbuilt.append(exc)
                    continue
                if session is not None:
                    self.onnx[name], self.runtimes[name] = session, session.runtime
            if len(unbuilt) == len(ModelKind):
                raise NotBuilt("no pruned build of either model yet: make one with `python main.py models prune "
                               "--images DIR` (the site's radiographs; --models detector for the detector)")
        self._parts: dict[tuple[ModelKind, int, WireFormat], EdgePartSpec] = {}
        self._band_parts: dict[tuple[ModelKind, int, int], tuple[BandSplit, EdgePartSpec]] = {}
        self._halo_parts: dict[int, tuple[HaloBand, EdgePartSpec]] = {}
        self._own_state()
        self._choice = _PendingChoice(unchosen)  # one object shared with the lanes (with_edge)
        if not unchosen:
            self.runtimes_ready.set()
            self._choice.done.set()

    def start_runtime_choice(self) -> None:
        """Begin auto's background choice, if one is due (once; every analysis calls this)."""
        choice = self._choice
        with choice.lock:
            if choice.models and choice.thread is None:
                choice.thread = threading.Thread(target=self._choose_runtimes, args=(choice.models,),
                                                 name="runtime-choice", daemon=True)
                choice.thread.start()

    @property
    def choosing_runtimes(self) -> bool:
        """auto's background choice (and the FP32 stages it builds after; calibrated INT8 ones go to the builder,
        `building_heads`) has started and is not done."""
        return self._choice.thread is not None and not self._choice.done.is_set()

    def runtime_choice_done(self, timeout_s: float | None = None) -> bool:
        """Waits up to `timeout_s` for auto's background choice and the FP32 stages it builds after it (True: done,
        or none due); `heads_built` waits for the calibrated INT8 ones."""
        return self._choice.done.wait(timeout_s)

    def stop_runtime_choice(self, timeout_s: float) -> None:
        """Stop the background choice at its next step (an export, a build, a candidate), and the background builds
        of stages before a cut after the one under way, and wait up to `timeout_s` for them: a process should not
        exit under a thread in the middle of one. What is left is done at the next start."""
        self._choice.stop.set()
        deadline = time.monotonic() + timeout_s  # for both together
        for thread in (self._choice.thread, self._head_builds.thread):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _choose_runtimes(self, unchosen: list[tuple[ModelKind, StagedModel, str]]) -> None:
        """`auto`'s choice for these models, made while analyses run on PyTorch (they share this workstation's
        CPU: the candidates are timed in turns); each model moves to its runtime once chosen. Then the stages
        before the cuts this analyzer's splits ran on PyTorch meanwhile are built on the chosen runtime (exported,
        and timed against PyTorch by auto's rule: both kept on disk; a calibrated INT8 runtime's queued for the
        background builder), so that the next start finds them ready."""
        try:
            for name, model, weights in unchosen:
                try:
                    _, session = choose_runtime(model, weights, self._runtime_folder, self._choice.stop)
                except ChoiceStopped:
                    return
                except Exception as error:  # noqa: BLE001 — the model stays on PyTorch, the reference
                    logging.getLogger(__name__).warning("auto: the %s stays on PyTorch: %s", name.value, error)
                    continue
                if session is not None:  # the session first: a runtime named is one that can be run
                    self.onnx[name] = session
                    self.runtimes[name] = session.runtime
            self.runtimes_ready.set()  # the planner and this workstation's lane need no more
            for kind, cut, heat in sorted(self._split_cuts):  # (a copy: the lanes may add to it meanwhile)
                if self._choice.stop.is_set():
                    return
                try:
                    if self.runs_head(self.model(kind), cut, heat):  # a calibrated INT8 one queued for the builder
                        self.head(self.model(kind), cut, build=False)
                except Exception as error:  # noqa: BLE001 — a study that runs them builds them again, or says why
                    logging.getLogger(__name__).warning("stages before cut %d of the %s not built: %s", cut,
                                                        kind.value, error)
        finally:
            self.runtimes_ready.set()
            self._choice.done.set()

    def _own_state(self) -> None:
        """What one analyzer keeps for itself and its edge: one analysis at a time, its requests in flight."""
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # edge requests of a pipelined series
        self._flight_lock = threading.Lock()
        self._in_flight: dict[int, float] = {}      # request → its allowance (ms), for the timeouts of later ones
        self._request_ids = itertools.count()
        self._served_until: dict[str, float] = {}   # part → when its last reply came (service time of the next)
        self._service_ms: dict[str, float] = {}     # part → the last request's measured service time
        self._timed_out: set[str] = set()           # parts whose last request timed out (none answered since)

    def with_edge(self, edge: EdgeClient | EdgeGroup | None) -> Analyzer:
        """An analyzer sharing these models (loaded once) with `edge` (None: this workstation alone), that
        analyses at the same time as this one: a lane of a worklist spread over several devices."""
        lane = copy.copy(self)
        lane.edge = edge
        lane._own_state()
        return lane

    @property
    def weights(self) -> dict[ModelKind, str]:
        return {ModelKind.DETECTOR: self.detector_source, ModelKind.CLASSIFIER: self.classifier_weights.source}

    @property
    def stage_counts(self) -> dict[ModelKind, int]:
        return {ModelKind.DETECTOR: self.detector.stage_count, ModelKind.CLASSIFIER: self.classifier.stage_count}

    def model(self, kind: ModelKind) -> StagedModel:
        return self.detector if kind is ModelKind.DETECTOR else self.classifier

    def local_plan(self) -> Plan:
        return Plan(ModelPlan(self.detector.stage_count), ModelPlan(self.classifier.stage_count))

    def part(self, model: StagedModel, cut: int, wire: WireFormat) -> EdgePartSpec:
        """The edge part for stages [cut, n) of `model` (names, shapes, fingerprint); computed once."""
        weights = self.weights[kind_of(model)]
        key = (kind_of(model), cut, wire.encoding)  # int8+deflate: the int8 part
        if key not in self._parts:
            self._parts[key] = part_spec(model, cut, wire, weights)
        return self._parts[key]

    def analyze(self, radiograph: Radiograph, plan: Plan | None = None, with_heat_maps: bool = True,
                allow_fallback: bool = True, cancel: threading.Event | None = None) -> Findings:
        """Analyse; with `allow_fallback=False` an edge failure raises `EdgeError` instead.

        Setting `cancel` stops the analysis before its next stage with `AnalysisCancelled`.
        """
        self.start_runtime_choice()
        plan = self._checked(plan)
        check = _cancel_check(cancel)
        with self._lock, torch.inference_mode():
            # Edge requests made on the spot: each model's time is its own (what the planner predicts). With a
            # server for each model, both requests are out at once, one on each: the study finishes sooner.
            route = self._route(plan)
            send = self._requests().submit if route else _call_now
            begun = self._begin(radiograph, plan, with_heat_maps, check, send, 0, route)
            return self._complete(begun, allow_fallback, check)

    def _route(self, plan: Plan) -> dict[ModelKind, int]:
        """Each offloaded model's server in a group of edges, one each (the detector, the heavier, first) —
        empty unless both models go to the edge and enough of its servers work."""
        offloaded = [kind for kind, model_plan in plan.items() if model_plan.cut < self.stage_counts[kind]]
        if not isinstance(self.edge, EdgeGroup) or len(offloaded) < 2:
            return {}
        parts = [self.part(self.model(kind), plan[kind].cut, plan[kind].wire).name for kind in offloaded]
        servers = self.edge.assign(parts)
        return dict(zip(offloaded, servers, strict=True)) if servers else {}

    def _requests(self) -> ThreadPoolExecutor:
        """The threads edge requests wait in while this workstation goes on (made on first use)."""
        if self._pool is None:  # a request per model for each study under way
            self._pool = ThreadPoolExecutor(max_workers=2 * AHEAD, thread_name_prefix="edge-request")
        return self._pool

    def analyze_many(self, studies: Iterable[Radiograph | StudyError], plan: Plan | Callable[[], Plan] | None = None,
                     with_heat_maps: bool = True, allow_fallback: bool = True,
                     cancel: threading.Event | None = None) -> Iterator[Findings | StudyError]:
        """Analyse a series, pipelined: the local stages of the next studies run while the edge works.

        Results come in input order, up to AHEAD studies behind the input (none behind when a study's plan
        runs everything here: pipelining would only delay its result). Edge requests go out from a small
        thread pool (a blocking gRPC call releases the interpreter), so the workstation's stages overlap the
        edge's compute and the transfer, and with two studies ahead the transfer of one overlaps the edge's
        compute of the other; each study's `total` time then includes that overlap. A study that
        did not load (a `StudyError` in the input) or whose analysis failed comes out as a `StudyError` in its
        place. An edge failure with `allow_fallback=False` comes out as that study's `StudyError` and ends
        the series; cancelling raises `AnalysisCancelled`. `plan` may be a function: it is asked before each
        study (the planner may re-plan between studies).
        """
        self.start_runtime_choice()
        check = _cancel_check(cancel)
        current = plan if callable(plan) else lambda: plan
        send = self._requests().submit
        pending: deque[_Begun | StudyError] = deque()
        depth = AHEAD  # studies begun ahead of the one finishing; none when everything runs here (no gain)
        try:
            for study in itertools.chain(studies, (None,)):  # None: the input is over, finish the rest
                if isinstance(study, StudyError):
                    pending.append(study)
                elif study is not None:
                    planned = current()
                    try:
                        depth = AHEAD if planned is not None and self._edge_times_known(planned) else 0
                    except ValueError:  # a plan that cannot run: the study's StudyError below says why
                        depth = 0
                    with self._lock, torch.inference_mode():
                        pending.append(self._guarded(
                            study.path, lambda study=study, planned=planned, depth=depth: self._begin(
                                study, self._checked(planned), with_heat_maps, check, send, depth)))
                while pending and (study is None or len(pending) > depth or isinstance(pending[-1], StudyError)):
                    check()  # cancelled: no further result, even of a study whose stages all ran already
                    result = self._finish(pending[0], allow_fallback, check)
                    ends = isinstance(result, StudyError) and isinstance(result.error, EdgeError)
                    if not ends:  # an edge failure's study stays: its other model's request is abandoned too
                        pending.popleft()
                    yield result
                    if ends:
                        return
        finally:  # ended early (an edge failure, cancelled, or the caller stopped reading): nothing left behind
            _abandon(pending)

    def _edge_times_known(self, plan: Plan) -> bool:
        """`plan` uses the edge, and what each of its requests takes there is known (planned, or measured on a
        reply). Until then a series runs one study at a time: a request queued behind others whose time nobody
        knows could only be given a guess of a timeout — an edge that never answers would be waited for that many
        times over before the first study falls back."""
        if not plan.uses_edge(self.stage_counts):
            return False
        # (the requests of a spatial split's bands are left out: a study waits for its bands within its own stages,
        # no later study queues behind them; the part after the bands' cut counts like any other)
        return all(self._expected_ms(self.part(self.model(kind), model_plan.cut, model_plan.wire), model_plan) > 0
                   for kind, model_plan in plan.items() if model_plan.cut < self.stage_counts[kind])

    def _finish(self, entry: _Begun | StudyError, allow_fallback: bool, check) -> Findings | StudyError:
        if isinstance(entry, StudyError):
            return entry
        with self._lock, torch.inference_mode():
            return self._guarded(entry.radiograph.path, lambda: self._complete(entry, allow_fallback, check))

    @staticmethod
    def _guarded(path: str, step):
        """`step()`, or a StudyError for this study (an EdgeError gets here only with allow_fallback=False)."""
        try:
            return step()
        except AnalysisCancelled:
            raise
        except Exception as exc:  # one study's failure must not stop the others
            return StudyError(path, exc)

    def _checked(self, plan: Plan | None) -> Plan:
        plan = plan or self.local_plan()
        if plan.uses_edge(self.stage_counts) and self.edge is None:
            raise ValueError("this plan sends stages to the edge, but no edge server is configured")
        for kind, model_plan in plan.items():
            model = self.model(kind)
            if model_plan.cut < model.stage_count:
                self.part(model, model_plan.cut, model_plan.wire)  # computed once, outside the timings
            if model_plan.bands:
                if self.edge is None:
                    raise ValueError("a spatial split sends bands to the edge, but no edge server is configured")
                self.band_part(model, model_plan.cut, model_plan.bands)
            if model_plan.halo:
                if kind is not ModelKind.DETECTOR or model_plan.cut != 0 or model_plan.wire is not WireFormat.FP32:
                    raise ValueError("a split with rows swapped between edges runs the whole detector there, in FP32")
                if not isinstance(self.edge, EdgeGroup) or len(self.edge.clients) < model_plan.halo:
                    raise ValueError(f"a split into {model_plan.halo} bands needs as many edge servers")
                self.halo_part(model_plan.halo)
        return plan

    def halo_part(self, count: int) -> tuple[HaloBand, EdgePartSpec]:
        """The detector as each of `count` bands runs it with rows swapped between edges, and its halo part;
        computed once. ValueError where its bands would be too thin."""
        if count not in self._halo_parts:
            band = HaloBand(self.detector)
            self._halo_parts[count] = band, halo_part_spec(band, count, self.weights[ModelKind.DETECTOR])
        return self._halo_parts[count]

    def band_part(self, model: StagedModel, cut: int, count: int) -> tuple[BandSplit, EdgePartSpec]:
        """The split of stages [0, cut) of the detector into `count` bands, and its band part; computed once.
        ValueError when they cannot be split so (the receptive field reaches across the image)."""
        key = (kind_of(model), cut, count)
        if key not in self._band_parts:
            if not isinstance(model, YoloDetector):
                raise ValueError("a spatial split is made for the detector's first stages")
            split = band_split(model, cut, count, model.config.input_size)
            if split is None:
                raise ValueError(f"the detector's stages before cut {cut} cannot be split into {count} bands at "
                                 f"{model.config.input_size} px: their receptive field reaches across the image, or "
                                 "the size does not divide into that many bands on their largest stride")
            self._band_parts[key] = split, band_part_spec(model, cut, split.rows, self.weights[kind_of(model)])
        return self._band_parts[key]

    def _banded(self, model: StagedModel, image: torch.Tensor, plan: ModelPlan,
                check) -> tuple[dict[int, torch.Tensor], _Banded]:
        """Stages [0, cut) on the bands of `image`: one band per working edge server (the fastest for it first),
        those left over here meanwhile, then joined at the cut. A band whose edge fails runs here too."""
        split, spec = self.band_part(model, plan.cut, plan.bands)
        edge = self.edge
        assert edge is not None  # _checked
        bands = split.bands(image)
        error: EdgeError | None = None
        servers: list[int | None] = [None]  # one edge server of its own
        if isinstance(edge, EdgeGroup):
            servers = next((list(chosen) for m in range(split.count, 0, -1)
                            if (chosen := edge.assign([spec.name] * m))), [])
        if not servers:  # every server of the group set aside: all bands here, and the result says why
            error = EdgeError(EdgeFailure.UNREACHABLE, "no edge server is working: the bands ran here")
        names = tuple(t.name for t in spec.outputs)
        timeout_s = edge.settings.timeout_s + QUEUE_MARGIN * plan.remote_ms / 1e3

        def request(band: torch.Tensor, server: int | None) -> EdgeReply:
            tensors = {"image": band.cpu().numpy()}
            if isinstance(edge, EdgeGroup):
                return edge.infer(spec, tensors, names, None, timeout_s, first=server)
            return edge.infer(spec, tensors, names, None, timeout_s)

        pool = self._requests()
        out = {i: pool.submit(request, bands[i], server) for i, server in enumerate(servers)}
        parts: dict[int, dict[int, torch.Tensor]] = {}
        for i in range(len(servers), split.count):  # the bands no edge takes
            parts[i] = model.run_stages({INPUT: bands[i]}, 0, plan.cut, before_stage=check)
        waiting = time.perf_counter()
        wait(out.values())
        waited_ms = (time.perf_counter() - waiting) * 1e3
        edge_ms = 0.0
        used: list[str] = []
        for i, future in out.items():
            try:
                reply: EdgeReply = future.result()
            except EdgeError as exc:  # this band runs here; the result says why
                error = error or exc
                parts[i] = model.run_stages({INPUT: bands[i]}, 0, plan.cut, before_stage=check)
                continue
            edge_ms, used = max(edge_ms, reply.edge_ms), [*used, reply.server]
            parts[i] = {index: self._tensor(reply.outputs[tensor_name(index)].copy())  # gRPC gives read-only arrays
                        for index in model.crossing(plan.cut)}
        edge_ms = min(edge_ms, waited_ms)
        joined = split.join([parts[i] for i in range(split.count)])
        return joined, _Banded(edge_ms, waited_ms - edge_ms, tuple(dict.fromkeys(used)), error)

    def _begin(self, radiograph: Radiograph, plan: Plan, with_heat_maps: bool, check, send,
               sent_after: int, route: Mapping[ModelKind, int] = MappingProxyType({})) -> _Begun:
        """Preprocess, then each model's local stages; the request with what crosses a cut is run by `send`
        (now, or in the pool) and returns a Future — on the server of the group `route` names for the model,
        if any. Up to `sent_after` more studies' requests may follow while this study's are out (their
        timeouts allow for them)."""
        check_in_scope(radiograph)
        started = time.perf_counter()
        joining_ms = sent_after * sum(self._allowance_ms(self.part(self.model(kind), model_plan.cut, model_plan.wire),
                                                         model_plan)
                                      for kind, model_plan in plan.items() if model_plan.cut < self.stage_counts[kind])
        (det_input, box_geometry), (cls_input, crop_geometry) = self._preprocess(radiograph)
        preprocessed = time.perf_counter()
        detector = self._local_part(self.detector, det_input, plan.detector, False, check, send, joining_ms, None,
                                    route.get(ModelKind.DETECTOR))
        # When the edge is down for the detector it is down for the classifier too: do not wait twice.
        classifier = self._local_part(self.classifier, cls_input, plan.classifier, with_heat_maps, check, send,
                                      joining_ms, detector.link_down(), route.get(ModelKind.CLASSIFIER))
        return _Begun(radiograph, plan, box_geometry, crop_geometry, started, preprocessed,
                      {ModelKind.DETECTOR: detector, ModelKind.CLASSIFIER: classifier})

    def _preprocess(self, radiograph: Radiograph):
        """(detector input, letterbox), (classifier crops, crop geometry) of one radiograph."""
        grey = render_8bit(radiograph)  # the file's own VOI and inversion: what the models were trained on
        det_config, cls_config = self.detector.config, self.classifier.config
        return (letterbox(grey, det_config.input_size),
                classifier_crops(grey, cls_config.resize, cls_config.input_size, cls_config.ten_crop,
                                 cls_config.in_channels, cls_config.normalisation))

    def model_inputs(self, radiograph: Radiograph) -> dict[ModelKind, torch.Tensor]:
        """Each model's input for this radiograph (the classifier's centre crop), on the model's device."""
        (det_input, _), (cls_input, crops) = self._preprocess(radiograph)
        centre = crops.centre_index
        return {ModelKind.DETECTOR: self._tensor(det_input),
                ModelKind.CLASSIFIER: self._tensor(cls_input[centre:centre + 1])}

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        """A model input batch on the models' device, in their memory format."""
        return torch.from_numpy(batch).to(self.device, memory_format=torch.channels_last)

    def _local_part(self, model: StagedModel, batch: np.ndarray, plan: ModelPlan, heat: bool, check, send,
                    joining_ms: float, edge_down: str | None, server: int | None = None) -> _Step:
        """Stages [0, k) here, then the tensors crossing cut k go to the edge (`send` returns a Future), to the
        group's `server` first when one is given.

        `edge_down` is the reason the edge just failed for the other model of this study: not tried again.
        """
        n, k = model.stage_count, plan.cut
        session = self.onnx.get(kind_of(model))
        # The edge already failed for the other model and the runtime would run stages [0, k): the whole model
        # runs on it now, as the fallback would after them.
        whole_here = k == n or (edge_down is not None and not plan.bands and self.runs_head(model, k, heat))
        if 0 < k < n and not plan.bands:
            self._split_cuts.add((kind_of(model), k, heat))
        # built (first time for a cut: exported and compiled; a calibrated INT8 one in the background, PyTorch
        # meanwhile) before the clock starts: not this study's local time
        head = (self.head(model, k, build=False) if not whole_here and not plan.bands and self.runs_head(model, k, heat)
                else None)
        started = time.perf_counter()
        features = model.features_stage if isinstance(model, CheXNet) and heat else None
        if whole_here and session is not None:  # the whole model here, on the faster runtime
            check()
            step = _Step(model, k, features, {}, outputs=session.run(batch),
                         local_ms=(time.perf_counter() - started) * 1e3, runtime=session.runtime)
            if k < n and edge_down is not None:  # the result says why the edge was not used
                step.reply = _call_now(_raise, EdgeError(EdgeFailure.UNREACHABLE, edge_down))
            return step
        banded = None
        if plan.bands:  # stages [0, k) on bands of the image over several devices (_checked: k in 1..n-1)
            here, banded = self._banded(model, self._tensor(batch), plan, check)
        elif head is not None:  # on the model's runtime (it returns only what crosses the cut: no heat-map features)
            check()
            crossing_here = head.run(batch)
            here = {i: torch.from_numpy(crossing_here[tensor_name(i)]) for i in model.crossing(k)}
        else:
            here = model.run_stages({INPUT: self._tensor(batch)}, 0, k,
                                    keep=[features] if features is not None and features < k else [],
                                    before_stage=check)
        crossing = (encode(plan.wire, {tensor_name(i): here[i].cpu().numpy() for i in model.crossing(k)})
                    if k < n else None)
        waited = banded.edge_ms + banded.transfer_ms if banded else 0.0
        step = _Step(model, k, features, here, local_ms=(time.perf_counter() - started) * 1e3 - waited, bands=banded,
                     runtime=head.runtime if head is not None else Runtime.TORCH,
                     batch=batch if head is not None else None)
        if crossing is not None:  # the request's own time is measured apart, by _send
            # (a split with rows swapped between edges: its timings kept under its own part's name)
            spec = self.halo_part(plan.halo)[1] if plan.halo else self.part(model, k, plan.wire)
            wanted = tuple(t.name for t in spec.outputs if t.name != "features" or features is not None)
            step.reply = (_call_now(_raise, EdgeError(EdgeFailure.UNREACHABLE, edge_down)) if edge_down
                          else self._send(send, spec, crossing, wanted, plan, joining_ms, server))
        return step

    def runs_head(self, model: StagedModel, cut: int, with_heat_maps: bool) -> bool:
        """Whether stages [0, cut) of a split (not a spatial one) run on the model's runtime rather than PyTorch:
        where it is one that runs them (HEAD_RUNTIMES: FP32, or calibrated INT8 once the cut's split passes the
        gate — `head` finds out), unless the heat maps need features from before the cut (that
        runtime returns only what crosses it)."""
        features = model.features_stage if isinstance(model, CheXNet) and with_heat_maps else None
        return (self.runtimes[kind_of(model)] in HEAD_RUNTIMES and 0 < cut < model.stage_count
                and (features is None or features >= cut) and (kind_of(model), cut) not in self._heads_refused
                and not self.head_pending(model, cut))

    def head(self, model: StagedModel, cut: int, build: bool = True) -> LocalSession | None:
        """The session that runs stages [0, cut) here on the model's runtime (`runs_head`), exported the first
        time and compiled once per cut; None (PyTorch runs them) where that failed (an INT8 head: its split
        failed the gate, or its radiographs are gone) or, when auto chose the
        runtime, where it is not faster than PyTorch on them — remembered for the cut (the timing kept on disk for
        this machine and these libraries). Without `build` (a study being analysed), a calibrated INT8 runtime's
        stages not built yet are quantised and gated in a background thread, and PyTorch runs them until then
        (None): that runs the model on the site's held-back radiographs, minutes for a detector."""
        kind = kind_of(model)
        if (kind, cut) in self._heads:  # (a read: no lock needed once built)
            return self._heads[(kind, cut)]
        if not build and self.head_pending(model, cut):
            return None
        with self._heads_lock:  # only to find the cut's own lock: a cut being built holds up no other
            lock = self._head_locks.setdefault((kind, cut), threading.Lock())
        with lock:
            if (kind, cut) in self._heads_refused:
                return None
            if (kind, cut) not in self._heads:
                try:
                    # the exporter traces, outside inference mode (analyze runs in it)
                    with torch.inference_mode(False):
                        session = head_session(model, self.weights[kind], self._runtime_folder, self.runtimes[kind],
                                               cut, build)
                except BuildPending:
                    self._build_head_in_background(model, cut)
                    return None
                except (RuntimeError, OSError, ValueError) as error:  # export check, compile, INT8 gate, disk
                    logging.getLogger(__name__).warning("stages before cut %d of the %s run in PyTorch: %s",
                                                        cut, kind.value, error)
                    self._heads_refused.add((kind, cut))
                    return None
                if self._heads_measured and not self._faster_than_torch(model, cut, session):
                    self._heads_refused.add((kind, cut))
                    return None
                self._heads[(kind, cut)] = session
            return self._heads[(kind, cut)]

    def head_pending(self, model: StagedModel, cut: int) -> bool:
        """The stages before `cut` wait for (or are under way in) the background builder."""
        return any(queued is model and pending == cut for queued, pending in tuple(self._head_builds.pending))

    def _build_head_in_background(self, model: StagedModel, cut: int) -> None:
        """Queue `head(model, cut)` for the background builder (once per cut; the builder started if none runs):
        the studies meanwhile run those stages in PyTorch; later ones use what it built, or keep PyTorch where it
        was refused (logged by `head`)."""
        kind, builds = kind_of(model), self._head_builds
        with self._heads_lock:
            if self.head_pending(model, cut) or self._choice.stop.is_set():
                return
            builds.pending.append((model, cut))
            if builds.thread is None:
                builds.thread = threading.Thread(target=self._build_heads, name="int8-stages", daemon=True)
                builds.thread.start()
        logging.getLogger(__name__).info("stages before cut %d of the %s: quantised and gated for %s in the "
                                         "background; PyTorch runs them until then", cut, kind.value,
                                         self.runtimes[kind].value)

    def _build_heads(self) -> None:
        """The background builder: the queued cuts one after the other, until none is left or it is stopped
        (`stop_runtime_choice`; the cut under way is finished)."""
        builds = self._head_builds
        while True:
            with self._heads_lock:
                if not builds.pending or self._choice.stop.is_set():
                    builds.pending.clear()
                    builds.thread = None
                    return
                model, cut = builds.pending[0]
            try:
                self.head(model, cut)
            except Exception as error:  # noqa: BLE001 — a thread's traceback would reach the user's terminal
                logging.getLogger(__name__).warning("stages before cut %d of the %s run in PyTorch: %s", cut,
                                                    kind_of(model).value, error)
                self._heads_refused.add((kind_of(model), cut))
            with self._heads_lock:
                builds.pending.pop(0)

    @property
    def building_heads(self) -> bool:
        """Some stages before a cut are being built in the background (`head`)."""
        return self._head_builds.thread is not None

    @property
    def heads_under_way(self) -> list[tuple[ModelKind, int]]:
        """The stages before a cut the background builder has yet to finish (model, cut), the one under way first."""
        return [(kind_of(model), cut) for model, cut in tuple(self._head_builds.pending)]

    def heads_built(self, timeout_s: float | None = None) -> bool:
        """Waits up to `timeout_s` (None: for as long as it takes) for the background builds of stages before a cut
        (True: none left)."""
        builder = self._head_builds.thread
        if builder is not None:
            builder.join(timeout_s)
        return not self.building_heads

    def _faster_than_torch(self, model: StagedModel, cut: int, session: LocalSession) -> bool:
        """Auto's rule for the stages before a cut, as for a whole model: the runtime only where measured faster
        (onnxruntime, faster than PyTorch on the whole detector here, is slower on its first stages). Logged."""
        kind = kind_of(model)
        kept = kept_head_timing(session)
        if kept is None:
            image = analysis_input(model)
            batch = np.ascontiguousarray(image.cpu().numpy())
            with torch.inference_mode():
                runs = {session.runtime: lambda: session.run(batch),
                        Runtime.TORCH: lambda: model.run_stages({INPUT: image}, 0, cut)}
                for run in runs.values():
                    run()  # warm-up
                times = medians_in_turns(runs)  # (auto's background choice builds these beside studies)
            on_runtime, on_torch = times[session.runtime], times[Runtime.TORCH]
            keep_head_timing(session, on_runtime, on_torch)
        else:
            on_runtime, on_torch = kept
        faster = on_runtime < on_torch
        logging.getLogger(__name__).info("stages before cut %d of the %s: %s %.0f ms, PyTorch %.0f ms%s: %s", cut,
                                         kind.value, session.runtime.value, on_runtime, on_torch,
                                         " (measured before on this machine)" if kept else "",
                                         f"run on {session.runtime.value}" if faster else "run in PyTorch")
        if faster:
            self.head_times[(kind, cut)] = on_runtime
        return faster

    def _expected_ms(self, spec: EdgePartSpec, plan: ModelPlan) -> float:
        """The edge's expected time for a request to `spec`: planned, or as the last one took if longer."""
        return max(plan.remote_ms, self._service_ms.get(spec.name, 0.0))

    def _allowance_ms(self, spec: EdgePartSpec, plan: ModelPlan) -> float:
        """What a request to `spec` may add to the wait of a request queued behind it or batched with it:
        QUEUE_MARGIN × its expected time; before anything is known of it (a fixed split has no prediction, and
        no reply has come yet: then only the other model of the same study follows it, see _edge_times_known),
        the settings' timeout, the most one request is given with nothing ahead — unless the part's last request
        timed out: an edge that does not answer is not waited for again and again."""
        expected = self._expected_ms(spec, plan)
        if expected > 0 or self.edge is None or spec.name in self._timed_out:
            return QUEUE_MARGIN * expected
        return self.edge.settings.timeout_s * 1e3

    def _send(self, send, spec: EdgePartSpec, crossing: dict[str, np.ndarray], wanted: tuple[str, ...],
              plan: ModelPlan, joining_ms: float, server: int | None = None) -> Future:
        """The edge request for one model of one study, run by `send`; its timeout set now: the settings'
        timeout, plus QUEUE_MARGIN × its own expected time, plus the allowances (`_allowance_ms`) of the requests
        in flight ahead of it and `joining_ms`, those of the requests that may be sent while it is out."""
        edge = self.edge
        if edge is None:
            raise ValueError("this plan sends stages to the edge, but no edge server is configured")
        own = QUEUE_MARGIN * self._expected_ms(spec, plan)
        with self._flight_lock:
            ahead = sum(self._in_flight.values())
            key = next(self._request_ids)
            self._in_flight[key] = self._allowance_ms(spec, plan)
        timeout_s = edge.settings.timeout_s + (ahead + own + joining_ms) / 1e3

        def request() -> _Timed:
            sent = time.perf_counter()
            servers: tuple[str, ...] = ()
            try:
                if plan.halo:  # the whole detector on bands, one per edge (_checked: a group with enough servers)
                    band, _ = self.halo_part(plan.halo)
                    on_bands = detect_on_bands(edge if isinstance(edge, EdgeGroup) else [edge], spec, band,
                                               torch.from_numpy(crossing["image"]), timeout_s)
                    servers = on_bands.servers
                    reply = EdgeReply({"output": on_bands.detections.numpy()}, on_bands.round_trip_ms,
                                      on_bands.edge_ms, servers[0])
                elif isinstance(edge, EdgeGroup):
                    reply = edge.infer(spec, crossing, wanted, plan.wire.compression, timeout_s, first=server)
                else:
                    reply = edge.infer(spec, crossing, wanted, plan.wire.compression, timeout_s)
            except EdgeError as error:
                if error.failure is EdgeFailure.TIMEOUT:
                    self._timed_out.add(spec.name)
                raise
            finally:
                done = time.perf_counter()
                with self._flight_lock:
                    began = max(sent, self._served_until.get(spec.name, 0.0))
                    self._served_until[spec.name] = done
            self._service_ms[spec.name] = (done - began) * 1e3
            self._timed_out.discard(spec.name)
            return _Timed(reply, (done - sent) * 1e3, (done - began) * 1e3, servers)

        def landed(_: Future) -> None:  # answered, failed, or dropped before it was sent
            with self._flight_lock:
                del self._in_flight[key]
        future = send(request)
        future.add_done_callback(landed)
        return future

    def _remote_part(self, step: _Step, allow_fallback: bool, check) -> _Run:
        """The edge's reply for stages [k, n); when the edge failed (or k = n) they run here."""
        model, n, k, features = step.model, step.model.stage_count, step.cut, step.features
        run = _Run(outputs=dict(step.outputs), local_ms=step.local_ms)
        if step.bands is not None:
            if step.bands.error is not None:
                if not allow_fallback:
                    raise step.bands.error
                run.fallback_reason = str(step.bands.error)
            run.band_servers = step.bands.servers
        band_ms = (step.bands.edge_ms, step.bands.transfer_ms) if step.bands is not None else (0.0, 0.0)
        if step.reply is not None:
            try:
                timed: _Timed = step.reply.result()
            except EdgeError as error:
                if not allow_fallback:
                    raise
                run.fallback_reason = str(error)
                run.link_down = error.failure in LINK_FAILURES
            else:
                run.outputs, run.used_edge, run.server = dict(timed.reply.outputs), True, timed.reply.server
                run.band_servers = run.band_servers or timed.band_servers
                run.ran_here = k > 0
                run.edge_ms = min(timed.reply.edge_ms, timed.service_ms)
                run.transfer_ms = timed.service_ms - run.edge_ms
                run.queued_ms = timed.round_trip_ms - timed.service_ms
        run.edge_ms += band_ms[0]
        run.transfer_ms += band_ms[1]
        here = step.here
        if not run.outputs and step.batch is not None:  # the edge failed after the model's runtime ran [0, k)
            started = time.perf_counter()
            check()
            run.outputs = self.onnx[kind_of(model)].run(step.batch)  # the whole model on it: what a local run gives
            run.local_ms += (time.perf_counter() - started) * 1e3
        elif not run.outputs:  # local only, or the edge failed: the remaining stages run here
            started = time.perf_counter()
            here.update(model.run_stages(here, k, n, keep=[features] if features is not None and features >= k else [],
                                         before_stage=check))
            name = "output" if isinstance(model, YoloDetector) else "probabilities"
            run.outputs[name] = here[n - 1].cpu().numpy()
            run.local_ms += (time.perf_counter() - started) * 1e3
        if features is not None and "features" not in run.outputs:
            run.outputs["features"] = here[features].cpu().numpy()
        return run

    def _complete(self, begun: _Begun, allow_fallback: bool, check) -> Findings:
        """Collect both models' remaining stages, then post-process into Findings."""
        runs = {name: self._remote_part(step, allow_fallback, check) for name, step in begun.steps.items()}
        detector, classifier = runs[ModelKind.DETECTOR], runs[ModelKind.CLASSIFIER]
        ran = time.perf_counter()
        det_config = self.detector.config
        detections = decode_detections(detector.outputs["output"][0], begun.box_geometry, det_config.classes,
                                       det_config.confidence, det_config.iou, det_config.max_detections)
        probabilities = classifier.outputs["probabilities"].mean(axis=0).astype(np.float64)  # ten-crop: average
        shown = self._shown_probabilities(probabilities)
        maps = None
        if "features" in classifier.outputs and begun.steps[ModelKind.CLASSIFIER].features is not None:
            centre = begun.crop_geometry.centre_index
            features = torch.tensor(classifier.outputs["features"][centre:centre + 1], device=self.device)
            session = self.onnx.get(ModelKind.CLASSIFIER) if begun.steps[ModelKind.CLASSIFIER].outputs else None
            head = None if session is None or session.cam_weight is None else torch.from_numpy(session.cam_weight)
            cams = self.classifier.class_activation_maps(features, head)[0].cpu().numpy()
            rows = [self.classifier.config.classes.index(name) for name in shown]
            maps = ActivationMaps(tuple(shown), cams[rows], begun.crop_geometry)
        finished = time.perf_counter()

        plan = begun.plan
        phase = lambda name: sum(getattr(r, name) for r in runs.values())  # noqa: E731
        reasons = list(dict.fromkeys(r.fallback_reason for r in runs.values() if r.fallback_reason))
        return Findings(
            path=begun.radiograph.path,
            detections=tuple(detections),
            probabilities=shown,
            models={kind: self._model_run(kind, plan[kind], begun.steps[kind].runtime, run) for kind, run in runs.items()},
            mode=self._mode(plan, runs),
            # each phase a measured duration; in a pipelined series they overlap other studies' phases
            timing_ms={"preprocess": (begun.preprocessed - begun.started) * 1e3, "local": phase("local_ms"),
                       "transfer": phase("transfer_ms"), "edge": phase("edge_ms"), "queued": phase("queued_ms"),
                       "postprocess": (finished - ran) * 1e3, "total": (finished - begun.started) * 1e3},
            fallback_reason="; ".join(reasons) or None,
            ran_on=tuple(dict.fromkeys([WORKSTATION] * any(r.ran_here for r in runs.values())
                                       + [server for r in runs.values()
                                          for server in (*r.band_servers, *([r.server] if r.server else []))])),
            activation_maps=maps,
        )

    def _model_run(self, kind: ModelKind, planned: ModelPlan, runtime: Runtime, run: _Run) -> ModelRun:
        """How the model ran: as planned, or, after a fallback, every stage from the failure on here (its cut is
        then the model's stage count, so the result does not claim a split that did not happen)."""
        n = self.stage_counts[kind]
        cut = n if run.fallback_reason else planned.cut
        return ModelRun(self.weights[kind], cut, runtime, planned.wire if cut < n else None, run.model_ms,
                        bands=(planned.bands or planned.halo) if run.band_servers and cut < n else 0)

    def _mode(self, plan: Plan, runs: dict[ModelKind, _Run]) -> Mode:
        if any(r.fallback_reason for r in runs.values()):
            return Mode.LOCAL_FALLBACK
        if not any(r.used_edge or r.band_servers for r in runs.values()):
            return Mode.LOCAL
        if plan.detector.cut == 0 and plan.classifier.cut == 0:
            return Mode.EDGE
        return Mode.DISTRIBUTED

    def decode_raw(self, raw: torch.Tensor) -> list[Detection]:
        """Detections in input pixels from the detector's raw output (the planner's fidelity gate)."""
        return detections_in_input(self.detector, raw.cpu().numpy())

    def _shown_probabilities(self, probabilities: np.ndarray) -> dict[str, float]:
        """The ChestX-ray14 findings this classifier predicts, in ChestX-ray14 order; others left out."""
        calibrated = calibrate(probabilities, self.classifier_weights.operating_points)
        by_name = dict(zip(self.classifier.config.classes, calibrated, strict=True))
        return {name: float(by_name[name]) for name in CHESTXRAY14
                if name in by_name and np.isfinite(by_name[name])}


_default: Analyzer | None = None
_default_lock = threading.Lock()


def analyze(radiograph: Radiograph, plan: Plan | None = None, analyzer: Analyzer | None = None) -> Findings:
    """Analyse with `analyzer`, or with a shared local demo-weights analyzer built on first use."""
    global _default
    if analyzer is None:
        with _default_lock:
            if _default is None:
                _default = Analyzer()
            analyzer = _default
    return analyzer.analyze(radiograph, plan)


__all__ = ["Analyzer", "Detection", "Findings", "ModelChoice", "StudyError", "analyze"]
