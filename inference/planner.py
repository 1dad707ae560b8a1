"""Cut planning: per model, the option (local only, full offload, or a cut with a wire format) with the
lowest predicted end-to-end latency on the machines and link at hand.

Predicted time of cut k with wire w = local stages [0, k) (measured per stage on this workstation,
cached per machine, runtime and input size) + round trip + bytes crossing k in w / bandwidth (both from
the link probe) + edge stages [k, n) (this workstation's stage times scaled by the edge/local speed
ratio measured on a served part) + the outputs coming back. For int8+deflate the bytes are the deflated
int8 payload and the time to deflate here and inflate there is added (both measured on the tensors
crossing k), so compression is chosen only where the link is slow enough for it to pay. Only parts the
server has, and wire formats that pass the fidelity gate, are candidates. A plan is re-made when measured
times drift from it.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from inference.classifier import CheXNet
from inference.edge_client import EdgeClient, EdgeError
from inference.edge_parts import (ENCODINGS, EdgePartSpec, WireFormat, identity_of, kind_of, part_name,
                                  sample_input, tensor_name)
from inference.plan import ModelPlan, Plan
from inference.stages import INPUT, StagedModel
from inference.wire import deflated, encode, round_trip

PROBABILITY_TOLERANCE = 0.02  # the fidelity gate: a wire format must keep probabilities within this
BOX_IOU = 0.9                 # … and match every box at this IoU
DRIFT = 1.5                   # re-plan when measured/predicted leaves [1/DRIFT, DRIFT] twice in a row
QUEUE_MS = 5.0                # … or when requests wait this long on average in the edge's queue


@dataclass(frozen=True)
class Option:
    model: str
    cut: int
    wire: WireFormat
    predicted_ms: float
    local_ms: float = 0.0
    transfer_ms: float = 0.0
    edge_ms: float = 0.0


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
    edge_ratio: dict[str, float]  # model → edge time / local time for the same stages
    queue_ms: float = 0.0         # mean wait in the edge's queue, added to every offloaded option


def machine_key() -> str:
    return f"{platform.node()}-{platform.machine()}-torch{torch.__version__}-threads{torch.get_num_threads()}"


def local_stage_ms(model: StagedModel, repeats: int = 3, cache_dir=None) -> list[float]:
    """Median time of each stage on this workstation for this runtime, cached per machine and input size."""
    from inference.weights import data_dir

    device = next(model.parameters()).device
    weights = "any"  # stage times do not depend on the weights' values
    key = f"{machine_key()}-{device.type}-{kind_of(model).value}-" + "-".join(
        v for k, v in identity_of(model, weights) if k != "classes")
    folder = (cache_dir or data_dir()) / "profiles"
    path = folder / (key.replace("/", "_") + ".json")
    if path.exists():
        try:
            times = json.loads(path.read_text())
            if len(times) == model.stage_count:
                return [float(t) for t in times]
        except (ValueError, OSError):
            pass
    times: list[list[float]] = [[] for _ in range(model.stage_count)]
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass warms up and is not kept
            tensors = {INPUT: sample_input(model).to(device)}
            for index in range(model.stage_count):
                started = time.perf_counter()
                tensors.update(model.run_stages(tensors, index, index + 1, keep=list(tensors)))
                times[index].append((time.perf_counter() - started) * 1e3)
    medians = [statistics.median(t[1:]) for t in times]
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(medians))
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
            elif decode is not None and not _boxes_match(decode(reference), decode(result)):
                return False
    return True


def _boxes_match(expected, got) -> bool:
    from inference.postprocess import box_iou

    boxes = np.array([d.box_xyxy for d in got]).reshape(-1, 4)
    for detection in expected:
        if not len(boxes) or box_iou(np.array(detection.box_xyxy), boxes).max() < BOX_IOU:
            return False
    return True


@dataclass
class Planner:
    """Plans for an `Analyzer` with an edge; `plan()` measures (once, then from cache) and chooses."""

    analyzer: object
    edge: EdgeClient
    calibration: list = field(default_factory=list)  # extra model-input images (real radiographs)
    link: LinkProfile | None = None
    options: dict[str, Option] = field(default_factory=dict)
    _drift: dict[str, int] = field(default_factory=dict)
    _gate: dict[tuple, bool] = field(default_factory=dict)
    _deflate: dict[tuple[str, int], Deflate] = field(default_factory=dict)
    _local: dict[str, list[float]] = field(default_factory=dict)
    _whole: dict[str, float] = field(default_factory=dict)
    _queue_mark: tuple[int, float] | None = None  # the edge's queue totals when the plan was made
    _queue_ms: float = 0.0

    def learn_from(self, radiograph) -> None:
        """Use a real study for the fidelity gate and the deflate ratios, before the first plan: the planner's
        own sample image is smooth, and would make the wire look far more compressible than radiographs are."""
        if not self.calibration and not self.options:
            self.calibration = list(self.analyzer.model_inputs(radiograph).items())

    def local_ms(self, name: str, model: StagedModel) -> list[float]:
        if name not in self._local:
            self._local[name] = local_stage_ms(model)
        return self._local[name]

    def whole_local_ms(self, name: str, model: StagedModel) -> float:
        """Local only: the stage profile under PyTorch, or the runtime that runs the whole model here
        (onnxruntime, INT8), measured once."""
        session = self.analyzer.onnx.get(name)
        if session is None:
            return sum(self.local_ms(name, model))
        if name not in self._whole:
            from inference.runtimes import median_ms

            image = sample_input(model).numpy()
            self._whole[name] = median_ms(lambda: session.run(image))
        return self._whole[name]

    def models(self) -> dict[str, StagedModel]:
        return {"detector": self.analyzer.detector, "classifier": self.analyzer.classifier}

    def measure_link(self) -> LinkProfile:
        probe = self.edge.probe()
        served = set(self.edge.status().models)
        ratios = {}
        for name, model in self.models().items():
            ratios[name] = self._edge_ratio(name, model, served)
        self.link = LinkProfile(probe.round_trip_ms, probe.upload_mbit_s, ratios, self._queue_ms)
        return self.link

    def _edge_ratio(self, name: str, model: StagedModel, served: set[str]) -> float:
        """Edge compute / local compute for the stages of the first served part of this model."""
        local = self.local_ms(name, model)
        for cut in sorted(range(model.stage_count), key=lambda c: (c != 0, c)):
            for wire in ENCODINGS:
                if part_name(kind_of(model), cut, wire) not in served:
                    continue  # checked by name first: a part's spec costs a partial forward pass
                spec = self.analyzer.part(model, cut, wire)
                with torch.inference_mode():
                    crossing = model.run_stages({INPUT: sample_input(model).to(self.analyzer.device)}, 0, cut)
                tensors = encode(wire, {tensor_name(i): t.cpu().numpy() for i, t in crossing.items()})
                try:
                    self.edge.infer(spec, tensors, tuple(t.name for t in spec.outputs))  # warm-up
                    edge_ms = statistics.median(self.edge.infer(spec, tensors, tuple(t.name for t in spec.outputs)
                                                                ).edge_ms for _ in range(3))
                except EdgeError:
                    continue
                return max(edge_ms, 0.01) / max(sum(local[cut:]), 0.01)
        return float("inf")  # nothing of this model is served: only local is possible

    def candidates(self, name: str, model: StagedModel, served: set[str]) -> list[Option]:
        local = self.local_ms(name, model)
        n = model.stage_count
        whole = self.whole_local_ms(name, model)
        options = [Option(name, n, WireFormat.FP32, whole, local_ms=whole)]
        link = self.link
        if link is None or not np.isfinite(link.edge_ratio.get(name, float("inf"))):
            return options
        for cut in range(n):
            for wire in WireFormat:
                if part_name(kind_of(model), cut, wire) not in served or not self._fidelity(name, model, cut, wire):
                    continue
                spec: EdgePartSpec = self.analyzer.part(model, cut, wire)
                sent, packing = spec.input_bytes, 0.0
                if wire.compression:
                    deflate = self.deflate(name, model, cut)
                    sent = spec.input_bytes / deflate.ratio
                    packing = deflate.deflate_ms + link.edge_ratio[name] * deflate.inflate_ms
                transfer = link.round_trip_ms + packing + (sent + spec.output_bytes) * 8 / (link.mbit_s * 1e3)
                edge = link.edge_ratio[name] * sum(local[cut:]) + link.queue_ms
                here = sum(local[:cut])
                options.append(Option(name, cut, wire, here + transfer + edge, here, transfer, edge))
        return options

    def _images(self, name: str, model: StagedModel) -> list[torch.Tensor]:
        return [sample_input(model).to(self.analyzer.device)] + [x for kind, x in self.calibration if kind == name]

    def _fidelity(self, name: str, model: StagedModel, cut: int, wire: WireFormat) -> bool:
        key = (name, cut, wire.encoding)  # compression is lossless: int8+deflate passes where int8 does
        if key not in self._gate:
            decode = self.analyzer.decode_raw if name == "detector" else None
            self._gate[key] = passes_fidelity(model, cut, wire, self._images(name, model), decode)
        return self._gate[key]

    def deflate(self, name: str, model: StagedModel, cut: int) -> Deflate:
        """How well the int8 payload at `cut` deflates, on the planner's images; measured once."""
        if (name, cut) not in self._deflate:
            real = [x for kind, x in self.calibration if kind == name]
            with torch.inference_mode():
                payloads = [encode(WireFormat.INT8, {tensor_name(i): t.cpu().numpy() for i, t in
                                                     model.run_stages({INPUT: image}, 0, cut).items()})
                            for image in real or self._images(name, model)]
            self._deflate[(name, cut)] = measure_deflate(payloads)
        return self._deflate[(name, cut)]

    def plan(self) -> Plan:
        if self.link is None:
            self.measure_link()
        served = set(self.edge.status().models)
        for name, model in self.models().items():
            self.options[name] = min(self.candidates(name, model, served), key=lambda o: o.predicted_ms)
        d, c = self.options["detector"], self.options["classifier"]
        self._queue_mark = self._queue_totals()
        return Plan(ModelPlan(d.cut, d.wire), ModelPlan(c.cut, c.wire))

    def _queue_totals(self) -> tuple[int, float] | None:
        try:
            return self.edge.queue_totals()
        except EdgeError:
            return None

    def observe(self, measured_ms: dict[str, float]) -> bool:
        """Compare a result's measured per-model times with the plan, and the edge's queue with the one
        planned for; re-plan on lasting drift or a queue that grew (or emptied) past QUEUE_MS."""
        drifted = False
        for name, option in self.options.items():
            ratio = measured_ms.get(name, option.predicted_ms) / max(option.predicted_ms, 0.01)
            self._drift[name] = self._drift.get(name, 0) + 1 if not 1 / DRIFT <= ratio <= DRIFT else 0
            drifted |= self._drift[name] >= 2
        now = self._queue_totals()
        if now is not None and self._queue_mark is not None and now[0] > self._queue_mark[0]:
            queue_ms = (now[1] - self._queue_mark[1]) / (now[0] - self._queue_mark[0])  # per request since
            if abs(queue_ms - self._queue_ms) > QUEUE_MS:
                self._queue_ms = queue_ms
                drifted = True
        if drifted:
            self._drift.clear()
            self.link = None  # measure the link and the edge again
        return drifted

