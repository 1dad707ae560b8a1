"""Cut planning: per model, the option (local only, full offload, or a cut with a wire format) with the
lowest predicted end-to-end latency on the machines and link at hand — or, for a series, the pair of
options with the highest pipelined throughput.

Predicted time of cut k with wire w = local stages [0, k) (measured per stage on this workstation,
cached per machine, runtime and input size and batch) + encoding the tensors crossing k in w (measured
here) + round trip (the probe's: a request through the serve path,
its fixed cost included) + bytes crossing k in w / bandwidth (both from the link probe) + the edge's
compute for part (k, w) + the outputs coming back. The edge's compute is measured on the part itself
(profiling requests when the plan is made, cached per server, part and weights); a part not measured yet
is predicted from this workstation's stage times scaled by the edge/local ratio of the parts that were.
The same requests measure the part's own serving cost beyond the probe's (its round trip less its compute,
the probe's round trip and its bytes at the probed bandwidth): a part's tensors cost more to hand over than
the probe's one, CheXNet's split at cut 7 about 3 ms on loopback.
For int8+deflate the bytes are the deflated int8 payload and the time to deflate here and inflate there
is added (both measured on the tensors crossing k), so compression is chosen only where the link is slow
enough for it to pay. Only parts the server has, and wire formats that pass the fidelity gate, are
chosen; the gate and the profiling run on the best-predicted options only, until one passes. A plan is
re-made when measured times drift from it.

A series (or a worklist) overlaps its studies, so what bounds it is the busiest device per study, counted with
the CPU that serving takes at either end, which one study alone hides in the link's time: here the gRPC client's
CPU per request and per MiB (measured by the link probe, over the cores this process may use); on the edge its
time per request when requests follow each other (a burst of requests to each profiled part: its compute plus
its gateway's, gRPC's and its backend's copies, on the edge's own cores).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from inference.config import ModelKind, WireFormat
from inference.edge.client import EdgeClient, EdgeError, EdgeReply
from inference.edge.halo import detect_on_bands
from inference.machine import usable_cores
from inference.models.bands import BandSplit, band_split
from inference.models.classifier import CheXNet
from inference.models.detector import YoloDetector
from inference.models.findings import Detection
from inference.models.halo import HaloBand
from inference.models.parts import (
    EdgePartSpec,
    band_parts_prefix,
    fingerprint_of,
    halo_part_name,
    identity_of,
    kind_of,
    part_name,
    sample_input,
    tensor_name,
)
from inference.models.stages import INPUT, StagedModel
from inference.models.wire import ENCODINGS, deflated, encode, round_trip
from inference.planning.plan import ModelPlan, Plan
from inference.runtimes.fidelity import PROBABILITY_TOLERANCE, boxes_match
from inference.runtimes.local import LocalSession, machine_key, median_ms
from viewer.radiograph import Radiograph

DRIFT = 1.5                   # re-plan when measured/predicted leaves [1/DRIFT, DRIFT] twice in a row
QUEUE_MS = 5.0                # … or when requests wait this long on average in the edge's queue
PROFILED_PARTS = 4            # per model and plan: edge parts measured before the best prediction is trusted
BURST = 3                     # requests sent at once to a profiled part: the edge's time per request when busy
# A worklist plan that keeps this workstation busier with the edges' studies is taken only when it is predicted
# this much faster: such plans, bound by the workstation's CPU, reached 85-95 % of their prediction against 95 %
# for full offload (docs/benchmarks.md, issue 22), and the clinician reads on that workstation meanwhile.
WORKSTATION_MARGIN = 0.10
# A single study stays here unless here is predicted more than this much slower than the edge: where the edge is no
# faster than this workstation every option is predicted within a few per cent of local, and the prediction's own
# error (a few per cent) then picked an offload measured 10 % slower (docs/benchmarks.md, issue 19) — for no gain,
# an edge shared with other workstations would be loaded and a study made to depend on the network.
OFFLOAD_MARGIN = 0.05
QUIET_S = 0.5                 # per try (3), how long a measurement waits for this workstation's requests on the edge to end
TIMED_REQUESTS = 3            # timed one after another, after a warm-up, for a part's compute
# kept per server: compute, time per request busy, and the serving cost beyond the probe's
EDGE_TIMES, EDGE_BUSY, EDGE_SERVING = "edge-parts.json", "edge-busy.json", "edge-serving.json"

_T = TypeVar("_T")


class PlanningStopped(Exception):
    """`Planner.stop` was set while it measured (its session is closing)."""


@dataclass(frozen=True)
class Option:
    model: ModelKind
    cut: int
    wire: WireFormat
    predicted_ms: float
    local_ms: float = 0.0     # stages here, encoding (and deflating): the workstation's share
    transfer_ms: float = 0.0  # round trip, bytes both ways, inflating there: the link's share
    edge_ms: float = 0.0      # the edge's compute (and the queue of other clients' requests)
    measured_edge: bool = False  # edge_ms from requests to this part, not scaled from others
    bands: int = 0            # stages [0, cut) on this many bands of the image, one per edge (a spatial split)
    halo: int = 0             # the whole detector on this many bands, one per edge, rows swapped between them
    # In a series, where the link's wait overlaps other studies but the CPU serving it does not: this
    # workstation's CPU for the request (the gRPC client, over its cores; inside transfer_ms for one study) …
    client_ms: float = 0.0
    busy_ms: float = 0.0      # … and the edge's time per request when busy (edge_ms and its serving); 0: edge_ms

    @property
    def edge_busy_ms(self) -> float:
        return max(self.busy_ms, self.edge_ms)

    @property
    def offloaded(self) -> bool:
        return self.transfer_ms > 0 or self.edge_ms > 0

    @property
    def model_plan(self) -> ModelPlan:
        return ModelPlan(self.cut, self.wire, remote_ms=self.transfer_ms + self.edge_ms, bands=self.bands,
                         halo=self.halo)


def workstation_share_ms(options: tuple[Option, ...]) -> float:
    """This workstation's CPU for one study sent to an edge (its stages, encoding, the gRPC client)."""
    return sum(o.local_ms + o.client_ms for o in options)


def series_bound_ms(options: tuple[Option, ...], workstation_ms: float = 0.0) -> float:
    """Time per study of a pipelined series: the workstation, the link and the edge each work on a different
    study, so a study costs the busiest of the three (summed over the models), not their sum; the workstation's
    share counts the CPU its gRPC client takes, the edge's the CPU serving takes there.
    `workstation_ms`: what the workstation does for every study whatever the plan (pre-processing)."""
    return max(workstation_ms + workstation_share_ms(options), sum(o.transfer_ms for o in options),
               sum(o.edge_busy_ms for o in options))


def study_preference(option: Option) -> float:
    """The order among one model's options for a study alone: the predicted time, an offload's counted
    OFFLOAD_MARGIN slower (so local wins what is predicted within that margin)."""
    return option.predicted_ms * (1 + OFFLOAD_MARGIN) if option.offloaded else option.predicted_ms


def worklist_preference(options: tuple[Option, ...], rate: float, fastest_rate: float) -> tuple[bool, float]:
    """The order among a worklist's plans (`rate`: studies/s predicted): those within WORKSTATION_MARGIN of the
    fastest first and, among them, the one taking the least of this workstation's CPU for the edges' studies."""
    return rate < fastest_rate / (1 + WORKSTATION_MARGIN), workstation_share_ms(options)


def worklist_rate(options: tuple[Option, ...], preprocess_ms: float, local_study_ms: float,
                  edges: int | Sequence[float]) -> float:
    """Studies per second of a worklist spread over edge servers running `options` and this workstation
    analysing whole studies of its own (`local_study_ms` each) on what the edge lanes leave of its CPU. `edges`:
    how many servers, each like the measured one, or each server's compute time relative to the measured one's
    (2.0: half as fast; infinity: down). An edge lane is bound by the busier of its link and its server (the
    workstation's share of its studies, here first, bounds all of them together)."""
    share_ms = preprocess_ms + workstation_share_ms(options)  # this workstation's, for an edge lane's study
    slowness = [1.0] * edges if isinstance(edges, int) else list(edges)
    transfer, compute = sum(o.transfer_ms for o in options), sum(o.edge_busy_ms for o in options)
    lanes = sum(1e3 / max(transfer, compute * factor) for factor in slowness) if transfer + compute > 0 else math.inf
    edge_rate = min(lanes, 1e3 / max(share_ms, 1e-3))
    left = max(0.0, 1.0 - edge_rate * share_ms / 1e3)  # of this workstation's CPU
    return edge_rate + left * 1e3 / local_study_ms


@dataclass(frozen=True)
class Deflate:
    """What deflating the int8 payload at one cut does, measured on this workstation."""

    ratio: float       # uncompressed / compressed bytes
    deflate_ms: float  # here, before sending
    inflate_ms: float  # the same inflate timed here (the planner scales it by the edge's speed)


def measure_deflate(payloads: list[dict[str, np.ndarray]]) -> Deflate:
    """Ratio and times of gRPC's deflate over the int8 payloads of some images (median of each)."""
    ratios, packs, unpacks = [], [], []
    for encoded in payloads:
        started = time.perf_counter()
        packed = deflated(encoded)
        packs.append((time.perf_counter() - started) * 1e3)
        started = time.perf_counter()
        size = len(zlib.decompress(packed))
        unpacks.append((time.perf_counter() - started) * 1e3)
        ratios.append(size / len(packed))
    return Deflate(statistics.median(ratios), statistics.median(packs), statistics.median(unpacks))


@dataclass
class LinkProfile:
    round_trip_ms: float
    mbit_s: float
    edge_ratio: dict[ModelKind, float]  # model → edge time / local time for the same stages (parts not measured)
    queue_ms: float = 0.0         # mean wait in the edge's queue, added to every offloaded option
    edge_part_ms: dict[str, float] = field(default_factory=dict)  # part → the edge's measured compute
    edge_busy_ms: dict[str, float] = field(default_factory=dict)  # part → its time per request in a burst
    # part → its round trip beyond its compute, the probe's round trip and its bytes at the probed bandwidth:
    # what handing its tensors over costs beyond the probe's one (signed: the probe's bandwidth is a rough one)
    edge_serving_ms: dict[str, float] = field(default_factory=dict)
    client_cpu_ms: float = 0.0          # the gRPC client's CPU here for a request (LinkMeasurement) …
    client_cpu_ms_per_mib: float = 0.0  # … and per MiB it carries either way
    cores: float = 1.0                  # that CPU spreads over the cores this process may use (usable_cores)

    def wire_ms(self, nbytes: float) -> float:
        """`nbytes` at the probed bandwidth."""
        return nbytes * 8 / (self.mbit_s * 1e3)

    def transfer_ms(self, part: str, nbytes: float) -> float:
        """A request to `part` carrying `nbytes` both ways: the probe's round trip, the bytes at the probed bandwidth
        and the part's own serving cost beyond the probe's (signed, so never below nothing in all)."""
        return max(self.round_trip_ms + self.wire_ms(nbytes) + self.edge_serving_ms.get(part, 0.0), 0.0)

    def client_ms(self, nbytes: float, requests: int = 1) -> float:
        """This workstation's time (its CPU over its cores) that the gRPC client takes for `requests` requests
        carrying `nbytes` in all."""
        return (requests * self.client_cpu_ms + nbytes / 2**20 * self.client_cpu_ms_per_mib) / self.cores


def _read_json(path: Path):
    """A kept profile, or None when it is missing or unreadable (it is then measured again)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=1))
    except OSError:
        pass  # a read-only data folder: measured again next time


def analysis_batch(model: StagedModel) -> int:
    """Images per analysis: CheXNet's ten crops when configured, else one."""
    return 10 if isinstance(model, CheXNet) and model.config.ten_crop else 1


def analysis_input(model: StagedModel) -> torch.Tensor:
    """The planner's sample input as an analysis gives it to the model: its batch, on its device,
    channels-last (Analyzer._tensor) — stage times depend on all three."""
    device = next(model.parameters()).device
    return sample_input(model, analysis_batch(model)).to(device, memory_format=torch.channels_last)


def local_stage_ms(model: StagedModel, repeats: int = 3, cache_dir=None) -> list[float]:
    """Median time of each stage on this workstation for this runtime, cached per machine and input size."""
    from inference.models.weights import data_dir

    device = next(model.parameters()).device
    weights = "any"  # stage times do not depend on the weights' values
    batch = analysis_batch(model)
    key = f"{machine_key()}-{device.type}-{kind_of(model).value}-channels-last-batch{batch}-" + "-".join(
        v for k, v in identity_of(model, weights) if k != "classes")
    path = (cache_dir or data_dir()) / "profiles" / (key.replace("/", "_") + ".json")
    kept = _read_json(path)
    if isinstance(kept, list) and len(kept) == model.stage_count:
        return [float(t) for t in kept]
    times: list[list[float]] = [[] for _ in range(model.stage_count)]
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass warms up and is not kept
            tensors = {INPUT: analysis_input(model)}
            for index in range(model.stage_count):
                started = time.perf_counter()
                tensors.update(model.run_stages(tensors, index, index + 1, keep=list(tensors)))
                times[index].append((time.perf_counter() - started) * 1e3)
    medians = [statistics.median(t[1:]) for t in times]
    _write_json(path, medians)
    return medians


def passes_fidelity(model: StagedModel, cut: int, wire: WireFormat, images: list[torch.Tensor],
                    decode=None) -> bool:
    """Outputs after the wire's round trip at `cut` stay within the gate on every calibration image."""
    if wire is WireFormat.FP32 or cut == model.stage_count:
        return True
    last = model.stage_count - 1
    with torch.inference_mode():
        for image in images:
            reference = model(image)
            crossing = model.run_stages({INPUT: image}, 0, cut)
            moved = {i: round_trip(wire, t) for i, t in crossing.items()}
            result = model.run_stages(moved, cut, model.stage_count)[last]
            if isinstance(model, CheXNet):
                if float((result - reference).abs().max()) > PROBABILITY_TOLERANCE:
                    return False
            elif decode is not None and not boxes_match(decode(reference), decode(result)):
                return False
    return True


class PlannedAnalyzer(Protocol):
    """What the planner needs of the analyzer it plans for (inference.analysis.analyzer.Analyzer)."""

    @property
    def detector(self) -> YoloDetector: ...

    @property
    def classifier(self) -> CheXNet: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def onnx(self) -> Mapping[ModelKind, LocalSession]: ...

    @property
    def weights(self) -> Mapping[ModelKind, str]: ...

    def model_inputs(self, radiograph: Radiograph) -> Mapping[ModelKind, torch.Tensor]: ...

    def part(self, model: StagedModel, cut: int, wire: WireFormat) -> EdgePartSpec: ...

    def band_part(self, model: StagedModel, cut: int, count: int) -> tuple[BandSplit, EdgePartSpec]: ...

    def halo_part(self, count: int) -> tuple[HaloBand, EdgePartSpec]: ...

    def decode_raw(self, raw: torch.Tensor) -> list[Detection]: ...

    def runs_head(self, model: StagedModel, cut: int, with_heat_maps: bool) -> bool: ...

    def head(self, model: StagedModel, cut: int, build: bool = True) -> LocalSession | None: ...

    def head_pending(self, model: StagedModel, cut: int) -> bool: ...

    @property
    def head_times(self) -> Mapping[tuple[ModelKind, int], float]: ...


@dataclass
class Planner:
    """Plans for an `Analyzer` with an edge; `plan()` measures (once, then from cache) and chooses."""

    analyzer: PlannedAnalyzer
    edge: EdgeClient
    calibration: list = field(default_factory=list)  # extra model-input images (real radiographs)
    link: LinkProfile | None = None
    options: dict[ModelKind, Option] = field(default_factory=dict)
    series_ms: float | None = None  # a series plan's predicted time per study (its bound); None: a study's plan
    cache_dir: Path | None = None  # where the profiles are kept (the data folder when None)
    with_heat_maps: bool = True  # the analyses fetch CheXNet's features from the edge (the viewer; not `infer`)
    preprocess_ms: float = 0.0  # a real study's pre-processing here (every plan's; a series' workstation share)
    others: tuple[EdgeClient, ...] = ()  # the group's other servers (the same parts): worklist lanes, bands
    _drift: dict[ModelKind, int] = field(default_factory=dict)
    _gate: dict[str, bool] = field(default_factory=dict)  # _gate_key → passes
    _deflate: dict[tuple[ModelKind, int], Deflate] = field(default_factory=dict)
    _local: dict[ModelKind, list[float]] = field(default_factory=dict)
    _whole: dict[ModelKind, float] = field(default_factory=dict)
    _heads: dict[tuple[ModelKind, int], float] = field(default_factory=dict)  # stages [0, cut) on the model's runtime
    _unservable: set[str] = field(default_factory=set)  # parts whose profiling request failed
    _crossings: dict[tuple[ModelKind, int], dict] = field(default_factory=dict)  # the sample input's tensors at a cut
    _encoding: dict[tuple[ModelKind, int, WireFormat], float] = field(default_factory=dict)  # ms to encode them here
    _server: str = ""     # address and Triton version: the key of the edge's cached part times
    _fresh: bool = False  # measure the edge's parts again (a drift): the cached times are not trusted
    _queue_mark: tuple[int, float] | None = None  # the edge's queue totals when the plan was made
    _own_queue_ms: float = 0.0  # this client's requests' wait behind each other since the mark
    _queue_ms: float = 0.0
    _slowness: list[float] = field(default_factory=list)  # each other server's compute / this one's (measured)
    _checks: int = 0  # how many options `_settled` has checked
    stop: threading.Event = field(default_factory=threading.Event)  # set: planning ends at its next measurement

    def learn_from(self, radiograph) -> None:
        """Use a real study for the fidelity gate and the deflate ratios, before the first plan: the planner's
        own sample image is smooth, and would make the wire look far more compressible than radiographs are."""
        if not self.calibration and not self.options:
            started = time.perf_counter()
            self.calibration = list(self.analyzer.model_inputs(radiograph).items())
            self.preprocess_ms = (time.perf_counter() - started) * 1e3

    def local_ms(self, name: ModelKind, model: StagedModel) -> list[float]:
        if name not in self._local:
            self._local[name] = local_stage_ms(model, cache_dir=self.cache_dir)
        return self._local[name]

    def whole_local_ms(self, name: ModelKind, model: StagedModel) -> float:
        """Local only: the stage profile under PyTorch, or the runtime that runs the whole model here
        (onnxruntime, INT8), measured once."""
        session = self.analyzer.onnx.get(name)
        if session is None:
            return sum(self.local_ms(name, model))
        if name not in self._whole:
            image = np.ascontiguousarray(analysis_input(model).cpu().numpy())
            self._whole[name] = median_ms(lambda: session.run(image))
        return self._whole[name]

    def head_ms(self, name: ModelKind, model: StagedModel, cut: int) -> float:
        """Stages [0, cut) here: PyTorch's stage profile or, where the model's runtime runs them (analyzer.head),
        that runtime's time: measured once `measure_head` ran for the cut, until then predicted by the whole
        model's speed-up over PyTorch."""
        local = self.local_ms(name, model)
        if not self._runs_head(model, cut):
            return sum(local[:cut])
        if (name, cut) in self._heads:
            return self._heads[(name, cut)]
        return sum(local[:cut]) * self.whole_local_ms(name, model) / sum(local)

    def _runs_head(self, model: StagedModel, cut: int) -> bool:
        return self.analyzer.runs_head(model, cut, self.with_heat_maps)

    def measure_head(self, name: ModelKind, model: StagedModel, cut: int) -> float:
        """Time stages [0, cut) on the model's runtime, on the analysis' input (once per cut). A calibrated INT8
        runtime's stages not built yet are built in the background (`Analyzer.head`): PyTorch's time meanwhile, not
        kept (`runs_head` is False until then, and the cut is measured once built)."""
        if (name, cut) not in self._heads:
            session = self.analyzer.head(model, cut, build=False)
            if session is None and self.analyzer.head_pending(model, cut):
                return sum(self.local_ms(name, model)[:cut])  # being built
            if session is None:  # could not be built: PyTorch runs these stages
                self._heads[(name, cut)] = sum(self.local_ms(name, model)[:cut])
                return self._heads[(name, cut)]
            image = np.ascontiguousarray(analysis_input(model).cpu().numpy())
            self._heads[(name, cut)] = (self.analyzer.head_times.get((name, cut))  # measured by auto's rule
                                        or median_ms(lambda: session.run(image)))
        return self._heads[(name, cut)]

    def _go_on(self) -> None:
        """Raise `PlanningStopped` when `stop` is set (between measurements: each is bounded)."""
        if self.stop.is_set():
            raise PlanningStopped("planning stopped")

    @property
    def servers(self) -> int:
        return 1 + len(self.others)

    def server_slowness(self) -> list[float]:
        """Each server's compute relative to the first's (1.0 for the first; infinity when it does not answer):
        measured once per link measurement on a part of each model the first was measured on (warm-up, then the
        median of 3), the median over the models."""
        if len(self._slowness) != self.servers:
            reference = self._reference_parts()
            self._slowness = [1.0]
            for client in self.others:
                ratios = []
                for spec, tensors in reference:
                    there = self._time_part(client, spec, tensors)
                    ratios.append(math.inf if there is None else there / self.measured.edge_part_ms[spec.name])
                self._slowness.append(statistics.median(ratios) if ratios else 1.0)
        return self._slowness

    def _reference_parts(self) -> list[tuple[EdgePartSpec, dict[str, np.ndarray]]]:
        """Per model, the part with the earliest cut measured on the first server, and its sample tensors."""
        chosen = []
        for name, model in self.models().items():
            measured = sorted((cut, wire) for cut in range(model.stage_count) for wire in ENCODINGS
                              if part_name(kind_of(model), cut, wire) in self.measured.edge_part_ms)
            if measured:
                cut, wire = measured[0]
                chosen.append((self.analyzer.part(model, cut, wire), encode(wire, self._crossing(name, model, cut))))
        return chosen

    def _time_part(self, client: EdgeClient, spec: EdgePartSpec, tensors: dict[str, np.ndarray]) -> float | None:
        """The edge's compute for one request to `spec` (a warm-up, then the median of 3); None when it fails."""
        replies, _ = self._requests(client, spec, tensors)
        return None if replies is None else statistics.median(reply.edge_ms for reply, _ in replies)

    def _alone(self, client: EdgeClient, measure: Callable[[], _T], sends: int) -> tuple[_T, bool]:
        """`measure()`, which sends `sends` requests through `client`, while no other request of this workstation
        is on that server: the analyses running beside the planner would share the edge's CPU and inflate what
        is measured. Up to 3 tries, each after waiting up to QUIET_S for the requests in flight to end (the last
        measures even when they did not: a busy worklist never leaves the server quiet); with it, whether that
        measurement had the server to itself (a failed one is not tried again)."""
        for attempt in range(3):
            self._go_on()
            deadline = time.monotonic() + QUIET_S
            while client.traffic()[1] and time.monotonic() < deadline:
                time.sleep(0.005)
            sent, in_flight = client.traffic()
            if in_flight and attempt < 2:
                continue
            result = measure()
            alone = not in_flight and client.traffic()[0] - sent == sends
            if alone or result is None:
                break
        return result, alone

    def _requests(self, client: EdgeClient, spec: EdgePartSpec, tensors: dict[str, np.ndarray]
                  ) -> tuple[list[tuple[EdgeReply, float]] | None, bool]:
        """TIMED_REQUESTS requests to `spec`, one after another, after a warm-up (first-call costs stay out), each
        with the ms the call took here, or None when one fails; and whether they had the server to itself
        (`_alone`)."""
        return self._alone(client, lambda: self._timed_requests(client, spec, tensors), 1 + TIMED_REQUESTS)

    def _timed_requests(self, client: EdgeClient, spec: EdgePartSpec, tensors: dict[str, np.ndarray]
                        ) -> list[tuple[EdgeReply, float]] | None:
        outputs = tuple(t.name for t in spec.outputs)
        try:
            client.infer(spec, tensors, outputs)
            timed = []
            for _ in range(TIMED_REQUESTS):
                started = time.perf_counter()
                timed.append((client.infer(spec, tensors, outputs), (time.perf_counter() - started) * 1e3))
            return timed
        except EdgeError:
            return None

    def _time_burst(self, spec: EdgePartSpec, tensors: dict[str, np.ndarray], alone_ms: float) -> float | None:
        """The first server's time per request to `spec` when busy: BURST requests sent at once, the last back
        after one request's call alone (`alone_ms`) and BURST - 1 more of the edge's turns; the CPU serving
        them there (the gateway, gRPC, the backend's copies) shares the edge's cores with the compute. (Bounded
        below by this workstation sending them and the link carrying them, as a series is.) None when a request
        failed, or when the edge served other requests meanwhile: this workstation's (its analyses beside the
        planner, `_alone`) or other clients' (Triton's statistics)."""
        busy_ms, alone = self._alone(self.edge, lambda: self._burst(spec, tensors, alone_ms), BURST)
        return busy_ms if alone else None

    def _burst(self, spec: EdgePartSpec, tensors: dict[str, np.ndarray], alone_ms: float) -> float | None:
        outputs = tuple(t.name for t in spec.outputs)
        timeout_s = BURST * self.edge.settings.timeout_s  # the last waits behind the others
        mark = self._served_mark()
        with ThreadPoolExecutor(BURST, thread_name_prefix="planner-burst") as pool:
            started = time.perf_counter()
            sent = [pool.submit(self.edge.infer, spec, tensors, outputs, timeout_s=timeout_s) for _ in range(BURST)]
            try:
                for request in sent:
                    request.result()
            except EdgeError:
                return None
            elapsed_ms = (time.perf_counter() - started) * 1e3
        if self._others_served(mark):
            return None
        return max(elapsed_ms - alone_ms, 0.0) / (BURST - 1)

    def _served_mark(self) -> tuple[tuple[int, float] | None, int]:
        """Triton's completed requests (all models) and this client's requests sent, now: see `_others_served`."""
        return self._queue_totals(), self.edge.traffic()[0]

    def _others_served(self, mark: tuple[tuple[int, float] | None, int]) -> bool:
        """Whether the first server completed requests other than this client's since `mark` (other clients' —
        Triton's counts less this client's sends); False when its statistics do not answer (nothing to go on)."""
        before, sent = mark
        after = self._queue_totals()
        if before is None or after is None:
            return False
        # (+1: the statistics count a request just after its reply, so the last one before may count here)
        return after[0] - before[0] - (self.edge.traffic()[0] - sent) > 1

    @property
    def measured(self) -> LinkProfile:
        """The link and the edge as last measured; measured now when they are not."""
        return self.link if self.link is not None else self.measure_link()

    def models(self) -> dict[ModelKind, StagedModel]:
        return {ModelKind.DETECTOR: self.analyzer.detector, ModelKind.CLASSIFIER: self.analyzer.classifier}

    # ------------------------------------------------------------ measuring

    def measure_link(self) -> LinkProfile:
        """The link (probe, with the gRPC client's CPU here), the edge's compute, time busy and serving cost on the
        parts measured before (cached per server; a part kept without either of the latter is measured again), and
        per model the edge/local ratio for the parts not measured yet."""
        probe, _ = self._alone(self.edge, self.edge.probe, 0)  # (the analyses' requests would share the link)
        status = self.edge.status()
        self._server = f"{self.edge.settings.address} triton {status.version}"
        known = {} if self._fresh else self._cached_edge_times(EDGE_TIMES)
        busy = {} if self._fresh else self._cached_edge_times(EDGE_BUSY)
        serving = {} if self._fresh else self._cached_edge_times(EDGE_SERVING, signed=True)
        # (one kept without all three: measured again)
        kept = [part for part in known if part in busy and part in serving and part in status.models]
        self.link = LinkProfile(probe.round_trip_ms, probe.upload_mbit_s, {}, self._queue_ms,
                                {part: known[part] for part in kept}, {part: busy[part] for part in kept},
                                {part: serving[part] for part in kept},
                                probe.client_cpu_ms, probe.client_cpu_ms_per_mib, usable_cores())
        self._fresh = False
        self._slowness = []  # measured again against the new figures
        self._unservable.clear()
        for name, model in self.models().items():
            self.link.edge_ratio[name] = self._edge_ratio(name, model, set(status.models))
        return self.link

    def _edge_ratio(self, name: ModelKind, model: StagedModel, served: set[str]) -> float:
        """Edge compute / local compute over the parts of this model measured so far (the median); when none
        is, the first served part is measured (full offload first)."""
        local = self.local_ms(name, model)
        parts = {(cut, wire): part_name(kind_of(model), cut, wire) for cut in range(model.stage_count)
                 for wire in ENCODINGS}
        if not any(part in self.measured.edge_part_ms for part in parts.values()):
            for cut, wire in sorted(parts, key=lambda key: key[0] != 0):  # full offload first, then in cut order
                if parts[(cut, wire)] in served and self.profile(name, model, cut, wire) is not None:
                    break
        ratios = [self.measured.edge_part_ms[part] / max(sum(local[cut:]), 0.01)
                  for (cut, _), part in parts.items() if part in self.measured.edge_part_ms]
        return max(statistics.median(ratios), 1e-4) if ratios else float("inf")

    def profile(self, name: ModelKind, model: StagedModel, cut: int, wire: WireFormat) -> float | None:
        """The edge's compute for part (cut, wire), from requests to it (a warm-up, then the median of 3), their
        serving cost beyond the probe's (`_serving_beyond_probe`), and its time per request when busy
        (`_time_burst`); None when the part does not answer. Kept per server, part and weights."""
        spec = self.analyzer.part(model, cut, wire)
        return self._profiled(spec, lambda: encode(wire, self._crossing(name, model, cut)))

    def profile_band(self, model: StagedModel, cut: int, count: int) -> float | None:
        """The edge's compute for one band of a spatial split at `cut` into `count` bands (as `profile`)."""
        split, spec = self.analyzer.band_part(model, cut, count)
        return self._profiled(spec, lambda: {"image": split.bands(analysis_input(model))[0].cpu().numpy()})

    def _profiled(self, spec: EdgePartSpec, tensors: Callable[[], dict[str, np.ndarray]]) -> float | None:
        """`spec`'s compute on the first server, measured on `tensors()` unless known; kept."""
        if spec.name in self.measured.edge_part_ms:
            return self.measured.edge_part_ms[spec.name]
        payload = tensors()
        mark = self._served_mark()
        replies, alone = self._requests(self.edge, spec, payload)
        if replies is None:
            self._unservable.add(spec.name)
            return None
        edge_ms = statistics.median(reply.edge_ms for reply, _ in replies)
        self.measured.edge_part_ms[spec.name] = max(edge_ms, 0.01)
        # Its round trips, unlike the compute the part reports, count any wait in Triton's queue: kept only where the
        # server served no other request meanwhile, this workstation's analyses' (`alone`) or other clients'.
        if alone and not self._others_served(mark):
            self.measured.edge_serving_ms[spec.name] = self._serving_beyond_probe(payload, replies)
        # (a compute shared with the analyses is used for now but, kept without its busy time, measured again)
        busy_ms = self._time_burst(spec, payload, statistics.median(ms for _, ms in replies)) if alone else None
        if busy_ms is not None:  # (else predicted like a part not measured; kept without it, measured next time)
            self.measured.edge_busy_ms[spec.name] = max(busy_ms, edge_ms, 0.01)
        self._save_edge_times()
        return self.measured.edge_part_ms[spec.name]

    def _serving_beyond_probe(self, payload: dict[str, np.ndarray], replies: list[tuple[EdgeReply, float]]) -> float:
        """What the requests to a part took beyond its compute, the probe's round trip and their bytes (both ways)
        at the probed bandwidth: the median over `replies`."""
        link, sent = self.measured, sum(array.nbytes for array in payload.values())
        return statistics.median(
            ms - reply.edge_ms - link.round_trip_ms - link.wire_ms(sent + sum(a.nbytes for a in reply.outputs.values()))
            for reply, ms in replies)

    def _crossing(self, name: ModelKind, model: StagedModel, cut: int) -> dict[str, np.ndarray]:
        """The tensors crossing `cut` for the sample input, as the analysis hands them to the encoder."""
        if (name, cut) not in self._crossings:
            with torch.inference_mode():
                crossing = model.run_stages({INPUT: analysis_input(model)}, 0, cut)
            self._crossings[(name, cut)] = {tensor_name(i): t.cpu().numpy() for i, t in crossing.items()}
        return self._crossings[(name, cut)]

    def encoding_ms(self, name: ModelKind, model: StagedModel, cut: int, wire: WireFormat) -> float:
        """Encoding what crosses `cut` here (fp32: the contiguous copy; int8: quantizing): the least CPU time of 5
        (a fixed computation: noise only adds) over the share of a core this process may use — a few
        milliseconds fit between a CPU quota's pauses when timed by the clock (one 0.3 s stall once made int8
        look slower than fp32, and the least of 5 clock times later made it look as cheap as fp32 at 25 % of a
        core, where it ran 4 ms slower). The edge's decoding is inside its part, so in its measured compute."""
        key = (name, cut, wire.encoding)
        if key not in self._encoding:
            crossing = self._crossing(name, model, cut)
            encode(wire, crossing)  # warm-up
            times = []
            for _ in range(5):
                started = time.thread_time()  # this thread's: the analyses may run beside the planner
                encode(wire, crossing)
                times.append((time.thread_time() - started) * 1e3)
            self._encoding[key] = min(times) / min(usable_cores(), 1.0)  # encoding runs on one thread
        return self._encoding[key]

    def _edge_times_path(self) -> Path:
        from inference.models.weights import data_dir

        return (self.cache_dir or data_dir()) / "profiles" / EDGE_TIMES

    def _fingerprint(self, name: ModelKind) -> str:
        """The model's identity (architecture, size, classes, weights): what its kept profiles belong to."""
        return fingerprint_of(identity_of(self.models()[name], self.analyzer.weights[name]))

    def _part_key(self, part: str) -> str:
        """A part's cache key: its name and the fingerprint of the model this workstation expects there."""
        return f"{part}@{self._fingerprint(ModelKind(part.partition('_')[0]))}"

    def _cached_edge_times(self, which: str, signed: bool = False) -> dict[str, float]:
        everything = _read_json(self._edge_times_path().with_name(which))
        cached = everything.get(self._server, {}) if isinstance(everything, dict) else {}
        return {key.partition("@")[0]: float(ms) for key, ms in cached.items()
                if isinstance(ms, (int, float)) and math.isfinite(ms) and (signed or ms > 0)
                and self._part_key(key.partition("@")[0]) == key}

    def _save_edge_times(self) -> None:
        link = self.measured
        for which, times in ((EDGE_TIMES, link.edge_part_ms), (EDGE_BUSY, link.edge_busy_ms),
                             (EDGE_SERVING, link.edge_serving_ms)):
            path = self._edge_times_path().with_name(which)
            everything = _read_json(path)
            everything = everything if isinstance(everything, dict) else {}
            everything[self._server] = {self._part_key(p): ms for p, ms in times.items()}
            _write_json(path, everything)

    # ------------------------------------------------------------ predicting

    def candidates(self, name: ModelKind, model: StagedModel, served: set[str], gated: bool = True,
                   spatial: bool = False) -> list[Option]:
        """Local only and every served option, predicted. `gated`: only wire formats that pass the fidelity
        gate, and deflate ratios measured (now, where not yet); otherwise those not known to fail the gate,
        with a guess for deflate ratios not measured yet (`plan` checks the options that rank first).
        `spatial`: with each cut also its spatial splits over the servers, where their band parts are served."""
        n = model.stage_count
        whole = self.whole_local_ms(name, model)
        options = [Option(name, n, WireFormat.FP32, whole, local_ms=whole)]
        link = self.link
        if link is None:
            return options
        if spatial:
            options += self._halo_options(name, model, served)
        if not np.isfinite(link.edge_ratio.get(name, float("inf"))):
            return options
        for cut in range(n):
            for wire in WireFormat:
                spec_name = part_name(kind_of(model), cut, wire)
                if spec_name not in served or spec_name in self._unservable:
                    continue
                known = self._gate.get(self._gate_key(name, cut, wire))
                if known is False or (gated and not self._fidelity(name, model, cut, wire)):
                    continue
                if gated:
                    self.encoding_ms(name, model, cut, wire)
                if gated and wire.compression:
                    self.deflate(name, model, cut)
                options.append(self._option(name, model, cut, wire))
                if spatial:
                    options += self._band_options(name, model, cut, wire, served)
        return options

    def _halo_options(self, name: ModelKind, model: StagedModel, served: set[str]) -> list[Option]:
        """The whole detector on 2 … `servers` bands, one per edge server, rows swapped between them, where its
        halo part is served: the image's and the head maps' bytes on this link, then the bands' time there —
        measured (their compute and their waits for each other's rows), else a hopeful guess: full offload's
        compute shared among them on the slowest of those servers (where nothing of the model was measured there,
        at this workstation's speed). The edges' exchanges cannot be seen from here (this workstation's round trip
        is no measure of the link between them): the option is measured before it is chosen (`_unchecked`)."""
        options: list[Option] = []
        if not isinstance(model, YoloDetector):
            return options
        link, local = self.measured, self.local_ms(name, model)
        for count in range(2, self.servers + 1):
            if halo_part_name(name, count) not in served or halo_part_name(name, count) in self._unservable:
                continue
            try:
                _, spec = self.analyzer.halo_part(count)
            except ValueError:  # bands too thin for the detector's widest layer
                continue
            bands_ms = link.edge_part_ms.get(spec.name)
            if bands_ms is None:
                ratio = link.edge_ratio.get(name, float("inf"))
                whole = link.edge_part_ms.get(part_name(name, 0, WireFormat.FP32),
                                              (ratio if np.isfinite(ratio) else 1.0) * sum(local))
                slowest = max(self.server_slowness()[:count])  # (the bands run on the first servers that work)
                guess = whole / count * slowest
            edge_ms = (bands_ms if bands_ms is not None else guess) + link.queue_ms
            here = self.encoding_ms(name, model, 0, WireFormat.FP32)
            moved = count * (spec.input_bytes + sum(int(np.prod(t.shape)) * 4 for t in spec.outputs))
            transfer = link.transfer_ms(spec.name, moved)
            options.append(Option(name, 0, WireFormat.FP32, here + transfer + edge_ms, here, transfer, edge_ms,
                                  bands_ms is not None, halo=count, client_ms=link.client_ms(moved, count),
                                  busy_ms=count * edge_ms))
        return options

    def profile_halo(self, count: int) -> float | None:
        """The bands' time on the edges (the slowest band's: its compute and its waits for rows) for the detector on
        `count` bands swapping rows, on the first working servers: a warm-up, then the median of 3; None when they
        do not answer. Kept."""
        band, spec = self.analyzer.halo_part(count)
        if spec.name not in self.measured.edge_part_ms:
            image = analysis_input(self.analyzer.detector).cpu()
            try:
                times = [detect_on_bands([self.edge, *self.others], spec, band, image).edge_ms for _ in range(4)][1:]
            except EdgeError:
                self._unservable.add(spec.name)
                return None
            self.measured.edge_part_ms[spec.name] = max(statistics.median(times), 0.01)
            self._save_edge_times()
        return self.measured.edge_part_ms[spec.name]

    def _band_options(self, name: ModelKind, model: StagedModel, cut: int, wire: WireFormat,
                      served: set[str]) -> list[Option]:
        """Cut `cut` with stages [0, cut) on 2 … `servers` bands, one per edge server, where the band part is
        served. Predicted with the bands on the fastest servers (the slowest of them bounds), their bytes sharing
        this workstation's link: round trip + every band's bytes both ways / bandwidth + a band's compute there,
        then the cut's own option without its stages here."""
        options: list[Option] = []
        if not any(part.startswith(band_parts_prefix(name, cut)) for part in served):
            return options  # (the halo is measured only for cuts with a band part)
        for count in range(2, self.servers + 1):
            if not isinstance(model, YoloDetector) or band_split(model, cut, count, model.config.input_size) is None:
                continue  # the halo spans the image, or the size does not split into that many bands
            split, spec = self.analyzer.band_part(model, cut, count)
            if spec.name not in served or spec.name in self._unservable:
                continue
            link, local = self.measured, self.local_ms(name, model)
            base = self._option(name, model, cut, wire)
            measured = link.edge_part_ms.get(spec.name)
            band_ms = measured if measured is not None else link.edge_ratio[name] * sum(local[:cut]) * split.band_share
            band_ms *= sorted(self.server_slowness())[count - 1]
            band_bytes = spec.input_bytes + sum(int(np.prod(t.shape)) * 4 for t in spec.outputs)
            transfer = link.transfer_ms(spec.name, count * band_bytes)
            here = base.local_ms - self.head_ms(name, model, cut)
            options.append(Option(name, cut, wire, here + base.transfer_ms + transfer + base.edge_ms + band_ms, here,
                                  base.transfer_ms + transfer, base.edge_ms + band_ms,
                                  base.measured_edge and measured is not None, bands=count,
                                  client_ms=base.client_ms + link.client_ms(count * band_bytes, count),
                                  busy_ms=base.edge_busy_ms + band_ms))
        return options

    def _option(self, name: ModelKind, model: StagedModel, cut: int, wire: WireFormat) -> Option:
        link, local = self.measured, self.local_ms(name, model)
        spec: EdgePartSpec = self.analyzer.part(model, cut, wire)
        batch = analysis_batch(model)  # the spec's shapes are per image
        sent, deflating, inflating = float(spec.input_bytes * batch), 0.0, 0.0
        returned = batch * sum(int(np.prod(t.shape)) * 4 for t in spec.outputs
                               if t.name != "features" or self.with_heat_maps)
        if wire.compression:
            # not measured yet: a hopeful guess (half the bytes, free), so that it is measured when it ranks
            deflate = self._deflate.get((name, cut), Deflate(2.0, 0.0, 0.0))
            sent = sent / deflate.ratio
            deflating, inflating = deflate.deflate_ms, link.edge_ratio[name] * deflate.inflate_ms
        measured = link.edge_part_ms.get(spec.name)
        compute = measured if measured is not None else link.edge_ratio[name] * sum(local[cut:])
        busy = link.edge_busy_ms.get(spec.name)
        if busy is None:
            busy = compute + self._serving_ms(model)
        edge, busy = compute + link.queue_ms, busy + link.queue_ms  # other clients' requests queue before both
        transfer = link.transfer_ms(spec.name, sent + returned) + inflating
        here = self.head_ms(name, model, cut) + self._encoding.get((name, cut, wire.encoding), 0.0) + deflating
        return Option(name, cut, wire, here + transfer + edge, here, transfer, edge, measured is not None,
                      client_ms=link.client_ms(sent + returned), busy_ms=busy)

    def _serving_ms(self, model: StagedModel) -> float:
        """The edge's time per request when busy beyond its compute, for a part of `model` not measured: the
        median over the parts of this model that were, each beyond the longer of its compute and its upload (a
        burst on a slow link is bound by the link, which the bound counts on its own); 0 when none was."""
        link, extra = self.measured, []
        for cut in range(model.stage_count):
            for wire in ENCODINGS:
                part = part_name(kind_of(model), cut, wire)
                if part in link.edge_busy_ms and part in link.edge_part_ms:
                    upload_ms = link.wire_ms(self.analyzer.part(model, cut, wire).input_bytes * analysis_batch(model))
                    extra.append(link.edge_busy_ms[part] - max(link.edge_part_ms[part], upload_ms))
        return max(statistics.median(extra), 0.0) if extra else 0.0

    def _images(self, name: ModelKind, model: StagedModel) -> list[torch.Tensor]:
        return [sample_input(model).to(self.analyzer.device)] + [x for kind, x in self.calibration if kind == name]

    def _gate_key(self, name: ModelKind, cut: int, wire: WireFormat) -> str:
        # compression is lossless: int8+deflate passes where int8 does
        return f"{name}/{self._fingerprint(name)}/{cut}/{wire.encoding.value}"

    def _fidelity(self, name: ModelKind, model: StagedModel, cut: int, wire: WireFormat) -> bool:
        """The fidelity gate for (cut, wire), run once per model weights and kept on disk."""
        key = self._gate_key(name, cut, wire)
        if key not in self._gate:
            path = self._edge_times_path().with_name("fidelity.json")
            kept = _read_json(path)
            kept = kept if isinstance(kept, dict) else {}
            if isinstance(kept.get(key), bool):
                self._gate[key] = kept[key]
            else:
                decode = self.analyzer.decode_raw if name == ModelKind.DETECTOR else None
                self._gate[key] = kept[key] = passes_fidelity(model, cut, wire, self._images(name, model), decode)
                _write_json(path, kept)
        return self._gate[key]

    def deflate(self, name: ModelKind, model: StagedModel, cut: int) -> Deflate:
        """How well the int8 payload at `cut` deflates, on the planner's images; measured once."""
        if (name, cut) not in self._deflate:
            real = [x for kind, x in self.calibration if kind == name]
            with torch.inference_mode():
                payloads = [encode(WireFormat.INT8, {tensor_name(i): t.cpu().numpy() for i, t in
                                                     model.run_stages({INPUT: image}, 0, cut).items()})
                            for image in real or self._images(name, model)]
            self._deflate[(name, cut)] = measure_deflate(payloads)
        return self._deflate[(name, cut)]

    # ------------------------------------------------------------ choosing

    def plan(self, series: bool = False, edges: int = 0) -> Plan:
        """The fastest plan for one study (local where an offload is predicted within OFFLOAD_MARGIN of it:
        `study_preference`); with `series` the one with the highest pipelined throughput (the
        least `series_bound_ms`; ties to the faster single study); with `edges` the plan of a worklist's edge
        lanes — that many servers, and this workstation analysing studies of its own with what they leave of
        it — that takes the least of this workstation among those within WORKSTATION_MARGIN of the highest
        combined throughput (`worklist_rate`, `worklist_preference`)."""
        if self.link is None:
            self.measure_link()
        served = set(self.edge.status().models)
        models = self.models()

        def per_model(name: ModelKind):  # a study alone: its bands may spread over the servers
            return lambda: sorted(((o,) for o in self.candidates(name, models[name], served, gated=False,
                                                                 spatial=True)),
                                  key=lambda c: study_preference(c[0]))

        def pairs(key):
            def ranked():
                each = [self.candidates(name, model, served, gated=False) for name, model in models.items()]
                return sorted(itertools.product(*each), key=lambda c: (key(c), sum(o.predicted_ms for o in c)))
            return ranked

        budget = {name: PROFILED_PARTS for name in models}
        if edges:
            here_ms = self.preprocess_ms + sum(self.whole_local_ms(name, model) for name, model in models.items())
            slowness = self.server_slowness() if edges == self.servers else [1.0] * edges

            def rate(c: tuple[Option, ...]) -> float:
                return worklist_rate(c, self.preprocess_ms, here_ms, slowness)

            while True:  # until neither ranking checks anything: a check may change every option's prediction
                checks = self._checks
                best = rate(self._settled(pairs(lambda c: -rate(c)), budget))
                chosen = self._settled(pairs(lambda c, best=best: worklist_preference(c, rate(c), best)), budget)
                if self._checks == checks:
                    break
        elif series:
            chosen = self._settled(pairs(lambda c: series_bound_ms(c, self.preprocess_ms)), budget)
        else:
            chosen = tuple(self._settled(per_model(name), budget)[0] for name in models)
        self.options = {o.model: o for o in chosen}
        self.series_ms = series_bound_ms(chosen, self.preprocess_ms) if series else None
        self._queue_mark, self._own_queue_ms = self._queue_totals(), 0.0
        d, c = self.options[ModelKind.DETECTOR], self.options[ModelKind.CLASSIFIER]
        return Plan(d.model_plan, c.model_plan)

    def _settled(self, ranked, budget: dict[ModelKind, int]) -> tuple[Option, ...]:
        """The first of `ranked()` whose options are all known good: the best-ranked is checked (fidelity
        gate, deflate ratio, the edge's compute on its part, within `budget` profilings per model) and the
        ranking made again after each check, until the first one needs none. Local only needs none."""
        while True:
            self._go_on()
            for choice in ranked():
                pending = next((o for o in choice if o.offloaded and self._unchecked(o, budget)), None)
                if pending is None:
                    return choice
                self._check(pending, budget)
                break

    def _unchecked(self, option: Option, budget: dict[ModelKind, int]) -> bool:
        return (self._gate_key(option.model, option.cut, option.wire) not in self._gate
                or (option.model, option.cut, option.wire.encoding) not in self._encoding
                or (option.wire.compression and (option.model, option.cut) not in self._deflate)
                or (not option.bands and (option.model, option.cut) not in self._heads
                    and self._runs_head(self.models()[option.model], option.cut))
                or (not option.measured_edge and (budget[option.model] > 0 or option.halo > 0)))

    def _check(self, option: Option, budget: dict[ModelKind, int]) -> None:
        self._checks += 1
        name, model = option.model, self.models()[option.model]
        if self._gate_key(name, option.cut, option.wire) not in self._gate:
            self._fidelity(name, model, option.cut, option.wire)
        elif (name, option.cut, option.wire.encoding) not in self._encoding:
            self.encoding_ms(name, model, option.cut, option.wire)
        elif option.wire.compression and (name, option.cut) not in self._deflate:
            self.deflate(name, model, option.cut)
        elif not option.bands and (name, option.cut) not in self._heads and self._runs_head(model, option.cut):
            self.measure_head(name, model, option.cut)
        else:
            budget[name] -= 1
            if option.bands and self._band_unmeasured(option):
                self.profile_band(model, option.cut, option.bands)
            elif option.halo:
                self.profile_halo(option.halo)
            else:
                self.profile(name, model, option.cut, option.wire)

    def _band_unmeasured(self, option: Option) -> bool:
        _, spec = self.analyzer.band_part(self.models()[option.model], option.cut, option.bands)
        return spec.name not in self.measured.edge_part_ms

    # ------------------------------------------------------------ watching

    def _queue_totals(self) -> tuple[int, float] | None:
        try:
            return self.edge.queue_totals()
        except EdgeError:
            return None

    def observe(self, measured_ms: Mapping[ModelKind, float], own_queue_ms: float = 0.0) -> bool:
        """Compare a result with the plan, and the edge's queue with the one planned for; re-plan on lasting
        drift or a queue that grew (or emptied) past QUEUE_MS: a study's plan is held to each model's measured
        time (a worklist's are not observed: its studies share the devices on purpose).

        `own_queue_ms`: how long this result's requests waited behind this client's earlier ones (a pipelined
        series queues on purpose); that wait is the plan's, not other clients' load, and is not counted."""
        ratios = {name: measured_ms.get(name, option.predicted_ms) / max(option.predicted_ms, 0.01)
                  for name, option in self.options.items()}
        drifted = False
        for key, ratio in ratios.items():
            self._drift[key] = self._drift.get(key, 0) + 1 if not 1 / DRIFT <= ratio <= DRIFT else 0
            drifted |= self._drift[key] >= 2
        self._own_queue_ms += own_queue_ms
        now = self._queue_totals()
        if now is not None and self._queue_mark is not None and now[0] > self._queue_mark[0]:
            others_ms = max(now[1] - self._queue_mark[1] - self._own_queue_ms, 0.0)
            queue_ms = others_ms / (now[0] - self._queue_mark[0])  # per request since the plan
            if abs(queue_ms - self._queue_ms) > QUEUE_MS:
                self._queue_ms = queue_ms
                drifted = True
        if drifted:
            self._drift.clear()
            self.link, self._fresh = None, True  # measure the link and the edge's parts again
        return drifted
