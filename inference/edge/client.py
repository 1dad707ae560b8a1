"""The workstation's side of the edge: a gRPC client of an NVIDIA Triton Inference Server.

Every call has a deadline; every failure becomes an `EdgeError` whose `failure` says what kind it is
and whose message a person understands. Before a part is first used, its config on the server is
checked against the local model (names, shapes, dtypes and the fingerprint of model and weights).
"""

from __future__ import annotations

import enum
import ipaddress
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from inference.config import WireFormat
from inference.edge.repository import COMPUTE_TIME_OUTPUT, SERVED_THROUGH
from inference.models.parts import EdgePartSpec
from inference.models.wire import DTYPES as WIRE_DTYPES

REVERIFY_S = 30.0
THROUGH_SUFFIXES = tuple(f"_{wire.value}" for wire in (WireFormat.FP16, WireFormat.INT8))  # of parts' names
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]+)):(?P<port>\d{1,5})$")


class EdgeFailure(str, enum.Enum):
    UNREACHABLE = "unreachable"
    TLS = "tls"
    TIMEOUT = "timeout"
    MODEL_MISSING = "model-missing"
    MODEL_MISMATCH = "model-mismatch"  # other shapes, dtypes, cut, or other weights (a stale repository)
    SERVER_ERROR = "server-error"


# The failures of the workstation's own link to a server (not of what the server reports)
LINK_FAILURES = (EdgeFailure.UNREACHABLE, EdgeFailure.TIMEOUT, EdgeFailure.TLS)


class EdgeError(RuntimeError):
    def __init__(self, failure: EdgeFailure, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.failure = failure


def parse_address(address: str) -> tuple[str, int]:
    """'host:port', 'IPv4:port' or '[IPv6]:port' → (host, port); ValueError with the reason otherwise."""
    match = _HOST_PORT.match(address.strip())
    if not match:
        raise ValueError(f"edge address {address!r} is not host:port (IPv6 as [addr]:port)")
    host = match["v6"] or match["host"]
    if match["v6"]:
        ipaddress.IPv6Address(host)  # raises ValueError for a malformed address
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"edge port {port} is outside 1..65535")
    return host, port


@dataclass(frozen=True)
class EdgeSettings:
    address: str                          # host:port of Triton's gRPC endpoint
    tls: bool = False
    root_certificate: Path | None = None  # CA that signed the server certificate (None: system CAs)
    client_certificate: Path | None = None  # for mutual TLS
    client_key: Path | None = None
    timeout_s: float = 10.0               # bounds a request with nothing queued ahead of it, end to end
    check_timeout_s: float = 2.0          # liveness / readiness / metadata checks

    def __post_init__(self) -> None:
        parse_address(self.address)
        if not (0 < self.check_timeout_s and 0 < self.timeout_s):
            raise ValueError("edge timeouts must be positive")
        for path in (self.root_certificate, self.client_certificate, self.client_key):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS file not found: {path}")
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("mutual TLS needs both a client certificate and its key")

    @classmethod
    def each(cls, addresses: Iterable[str], tls: bool = False, ca_file: str | None = None,
             client_certificate_file: str | None = None, client_key_file: str | None = None,
             timeout_s: float = 10.0) -> list[EdgeSettings]:
        """One edge's settings per address (blank ones skipped), with the same TLS files and timeout: how the
        viewer's settings and the command line's options both describe their edges."""
        optional = lambda value: Path(value) if value else None  # noqa: E731
        return [cls(address.strip(), tls=tls, root_certificate=optional(ca_file),
                    client_certificate=optional(client_certificate_file), client_key=optional(client_key_file),
                    timeout_s=timeout_s) for address in addresses if address.strip()]


@dataclass(frozen=True)
class ServerStatus:
    live: bool
    ready: bool
    version: str
    models: tuple[str, ...]  # the loaded (ready) models
    round_trip_ms: float


@dataclass(frozen=True)
class LinkMeasurement:
    round_trip_ms: float   # a 1-byte request and its reply
    upload_mbit_s: float   # from requests of `payload_bytes`, less the round trip
    payload_bytes: int
    # The CPU of the thread calling (the gRPC client's serialising, framing and receiving) for a 1-byte request,
    # and for each MiB more: the workstation's own work in what the link's time counts
    client_cpu_ms: float = 0.0
    client_cpu_ms_per_mib: float = 0.0


@dataclass(frozen=True)
class EdgeReply:
    outputs: dict[str, np.ndarray]
    round_trip_ms: float
    edge_ms: float  # server compute for this request (from Triton's statistics); transfer = the rest
    server: str = ""  # the address of the server that answered


class EdgeClient:
    """One connection to one Triton server. Safe to share between threads."""

    def __init__(self, settings: EdgeSettings) -> None:
        import tritonclient.grpc as grpcclient

        self.settings = settings
        self._grpc = grpcclient
        self._client = self._new_client()
        self._verified: dict[str, float] = {}  # part name → when it was last checked (monotonic s)
        self._parameters: dict[str, dict[str, str]] = {}  # part name → its config's parameters, as last checked
        self._streamed: set[str] = set()  # decoupled parts: answered over a stream (the halo part)
        self._timed: set[str] = set()  # parts that report their compute time (the Python-backend server)
        # model name → (when asked, monotonic s; whether it runs its stages through another model there)
        self._through: dict[str, tuple[float, bool]] = {}
        self._checking: dict[str, threading.Lock] = {}  # part name → held while it is being checked
        self._lock = threading.Lock()
        self._sent = 0       # inference requests sent through this client so far …
        self._in_flight = 0  # … and not answered yet: whether a measurement had the server to itself

    def _new_client(self):
        """A tritonclient connection to the server, with this client's TLS files."""
        grpcclient, settings = self._grpc, self.settings
        try:
            keepalive = grpcclient.KeepAliveOptions()
            return grpcclient.InferenceServerClient(
                url=self._url(), ssl=settings.tls, channel_args=[
                    # tritonclient's own defaults (channel_args replaces them)...
                    ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
                    ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
                    ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
                    ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
                    # ...and a connection of its own: gRPC shares one per address between channels, so a
                    # client made after a closed one would inherit the streams the edge still counts on it
                    ("grpc.use_local_subchannel_pool", 1)],
                root_certificates=str(settings.root_certificate) if settings.root_certificate else None,
                private_key=str(settings.client_key) if settings.client_key else None,
                certificate_chain=str(settings.client_certificate) if settings.client_certificate else None)
        except Exception as exc:
            raise EdgeError(EdgeFailure.UNREACHABLE, f"cannot open a connection to {settings.address}: {exc}") from exc

    def _url(self) -> str:
        host, port = parse_address(self.settings.address)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # ------------------------------------------------------------ checks

    def status(self) -> ServerStatus:
        """Live/ready, version and ready models, each call bounded by the check timeout."""
        started = time.perf_counter()
        timeout = self.settings.check_timeout_s
        live = self._call(lambda: self._client.is_server_live(client_timeout=timeout), "liveness check")
        ready = self._call(lambda: self._client.is_server_ready(client_timeout=timeout), "readiness check")
        meta = self._call(lambda: self._client.get_server_metadata(client_timeout=timeout), "server metadata")
        # Statistics list the loaded models; the repository index is the operator's (closed to workstations).
        stats = self._call(lambda: self._client.get_inference_statistics("", client_timeout=timeout), "model list")
        models = tuple(sorted({m.name for m in stats.model_stats}))
        return ServerStatus(bool(live), bool(ready), meta.version, models, (time.perf_counter() - started) * 1e3)

    def verify(self, spec: EdgePartSpec) -> None:
        """The server's part `spec.name` is ready and is the same part as ours. Checked again after
        REVERIFY_S: the edge may have been restarted meanwhile with another repository (same shapes, other
        weights would otherwise go unnoticed). One check per part at a time: the requests of a pipelined
        series that arrive meanwhile wait for it (all checking at once, a new connection's first burst went
        past the streams the edge allows on it and was refused: REFUSED_STREAM)."""
        if time.monotonic() - self._verified.get(spec.name, -REVERIFY_S) < REVERIFY_S:
            return
        with self._lock:
            checking = self._checking.setdefault(spec.name, threading.Lock())
        with checking:
            if time.monotonic() - self._verified.get(spec.name, -REVERIFY_S) >= REVERIFY_S:  # not done meanwhile
                self._verify(spec)

    def _verify(self, spec: EdgePartSpec) -> None:
        timeout = self.settings.check_timeout_s
        ready = self._call(lambda: self._client.is_model_ready(spec.name, client_timeout=timeout),
                           f"model {spec.name} readiness")
        if not ready:
            raise EdgeError(EdgeFailure.MODEL_MISSING, f"the edge server has no ready model {spec.name} "
                                                       "(export it with: python main.py edge export)")
        config = self._call(lambda: self._client.get_model_config(spec.name, client_timeout=timeout),
                            f"model {spec.name} config").config
        served = {key: value.string_value for key, value in config.parameters.items()}
        if served.get("mededge_fingerprint", "") != spec.fingerprint:
            differences = [f"{key} {served.get(f'mededge_{key}', '?')[:16]} there, {value[:16]} here"
                           for key, value in spec.identity if served.get(f"mededge_{key}") != value]
            raise EdgeError(EdgeFailure.MODEL_MISMATCH,
                            f"edge model {spec.name} was exported for another model or weights "
                            f"({'; '.join(differences) or 'another MedEdge version'}); re-export it")
        expected = {(t.name, t.dtype, tuple(t.shape)) for t in spec.inputs}
        takes = {(t.name, self._dtype_name(t.data_type), tuple(int(d) for d in t.dims)) for t in config.input}
        if expected != takes:
            raise EdgeError(EdgeFailure.MODEL_MISMATCH, f"edge model {spec.name} takes {sorted(takes)}, "
                                                        f"this workstation sends {sorted(expected)}")
        with self._lock:
            self._verified[spec.name] = time.monotonic()
            self._parameters[spec.name] = served
            if config.model_transaction_policy.decoupled:
                self._streamed.add(spec.name)
            else:
                self._streamed.discard(spec.name)
            if any(o.name == COMPUTE_TIME_OUTPUT for o in config.output):
                self._timed.add(spec.name)
            else:  # e.g. the same address now a stock Triton: its statistics give the compute time
                self._timed.discard(spec.name)

    @staticmethod
    def _dtype_name(value: int) -> str:
        from tritonclient.grpc import model_config_pb2 as mc

        return mc.DataType.Name(value).replace("TYPE_", "")

    # ------------------------------------------------------------ inference

    def part_parameter(self, spec: EdgePartSpec, key: str) -> str:
        """A `mededge_` parameter of the server's part (e.g. where a halo part's peers reach it); "" if none."""
        self.verify(spec)
        with self._lock:
            return self._parameters.get(spec.name, {}).get(key, "")

    def infer(self, spec: EdgePartSpec, tensors: dict[str, np.ndarray], outputs: tuple[str, ...],
              compression: str | None = None, timeout_s: float | None = None,
              parameters: dict[str, str | int] | None = None) -> EdgeReply:
        """Send the tensors crossing the cut; return the requested outputs. Bounded by `timeout_s` (the
        settings' when None: a caller with requests queued ahead of this one gives a longer bound).

        `compression` ("deflate" or "gzip") has gRPC compress the request; the server inflates it. `parameters`
        travel with the request (a halo part's session and band)."""
        timeout = timeout_s or self.settings.timeout_s
        self.verify(spec)
        grpc = self._grpc
        inputs = []
        for tensor in spec.inputs:
            array = np.ascontiguousarray(tensors[tensor.name], dtype=WIRE_DTYPES[tensor.dtype])
            entry = grpc.InferInput(tensor.name, list(array.shape), tensor.dtype)
            entry.set_data_from_numpy(array)  # raw bytes on the wire, FP16 included
            inputs.append(entry)
        timed = spec.name in self._timed
        wanted = [grpc.InferRequestedOutput(name) for name in (*outputs, *([COMPUTE_TIME_OUTPUT] if timed else []))]
        before = None if timed else self._compute_stats(spec.name)
        with self._lock:
            self._sent += 1
            self._in_flight += 1
        started = time.perf_counter()
        try:
            if spec.name in self._streamed:
                result = self._call(lambda: self._streamed_infer(spec.name, inputs, wanted, timeout, parameters),
                                    f"inference on {spec.name}", timeout=timeout)
            else:
                result = self._call(lambda: self._client.infer(spec.name, inputs, outputs=wanted,
                                                               client_timeout=timeout, compression_algorithm=compression,
                                                               parameters=parameters),
                                    f"inference on {spec.name}", timeout=timeout)
        except EdgeError:
            with self._lock:  # unloaded, replaced or restarted meanwhile: check the part again next time
                self._verified.pop(spec.name, None)
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
        round_trip = (time.perf_counter() - started) * 1e3
        arrays = {name: result.as_numpy(name) for name in outputs}
        for name, array in arrays.items():
            if array is None:
                raise EdgeError(EdgeFailure.MODEL_MISMATCH, f"edge model {spec.name} returned no {name!r}")
        if timed:
            edge_ms = float(result.as_numpy(COMPUTE_TIME_OUTPUT)[0, 0])
        else:
            edge_ms = self._stats_compute_ms(spec.name, before)
        return EdgeReply(arrays, round_trip, min(max(edge_ms, 0.0), round_trip), self.settings.address)

    def _streamed_infer(self, model: str, inputs, outputs, timeout: float, parameters):
        """A decoupled part's one answer, over a stream of its own (tritonclient holds one stream per connection,
        and several may be out at once)."""
        from tritonclient.utils import InferenceServerException

        answers: queue.Queue = queue.Queue()
        client = self._new_client()
        answered = False
        try:
            client.start_stream(callback=lambda result, error: answers.put((result, error)), stream_timeout=timeout)
            try:
                client.async_stream_infer(model, inputs, outputs=outputs, parameters=parameters)
            except InferenceServerException:  # the stream broke at once: its own reason went to the callback
                try:
                    _, reason = answers.get(timeout=self.settings.check_timeout_s)
                except queue.Empty:
                    raise
                raise reason from None
            try:
                result, error = answers.get(timeout=timeout)
            except queue.Empty:
                raise InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED") from None
            answered = True
            if error is not None:
                raise error
            return result
        finally:
            client.stop_stream(cancel_requests=not answered)  # (a stream cancelled after its answer kept the part busy)
            client.close()

    def traffic(self) -> tuple[int, int]:
        """(inference requests sent through this client so far, those of them not answered yet)."""
        with self._lock:
            return self._sent, self._in_flight

    def _compute_stats(self, model: str) -> tuple[int, int] | None:
        """(requests completed, cumulative compute ns) of `model` from Triton's statistics."""
        try:
            stats = self._client.get_inference_statistics(model, client_timeout=self.settings.check_timeout_s)
        except Exception:
            return None
        for entry in stats.model_stats:
            s = entry.inference_stats
            return s.success.count, s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns
        return None

    def _stats_compute_ms(self, model: str, before: tuple[int, int] | None) -> float:
        """A stock Triton's compute time for the last request; 0 when its statistics do not count it."""
        return _per_request_ms(before, self._counted_stats(model, before, 1))

    def _counted_stats(self, model: str, before: tuple[int, int] | None, requests: int) -> tuple[int, int] | None:
        """`model`'s statistics once they count `requests` more than `before`: Triton updates them just after each
        response, so poll briefly; None when that does not happen."""
        if before is None:
            return None
        for _ in range(20):
            after = self._compute_stats(model)
            if after is not None and after[0] >= before[0] + requests:
                return after
            time.sleep(0.002)
        return None

    def queue_totals(self) -> tuple[int, float]:
        """(requests completed, their total queue ms) over every model of the server, from Triton's
        statistics: how long requests waited for a free model instance (the edge's load, all clients')."""
        stats = self._call(lambda: self._client.get_inference_statistics("", client_timeout=self.settings.check_timeout_s),
                           "statistics")
        # A request to a part served through another (`edge serve`'s FP16 and int8 parts) completes there too: counted
        # once. Its wait in each queue is its wait.
        count = sum(m.inference_stats.success.count for m in stats.model_stats if not self._served_through(m.name))
        return count, sum(m.inference_stats.queue.ns for m in stats.model_stats) / 1e6

    def _served_through(self, model: str) -> bool:
        """Whether the server runs `model`'s stages by calling another of its models (its config says so): only an
        FP16 or int8 part may; asked again after REVERIFY_S (the edge may have been restarted, or the part loaded
        again, meanwhile). False when its config does not answer."""
        if not model.endswith(THROUGH_SUFFIXES):
            return False
        asked, through = self._through.get(model, (-REVERIFY_S, False))
        if time.monotonic() - asked >= REVERIFY_S:
            try:
                parameters = self._client.get_model_config(model, client_timeout=self.settings.check_timeout_s
                                                           ).config.parameters
            except Exception:  # unloaded meanwhile, or no answer: counted as itself this time, asked again next
                return False
            through = SERVED_THROUGH in parameters and bool(parameters[SERVED_THROUGH].string_value)
            self._through[model] = (time.monotonic(), through)
        return through

    def probe(self, payload_bytes: int = 1 << 20, repeats: int = 3) -> LinkMeasurement:
        """Round-trip time (1-byte requests) and upload bandwidth (`payload_bytes` requests) to the edge,
        through the repository's probe model; the returned checksum proves the bytes arrived intact. What the probe
        model's compute on the payload takes beyond its compute on one byte (Triton's statistics: summing 1 MiB took
        4 ms on a CPU here, half the time 1 Gbit/s takes to carry it) is left out of the bandwidth."""
        from inference.edge.repository import PROBE_MODEL

        def send(size: int) -> tuple[float, float]:
            """(wall ms, CPU ms) of one request of `size` bytes, its serialising included in the CPU (the payload is
            made before). The CPU is this thread's, which a blocking gRPC call drives (96 % of the process's CPU for
            1-4 MiB requests in a quiet process here): the analyses may run beside the planner."""
            payload = np.frombuffer(np.random.default_rng(size).bytes(size), np.uint8).reshape(1, size)
            cpu = time.thread_time()
            entry = self._grpc.InferInput("payload", [1, size], "UINT8")
            entry.set_data_from_numpy(payload)
            started = time.perf_counter()
            result = self._call(lambda: self._client.infer(PROBE_MODEL, [entry],
                                                           client_timeout=self.settings.timeout_s),
                                "link probe", timeout=self.settings.timeout_s)
            elapsed = (time.perf_counter() - started) * 1e3
            cpu_ms = (time.thread_time() - cpu) * 1e3
            if int(result.as_numpy("checksum")[0, 0]) != int(payload.sum(dtype=np.int64)):
                raise EdgeError(EdgeFailure.SERVER_ERROR, "link probe: the edge received other bytes than sent")
            return elapsed, cpu_ms

        before = self._compute_stats(PROBE_MODEL)
        send(1)  # connection and first-call costs stay out of the figures (a first call's compute: 22 ms here)
        start = self._counted_stats(PROBE_MODEL, before, 1)
        small = [send(1) for _ in range(repeats)]
        rtt, fixed_cpu = min(wall for wall, _ in small), min(cpu for _, cpu in small)
        counted = self._counted_stats(PROBE_MODEL, start, repeats)
        walls, cpus = zip(*(send(payload_bytes) for _ in range(repeats)), strict=True)
        bulk, bulk_cpu = sorted(walls)[repeats // 2], min(cpus)  # (CPU: a fixed amount of work, noise only adds)
        done = self._counted_stats(PROBE_MODEL, counted, repeats)
        # (the round trip holds the compute on one byte already)
        compute_ms = max(_per_request_ms(counted, done) - _per_request_ms(start, counted), 0.0)
        seconds = max(bulk - rtt - compute_ms, 0.01) / 1e3
        return LinkMeasurement(rtt, payload_bytes * 8 / seconds / 1e6, payload_bytes, fixed_cpu,
                               max(bulk_cpu - fixed_cpu, 0.0) / (payload_bytes / 2**20))

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:
            pass

    # ------------------------------------------------------------ errors

    def _call(self, function, what: str, timeout: float | None = None):
        from tritonclient.utils import InferenceServerException

        try:
            return function()
        except InferenceServerException as exc:
            raise self._translate(exc, what, timeout or self.settings.check_timeout_s) from exc
        except Exception as exc:  # grpc internals on odd failures
            raise EdgeError(EdgeFailure.SERVER_ERROR, f"{what} failed: {exc}") from exc

    def _translate(self, exc, what: str, timeout: float) -> EdgeError:
        status = str(exc.status() or "")
        text = str(exc.message() if hasattr(exc, "message") else exc)
        where = self.settings.address
        lowered = text.lower()
        if "DEADLINE_EXCEEDED" in status or "deadline" in lowered:
            return EdgeError(EdgeFailure.TIMEOUT, f"the edge server at {where} did not answer the {what} "
                                                  f"within {timeout:g} s")
        tls_sign = any(k in lowered for k in ("ssl", "tls", "handshake", "certificate", "verification"))
        closed = "socket closed" in lowered or "connection reset" in lowered
        resolving = "dns" in lowered or "resolve" in lowered  # (the probe would wait on the resolver again)
        if not resolving and (tls_sign or closed or (self.settings.tls and "UNAVAILABLE" in status
                                                      and "refused" not in lowered)):
            # gRPC keeps the handshake's reason to its log (or cuts it short): asked again here, in one line
            reason = _what_answers(self.settings)
            if reason is not None:
                return EdgeError(EdgeFailure.UNREACHABLE if reason.startswith("not an edge") else EdgeFailure.TLS,
                                 f"edge server {where}: {reason}")
        if self.settings.tls and "handshake" in lowered:
            return EdgeError(EdgeFailure.TLS, f"TLS handshake with {where} failed: its certificate is not trusted "
                                              "by the configured CA, or not issued for this address")
        if any(k in lowered for k in ("ssl", "tls", "handshake", "certificate")):
            mode = "TLS" if self.settings.tls else "plaintext"
            return EdgeError(EdgeFailure.TLS, f"TLS problem talking to {where} ({mode} client): {text[:160]}")
        if any(sign in lowered for sign in _NOT_GRPC):  # another service's address, mistaken for the edge's
            code = re.search(r"header with status: (\d+)", lowered)
            said = f"it answered HTTP {code.group(1)}" if code else "it does not speak gRPC"
            return EdgeError(EdgeFailure.UNREACHABLE, f"{where} is not an edge server's gRPC port ({said}: a web "
                                                      "server?); the edge's gRPC port is 8001 unless set otherwise")
        if "UNAVAILABLE" in status:
            if "socket closed" in lowered or "connection reset" in lowered:  # the handshake was refused
                if not self.settings.tls:
                    return EdgeError(EdgeFailure.TLS, f"{where} closed the connection: the server may require TLS "
                                                      "(turn TLS on: Settings, or --tls with --ca)")
                if self.settings.client_certificate is None:
                    return EdgeError(EdgeFailure.TLS, f"{where} closed the TLS connection: the server may require "
                                                      "a client certificate (mutual TLS: Settings' client "
                                                      "certificate and key, or --client-cert and --client-key)")
                return EdgeError(EdgeFailure.TLS, f"{where} closed the TLS connection: it may not accept this "
                                                  "workstation's client certificate (signed by another CA?)")
            cause = "connection refused" if "refused" in lowered else text[:120]
            return EdgeError(EdgeFailure.UNREACHABLE, f"edge server {where} unreachable ({cause})")
        if "NOT_FOUND" in status or "unknown model" in lowered or "is not found" in lowered:
            return EdgeError(EdgeFailure.MODEL_MISSING, f"{what}: the edge server has no ready model of that name "
                                                        f"(unloaded, or not in its repository) ({text[:120]})")
        if "INVALID_ARG" in status and ("shape" in lowered or "datatype" in lowered or "expected" in lowered):
            return EdgeError(EdgeFailure.MODEL_MISMATCH, f"{what}: the edge refused the tensors ({text[:160]})")
        return EdgeError(EdgeFailure.SERVER_ERROR, f"{what} failed on the edge: {text[:160]}")


_T = TypeVar("_T")
# What gRPC says when the address answers, but not in gRPC: an HTTP/1 server, or an HTTP/2 one with an HTTP status
_NOT_GRPC = ("failed parsing http/2", "http1.x server", "received http2 header with status")
_TLS_RECORD = (0x15, 0x16)  # the first byte of a TLS alert or handshake record: a TLS server's answer to plaintext


def _what_answers(settings: EdgeSettings) -> str | None:
    """Why a connection to the edge failed, found with a TLS handshake (or a plaintext request) of our own: the
    certificate's fault in the TLS library's words ("certificate has expired", "Hostname mismatch…"), a server
    that does not speak TLS, one that does where plaintext was used, a web server; None when nothing is wrong
    there (the failure lies elsewhere)."""
    import socket
    import ssl

    host, port = parse_address(settings.address)
    try:  # (bounded: it runs where a request has failed already)
        with socket.create_connection((host, port), timeout=min(settings.check_timeout_s, 2.0)) as connection:
            if settings.tls:
                context = ssl.create_default_context(cafile=str(settings.root_certificate or "") or None)
                if settings.client_certificate and settings.client_key:
                    context.load_cert_chain(str(settings.client_certificate), str(settings.client_key))
                context.set_alpn_protocols(["h2"])  # as gRPC's handshake
                context.wrap_socket(connection, server_hostname=host).close()
                return None
            connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
            first = connection.recv(8)
    except ssl.SSLCertVerificationError as exc:
        return f"TLS: its certificate is refused: {exc.verify_message} (give the CA that signed it; the certificate " \
               "must be in date and name this address)"
    except ssl.SSLError as exc:
        if exc.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"):
            return "it does not answer in TLS (a plaintext server? turn TLS off for it, or serve it with TLS)"
        return f"TLS handshake refused ({exc.reason or exc}: does it want a client certificate this one is not?)"
    except OSError:
        return None  # refused, unreachable or slow: gRPC's own reason stands
    if first[:1] and first[0] in _TLS_RECORD:
        return "it speaks TLS: turn TLS on for it (Settings, or --tls with --ca)"
    if first.startswith(b"HTTP/"):
        return "not an edge server's gRPC port (it answered HTTP/1.x: a web server?); the edge's gRPC port is 8001 " \
               "unless set otherwise"
    return None


def _per_request_ms(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    """Compute ms per request between two readings of a model's statistics (requests, compute ns); 0 without both."""
    if before is None or after is None or after[0] <= before[0]:
        return 0.0
    return (after[1] - before[1]) / 1e6 / (after[0] - before[0])


class EdgeGroup:
    """Several edge servers with the same parts, used like one `EdgeClient`.

    Requests go round-robin to the servers in working order (spreading the load), or first to the server
    the caller names (`assign`: the parts of one study on different servers at once); a server whose request
    fails is set aside for `retry_s` and the request goes to the next one (fail-over); once `retry_s` has
    passed it gets requests again (fail-back). Only when every server failed does the caller see an
    `EdgeError` (the last one). Checks and the link probe use the first working server, in the order given.
    """

    def __init__(self, settings: list[EdgeSettings], retry_s: float = 10.0) -> None:
        if not settings:
            raise ValueError("an edge group needs at least one server")
        self.clients = [EdgeClient(s) for s in settings]
        self.retry_s = retry_s
        self._down_until = [0.0] * len(self.clients)
        self._next = 0
        self._lock = threading.Lock()
        self._compute_ms: dict[tuple[int, str], float] = {}  # (server, part) → its last measured compute

    def _working(self) -> list[int]:
        now = time.monotonic()
        return [i for i in range(len(self.clients)) if self._down_until[i] <= now]

    def working_clients(self) -> list[EdgeClient]:
        """The servers not set aside, in the order given."""
        return [self.clients[i] for i in self._working()]

    def set_aside(self, client: EdgeClient) -> None:
        """`client`'s server failed a call made past the group (a band of a study on several servers): no calls
        for `retry_s`, as when one of the group's own calls fails."""
        self._down_until[self.clients.index(client)] = time.monotonic() + self.retry_s

    def assign(self, parts: list[str]) -> list[int] | None:
        """A different working server for each part (one study's models at once), or None when there are
        fewer: in the order given, each part takes the server that computed it fastest of those left. A server
        that has not yet run a part counts as fastest for it, so each gets measured."""
        left = self._working()
        if len(left) < len(parts):
            return None
        chosen = []
        for part in parts:
            best = min(left, key=lambda i: (self._compute_ms.get((i, part), 0.0), i))
            chosen.append(best)
            left.remove(best)
        return chosen

    @property
    def settings(self) -> EdgeSettings:
        return self.clients[0].settings

    def _order(self, rotate: bool, first: int | None = None) -> list[int]:
        """Working servers first (from `first`, else from the round-robin position when `rotate`), then those
        set aside."""
        with self._lock:
            start = first if first is not None else self._next if rotate else 0
            if rotate and first is None:
                self._next = (self._next + 1) % len(self.clients)
            now = time.monotonic()
        order = [(start + i) % len(self.clients) for i in range(len(self.clients))]
        return sorted(order, key=lambda i: self._down_until[i] > now)  # stable: keeps the rotation

    def _each(self, call: Callable[[EdgeClient], _T], rotate: bool, first: int | None = None,
              measured: str | None = None) -> _T:
        """`call` on each server in turn until one succeeds; with `measured` (a part), the reply's compute time
        is kept for `assign`."""
        errors: list[EdgeError] = []
        for index in self._order(rotate, first):
            try:
                result = call(self.clients[index])
            except EdgeError as error:
                self._down_until[index] = time.monotonic() + self.retry_s
                errors.append(error)
                continue
            self._down_until[index] = 0.0
            if measured is not None and isinstance(result, EdgeReply):
                self._compute_ms[index, measured] = result.edge_ms
            return result
        assert errors  # there is at least one client, and every one failed
        last = errors[-1]
        if len(self.clients) > 1:  # each server's own reason, once, sorted (the same text for each model)
            reasons = sorted(dict.fromkeys(map(str, errors)))
            raise EdgeError(last.failure, f"all {len(self.clients)} edge servers failed: {'; '.join(reasons)}")
        raise last

    def infer(self, spec: EdgePartSpec, tensors: dict[str, np.ndarray], outputs: tuple[str, ...],
              compression: str | None = None, timeout_s: float | None = None, first: int | None = None) -> EdgeReply:
        """On the next server round-robin, or on `first` (an index into `clients`) while it works."""
        return self._each(lambda client: client.infer(spec, tensors, outputs, compression, timeout_s), rotate=True,
                          first=first, measured=spec.name)

    def status(self) -> ServerStatus:
        return self._each(lambda client: client.status(), rotate=False)

    def verify(self, spec: EdgePartSpec) -> None:
        self._each(lambda client: client.verify(spec), rotate=False)

    def probe(self, payload_bytes: int = 1 << 20, repeats: int = 3) -> LinkMeasurement:
        return self._each(lambda client: client.probe(payload_bytes, repeats), rotate=False)

    def traffic(self) -> tuple[int, int]:
        """Summed over the servers."""
        each = [client.traffic() for client in self.clients]
        return sum(sent for sent, _ in each), sum(in_flight for _, in_flight in each)

    def queue_totals(self) -> tuple[int, float]:
        """Summed over the servers that answer: the group's load."""
        totals = []
        for client in self.clients:
            try:
                totals.append(client.queue_totals())
            except EdgeError:
                continue
        if not totals:
            raise EdgeError(EdgeFailure.UNREACHABLE, "no edge server answered the statistics request")
        return sum(t[0] for t in totals), sum(t[1] for t in totals)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def connect(settings: list[EdgeSettings]) -> EdgeClient | EdgeGroup:
    """One client for one server; a fail-over group for several."""
    return EdgeClient(settings[0]) if len(settings) == 1 else EdgeGroup(settings)
