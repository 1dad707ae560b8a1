"""Triton Python-backend model that serves one MedEdge edge part (`model.onnx` beside it) with onnxruntime or
OpenVINO, or its PyTorch exported program (`model.pt2`) with PyTorch, as the export named (`mededge_runtime`).

`python main.py edge serve` places this file next to each exported `model.onnx`: the same ONNX and the
same inputs/outputs as in the stock-Triton repository, run by the `tritonserver` of the nvidia-pytriton
wheel without Docker. onnxruntime uses CUDA when onnxruntime-gpu is installed, else the CPU (with its CUDA
defaults); OpenVINO the CPU at FP32 (never BF16 behind the workstation's back); PyTorch the GPU when it has CUDA,
else the CPU, at FP32 (TF32 off). An FP16 or int8 part whose config names `mededge_served_through` (the FP32 part
of its cut, same weights and runtime) loads nothing: it decodes its input and runs its stages there.

A part loads only if its ONNX is the one exported: the bytes are read once, their SHA-256 compared with the
`mededge_onnx_sha256` the export wrote into the config, and the session made from those same bytes (nothing
can swap the file between the check and the load). The same for its tensors kept in the model's shared
`weights.bin` (see inference/edge/weights.py): the ranges the ONNX refers to are read once, checked against
`mededge_weights_sha256`, and put into the model before the session is made. A PyTorch exported program is checked
the same way (`mededge_pt2_sha256`) and loaded from the bytes checked.
"""

import errno
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# The backend stub runs Python isolated (PYTHONPATH ignored): the launcher names the environment whose
# packages (numpy 1.x, onnxruntime) this model uses; they go first, before the interpreter's own.
for folder in reversed(os.environ.get("MEDEDGE_SITE_PACKAGES", "").split(os.pathsep)):
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [tensor["name"] for tensor in config["input"]]
        # `edge_compute_ms` is added by the launcher (not in the ONNX): this part's compute time, so the
        # workstation can tell edge time from transfer time for every request.
        self.outputs = [t["name"] for t in config["output"] if t["name"] != "edge_compute_ms"]
        self.report_time = any(t["name"] == "edge_compute_ms" for t in config["output"])
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.fingerprint = _parameter(config, "mededge_fingerprint")
        self.session: _Through | _Halo | _Torch | _OpenVino | Any  # Any: an onnxruntime session
        through = _parameter(config, "mededge_served_through")
        if through:  # another wire format of a cut served here in FP32: its stages run there, on one copy of them
            self.session = _Through(through, self.fingerprint, self.inputs, self.outputs, self.report_time)
            return
        threads = int(os.environ.get("MEDEDGE_EDGE_THREADS", "0"))
        runtime = _parameter(config, "mededge_runtime") or "onnxruntime"
        if _parameter(config, "mededge_halo_bands"):  # a band of a halo split: rows swapped with other edges
            _same_torch(config)
            program = _checked(config, path.with_name("model.pt2"), "mededge_pt2_sha256")
            self.session = _Halo(config, program, threads, self.outputs)
            _return_freed_memory()
            return
        if runtime == "torch":
            _same_torch(config)
            self.session = _Torch(_checked(config, path.with_name("model.pt2"), "mededge_pt2_sha256"), threads)
            print(f"MedEdge edge part {config['name']}: PyTorch on {self.session.device}", file=sys.stderr,
                  flush=True)
            _return_freed_memory()
            return
        onnx = _with_shared_weights(config, _checked(config, path, "mededge_onnx_sha256"), path.parent)
        self.session = _OpenVino(onnx, threads) if runtime == "openvino" else _onnxruntime(onnx, threads)
        del onnx
        _return_freed_memory()

    def finalize(self):
        """Unloaded (or the server stopping): a halo part lets its peers' port go at once, for the part loaded again."""
        session = getattr(self, "session", None)
        if isinstance(session, _Halo):
            session.close()

    async def execute(self, requests):  # a coroutine: a part served through another awaits its calls together
        if isinstance(self.session, _Through):
            return await self.session.execute(requests)
        if isinstance(self.session, _Halo):
            await self.session.execute(requests)  # (decoupled: answered by the bands' threads)
            return None
        # Requests the dynamic batcher grouped are run as one batch, then split again; a request that names other
        # weights than these (a part served through this one, exported before this one was) is refused alone.
        responses = [_failed(f"asked for the weights {asked}, this part now runs {self.fingerprint}: load the part "
                             "served through it again") if asked else None
                     for asked in (_other_weights(r, self.fingerprint) for r in requests)]
        accepted = [index for index, response in enumerate(responses) if response is None]
        if not accepted:
            return responses
        try:
            arrays = [[pb_utils.get_input_tensor_by_name(requests[i], name).as_numpy() for name in self.inputs]
                      for i in accepted]
            sizes = [a[0].shape[0] for a in arrays]
            feeds = {name: np.concatenate([a[i] for a in arrays]) for i, name in enumerate(self.inputs)}
            started = time.perf_counter()
            results = self.session.run(self.outputs, feeds)
            compute_ms = (time.perf_counter() - started) * 1e3
        except Exception as exc:  # e.g. a tensor of another shape: every request run gets the reason
            for index in accepted:
                responses[index] = _failed(exc)
            return responses
        start = 0
        for index, size in zip(accepted, sizes, strict=True):
            tensors = [pb_utils.Tensor(name, result[start:start + size].copy())
                       for name, result in zip(self.outputs, results, strict=True)]
            if self.report_time:
                tensors.append(pb_utils.Tensor("edge_compute_ms", np.full((size, 1), compute_ms, np.float32)))
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += size
        return responses


def _failed(reason) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"edge part failed: {reason}"))


def _other_weights(request, fingerprint: str) -> str:
    """The weights a call from a part served through this one names, where they are not these ("" otherwise): that
    part was exported before this one was exported again and loaded, and its results would name the old weights.
    The workstations' own requests name none (they check the part's config)."""
    try:
        asked = json.loads(request.parameters() or "{}").get("mededge_fingerprint", fingerprint)
    except (ValueError, AttributeError):
        return ""
    return "" if asked == fingerprint else str(asked)


class _Through:
    """This part's wire format decoded here, its stages run by the FP32 part of the same cut in this server (a call
    within Triton per request, all awaited at once: that part's batcher groups them, Triton counts each): every
    wire format of a cut holds one copy of its weights. The decoding is the FP32 arithmetic the part's own ONNX does
    (inference/models/wire.py: uint8 codes, `_scale` and `_zero` per channel). Its compute time is the decoding's
    and the FP32 part's, not the wait in that part's queue."""

    def __init__(self, part: str, fingerprint: str, inputs: list, outputs: list, report_time: bool) -> None:
        self.part, self.fingerprint, self.inputs, self.outputs = part, fingerprint, inputs, outputs
        self.report_time = report_time
        self.crossing = [name for name in inputs if not name.endswith(("_scale", "_zero"))]

    async def execute(self, requests):
        import asyncio

        calls, decode_ms, responses = {}, {}, [None] * len(requests)
        for index, request in enumerate(requests):
            started = time.perf_counter()
            try:
                feeds = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
                tensors = [pb_utils.Tensor(name, _decoded(feeds, name)) for name in self.crossing]
            except Exception as exc:  # a tensor missing or of another type: this request gets the reason
                responses[index] = _failed(exc)
                continue
            decode_ms[index] = (time.perf_counter() - started) * 1e3
            calls[index] = pb_utils.InferenceRequest(
                model_name=self.part, requested_output_names=[*self.outputs, "edge_compute_ms"], inputs=tensors,
                parameters={"mededge_fingerprint": self.fingerprint})  # refused there unless its weights are these
        answers = await asyncio.gather(*(call.async_exec() for call in calls.values()))
        for index, answer in zip(calls, answers, strict=True):
            if answer.has_error():
                responses[index] = _failed(f"served through {self.part}: {answer.error().message()}")
                continue
            results = [pb_utils.get_output_tensor_by_name(answer, name).as_numpy() for name in self.outputs]
            tensors = [pb_utils.Tensor(name, result) for name, result in zip(self.outputs, results, strict=True)]
            if self.report_time:
                there = pb_utils.get_output_tensor_by_name(answer, "edge_compute_ms").as_numpy()
                tensors.append(pb_utils.Tensor("edge_compute_ms", (there + decode_ms[index]).astype(np.float32)))
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses


def _decoded(feeds: dict, name: str) -> np.ndarray:
    tensor = feeds[name]
    if tensor.dtype != np.uint8:
        return tensor.astype(np.float32)
    shape = feeds[name + "_scale"].shape + (1,) * (tensor.ndim - 2)
    return (tensor.astype(np.float32) - feeds[name + "_zero"].reshape(shape)) * feeds[name + "_scale"].reshape(shape)


def _return_freed_memory() -> None:
    """Give the C heap's free pages back to the system: building a session frees its copies of the weights (the
    checked bytes, the runtime's graph), and glibc's malloc keeps them — 420 of 1050 MB for the P5 detector's full
    offload, in every part's process. Elsewhere than glibc, nothing to do."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no libc.so.6 and no malloc_trim)
        pass


# This file runs inside Triton's stub, apart from the package: the names below ("mededge_runtime", "model.pt2",
# "mededge_pt2_sha256", "mededge_torch_version" and torch_release's major.minor) are inference/edge/repository.py's.
def _parameter(config: dict, key: str) -> str:
    return config.get("parameters", {}).get(key, {}).get("string_value", "")


def _checked(config: dict, path: Path, digest_key: str) -> bytes:
    """The bytes of `path`, read once, if their SHA-256 is the one the export recorded under `digest_key`."""
    data = path.read_bytes()
    expected = _parameter(config, digest_key)
    actual = hashlib.sha256(data).hexdigest()
    if not expected:
        raise RuntimeError(
            f"edge part {config['name']} refused: its config records no digest of its {path.name} (exported by an "
            "older MedEdge): re-export the repository with `python main.py edge export`")
    if actual != expected:
        raise RuntimeError(
            f"edge part {config['name']} refused: its {path.name} (sha256 {actual[:16]}) is not the one "
            f"exported (sha256 {expected[:16]}): re-export the repository")
    return data


def _same_torch(config: dict) -> None:
    """Refuse a PyTorch program exported by another PyTorch release than this edge's (its format is not promised to
    load across releases; `edge serve` without --repository exports with the edge's own)."""
    import torch

    here, exported = ".".join(torch.__version__.split(".")[:2]), _parameter(config, "mededge_torch_version")
    if exported != here:
        raise RuntimeError(f"edge part {config['name']} refused: exported with PyTorch {exported or 'unknown'}, this "
                           f"edge has {here}: export the repository again with this edge's PyTorch")


def _onnxruntime(onnx: bytes, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    available = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    # A session made from bytes keeps them as long as it lives (a second copy of the weights, 268 MB for the P5
    # detector's full offload); one made from a file does not. The checked bytes go through a sealed file in this
    # process's memory, closed once the session is made.
    import fcntl

    try:
        memory = os.memfd_create("mededge-edge-part", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):  # not Linux, or a kernel or sandbox without memfd
        return onnxruntime.InferenceSession(onnx, options, providers=providers)
    try:
        with os.fdopen(os.dup(memory), "wb") as file:
            file.write(onnx)
        # sealed: the bytes the runtime reads are the ones checked, nothing can change them in between
        fcntl.fcntl(memory, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        session = onnxruntime.InferenceSession(f"/proc/self/fd/{memory}", options, providers=providers)
    finally:
        os.close(memory)
    # A provider that fails later would make the session again from that path, whose number another file may hold
    # by then: no fallback, the request fails instead (and the workstation says so, or runs the study itself).
    session.disable_fallback()
    return session


class _OpenVino:
    """The part compiled by OpenVINO from the checked bytes; `run` as onnxruntime's session has it."""

    def __init__(self, onnx: bytes, threads: int) -> None:
        # `import openvino` reports usage to Intel unless its telemetry package cannot be imported: an edge box in
        # a hospital sends nothing out (see inference/runtimes/openvino.py).
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
        import openvino

        settings: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        self.compiled = core.compile_model(core.read_model(onnx), "CPU", settings)
        self.request = self.compiled.create_infer_request()  # Triton calls execute one batch at a time

    def run(self, outputs, feeds):
        self.request.infer(feeds)
        return [self.request.get_tensor(name).data.copy() for name in outputs]


class _Torch:
    """The part's exported program on this edge's GPU (CUDA_VISIBLE_DEVICES picks which), else its CPU; `run` as
    onnxruntime's session has it, the outputs in the order the export traced them (the config's)."""

    def __init__(self, program: bytes, threads: int) -> None:
        import io

        import torch

        torch.backends.cudnn.allow_tf32 = False  # FP32 means FP32, as on the workstation
        torch.backends.cuda.matmul.allow_tf32 = False
        # cudnn.benchmark stays off: the batcher's batches vary in size (1 to 8), and it would search the fastest
        # algorithms again for each new one, inside requests (it made a batched GPU edge 6x slower)
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # its weights as tensors only: PyTorch's unpickler may not run code from the file, even one that is this
        # part's by digest (whoever wrote the repository wrote the digest too)
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        exported = torch.export.load(io.BytesIO(program))
        if self.device.type != "cpu":  # its weights, and the devices the export recorded (grids), moved
            from torch.export.passes import move_to_device_pass

            exported = move_to_device_pass(exported, self.device)
        self.module = exported.module()

    def run(self, outputs, feeds):
        torch = self.torch
        with torch.inference_mode():
            tensors = [torch.from_numpy(array).to(self.device, non_blocking=True) for array in feeds.values()]
            results = self.module(*tensors)
            return [result.cpu().numpy() for result in results[:len(outputs)]]


def _with_shared_weights(config: dict, onnx: bytes, folder: Path) -> bytes:
    """The part with the tensors it keeps in `weights.bin` read in, once, and checked; unchanged without any."""
    import onnx as onnx_format

    model = onnx_format.load_from_string(onnx)
    external = [t for t in model.graph.initializer if t.data_location == onnx_format.TensorProto.EXTERNAL]
    if not external:
        return onnx
    expected = config.get("parameters", {}).get("mededge_weights_sha256", {}).get("string_value", "")
    used = hashlib.sha256()
    with (folder / "weights.bin").open("rb") as source:
        for tensor in external:
            fields = {entry.key: entry.value for entry in tensor.external_data}
            if fields.get("location") != "weights.bin":  # the export never points elsewhere
                raise RuntimeError(f"edge part {config['name']} refused: a tensor of its model.onnx is kept in "
                                   f"{fields.get('location')!r}, not in the shared weights.bin: re-export")
            source.seek(int(fields.get("offset", 0)))
            data = source.read(int(fields["length"]))
            used.update(data)
            tensor.raw_data = data
            del tensor.external_data[:]
            tensor.data_location = onnx_format.TensorProto.DEFAULT
    if used.hexdigest() != expected:
        raise RuntimeError(f"edge part {config['name']} refused: the weights it reads from weights.bin are not "
                           "the ones exported: re-export the repository")
    return model.SerializeToString()


# A halo part (inference/models/halo.py): the whole detector on one band of an image, its layers' rows swapped with
# the edges that hold the bands above and below, over a peer channel between edges. A workstation sends each band
# to its edge at once, all under one session (16 random bytes, hex, a request parameter, never sent in the clear
# beyond loopback); the edge of band i connects to the edge of band i + 1 at the address the workstation names,
# which must be one of this edge's peers (MEDEDGE_HALO_PEERS, set by the operator: the edge connects nowhere else).
# The listener (MEDEDGE_HALO_LISTEN) takes a connection only for a session and band one of its requests runs or
# will run within HALO_WAIT_S, and over TLS only from a peer whose certificate the peers' CA signed (mutual TLS).
HALO_HELLO = b"MEDEDGE-HALO-1\n"
HALO_WAIT_S = 10.0  # for the other band's request, or its edge's connection
HALO_SWAP_S = 60.0  # for a neighbour's rows (a layer's compute on the other edge comes first)
HALO_PENDING = 16  # connections waiting for their band's request, at most (the oldest is closed for a new one)
HALO_SESSIONS = 8  # bands of different studies run at once (each its own thread); more wait for one to end


class _HaloRefused(Exception):
    """A request or a connection the halo part refuses: its message says why."""


class _HaloPeers:
    """The peer channel: a listener and the connections of the bands this edge runs, on an event loop of its own."""

    def __init__(self, listen: str, peers: set[str], tls: list[str]) -> None:
        import asyncio
        import socket
        import ssl
        import threading

        self.asyncio = asyncio
        self.peers = peers
        # the addresses the peers connect from (as named, resolved): a connection from elsewhere is closed at once
        self.peer_hosts = {info[4][0] for peer in peers
                           for info in socket.getaddrinfo(peer.rsplit(":", 1)[0].strip("[]"), None)}
        self.server_tls = self.client_tls = None
        if tls:  # certificate, key, and the CA that signed every peer's certificate
            certificate, key, authority = tls
            self.server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=authority)
            self.server_tls.load_cert_chain(certificate, key)
            self.server_tls.verify_mode = ssl.CERT_REQUIRED
            self.client_tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=authority)
            self.client_tls.load_cert_chain(certificate, key)
        self.arrived: dict[tuple[str, int], Any] = {}  # (session, band) → a Future of the connection from above
        self.claimed: set[tuple[str, int]] = set()  # those a request waits on
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="halo-peers", daemon=True).start()
        host, port = listen.rsplit(":", 1)
        deadline = time.monotonic() + HALO_WAIT_S
        while True:  # the part loaded again by the operator: its previous process may still hold the port a moment
            try:
                self.server = self._wait(asyncio.start_server(
                    self._accept, host.strip("[]"), int(port), ssl=self.server_tls,
                    ssl_handshake_timeout=HALO_WAIT_S if tls else None), HALO_WAIT_S)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _wait(self, coroutine, timeout: float):
        return self.asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def _slot(self, key: tuple[str, int]):
        if key not in self.arrived:
            unclaimed = [k for k in self.arrived if k not in self.claimed]
            if len(unclaimed) >= HALO_PENDING:  # a connection no request took yet: the oldest goes (a request's never)
                self._expire(unclaimed[0])
            self.arrived[key] = self.loop.create_future()
            self.loop.call_later(HALO_WAIT_S, self._expire, key)
        return self.arrived[key]

    def _expire(self, key: tuple[str, int]) -> None:
        if key in self.claimed:  # a request waits on it, with its own time limit
            return
        future = self.arrived.pop(key, None)
        if future is not None and future.done() and not future.cancelled():
            future.result()[1].close()  # a connection no request took
        elif future is not None:
            future.cancel()

    async def _accept(self, reader, writer) -> None:
        """A peer's hello: the session and the band it holds rows for; anything else is closed unanswered."""
        try:
            if (writer.get_extra_info("peername") or ("",))[0] not in self.peer_hosts:
                raise _HaloRefused("not from a peer")
            hello = await self.asyncio.wait_for(reader.readexactly(len(HALO_HELLO) + 32 + 4), HALO_WAIT_S)
            session, band = _halo_session(hello[len(HALO_HELLO):-4]), int.from_bytes(hello[-4:], "big")
            if not hello.startswith(HALO_HELLO):
                raise _HaloRefused("not a halo hello")
            future = self._slot((session, band))
            if future.done():
                raise _HaloRefused("a second connection for the same band")
            future.set_result((reader, writer))
        except (_HaloRefused, ValueError, OSError, self.asyncio.IncompleteReadError, self.asyncio.TimeoutError):
            writer.close()

    def above(self, session: str, band: int):
        """The connection from the edge running band − 1 of `session` (made to this edge's listener)."""
        async def wait():
            key = (session, band)
            future = self._slot(key)
            self.claimed.add(key)
            try:
                return await self.asyncio.wait_for(future, HALO_WAIT_S)
            finally:
                self.claimed.discard(key)
                self.arrived.pop(key, None)

        try:
            return self._wait(wait(), HALO_WAIT_S + 1)
        except (TimeoutError, self.asyncio.TimeoutError):
            raise _HaloRefused(f"the edge running band {band - 1} did not connect within {HALO_WAIT_S:.0f} s") from None

    def below(self, session: str, band: int, address: str):
        """A connection to the edge running band + 1 of `session` at `address`: one of this edge's peers only."""
        if address not in self.peers:
            raise _HaloRefused(f"{address} is not one of this edge's halo peers (edge serve --halo-peers)")
        host, port = address.rsplit(":", 1)

        async def connect():
            reader, writer = await self.asyncio.open_connection(
                host.strip("[]"), int(port), ssl=self.client_tls,
                server_hostname=host.strip("[]") if self.client_tls else None)
            writer.write(HALO_HELLO + bytes.fromhex(session) + bytes(16) + (band + 1).to_bytes(4, "big"))
            await writer.drain()
            return reader, writer

        try:
            return self._wait(self.asyncio.wait_for(connect(), HALO_WAIT_S), HALO_WAIT_S + 1)
        except (OSError, TimeoutError, self.asyncio.TimeoutError):
            # (worded without the words of a TLS failure: this workstation's own link to the edge is fine)
            raise _HaloRefused(f"cannot reach the halo peer {address}, or it refused this edge") from None

    def swap(self, links: dict[str, Any], first: bytes, last: bytes) -> tuple[bytes | None, bytes | None]:
        """Send `first` up and `last` down, then read the neighbours' rows (as many bytes as sent each way)."""
        async def trade():
            for name, rows in (("above", first), ("below", last)):
                if links.get(name):
                    links[name][1].write(rows)
            received = []
            for name, rows in (("above", first), ("below", last)):
                received.append(await links[name][0].readexactly(len(rows)) if links.get(name) else None)
            return received

        try:
            above, below = self._wait(trade(), HALO_SWAP_S)
        except (OSError, TimeoutError, self.asyncio.TimeoutError, self.asyncio.IncompleteReadError):
            raise _HaloRefused("the edge of the neighbouring band stopped sending its rows") from None
        return above, below

    def close(self, links: dict[str, Any]) -> None:
        for link in links.values():
            if link:
                self.loop.call_soon_threadsafe(link[1].close)

    def stop(self) -> None:
        """Stop listening (the port free for the next process) and end the loop."""
        async def stop_listening():
            self.server.close()
            await self.server.wait_closed()

        try:
            self._wait(stop_listening(), HALO_WAIT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


def _halo_session(raw: bytes) -> str:
    """A session as sent in a hello: 16 random bytes then 16 zero bytes (room for a longer one)."""
    if len(raw) != 32 or any(raw[16:]):
        raise _HaloRefused("malformed session")
    return raw[:16].hex()


class _Halo:
    """The halo part: its exported program, run on one request's band at a time, swapping rows through `_HaloPeers`."""

    def __init__(self, config: dict, program: bytes, threads: int, outputs: list) -> None:
        import io
        import threading

        import torch

        if threads:
            torch.set_num_threads(threads)
        from concurrent.futures import ThreadPoolExecutor

        self.torch, self.outputs = torch, outputs
        self.bands = int(_parameter(config, "mededge_halo_bands"))
        self.pool = ThreadPoolExecutor(HALO_SESSIONS, thread_name_prefix="halo-band")
        self.running = threading.local()  # the links of the band this thread runs

        # The operator the exported program calls (inference/models/halo.py defines the same schema for the
        # workstation; this file runs apart from the package): here its rows come over the peer channel.
        @torch.library.custom_op("mededge::halo_rows", mutates_args=())
        def halo_rows(x: torch.Tensor, reach: int, edge: float) -> torch.Tensor:
            first, last = x[:, :, :reach].contiguous(), x[:, :, -reach:].contiguous()
            try:
                above, below = self.peers.swap(self.running.links, first.numpy().tobytes(), last.numpy().tobytes())
            except _HaloRefused as exc:  # (PyTorch may wrap what an operator raises: the reason is kept here)
                self.running.refused = exc
                raise

            def rows(data: bytes | None, like: torch.Tensor) -> torch.Tensor:
                if data is None:
                    return torch.full_like(like, edge)
                return torch.frombuffer(bytearray(data), dtype=torch.float32).view(like.shape)

            return torch.cat([rows(above, first), x, rows(below, last)], dim=2)

        @halo_rows.register_fake
        def _(x: torch.Tensor, reach: int, edge: float) -> torch.Tensor:
            return x.new_empty(x.shape[0], x.shape[1], x.shape[2] + 2 * reach, x.shape[3])

        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # as _Torch: tensors only from the file
        self.module = torch.export.load(io.BytesIO(program)).module()
        listen = os.environ.get("MEDEDGE_HALO_LISTEN", "")
        if not listen:
            raise RuntimeError(f"edge part {config['name']} needs a halo listener: serve it with "
                               "`edge serve --halo-listen HOST:PORT --halo-peers …`")
        peers = {p for p in os.environ.get("MEDEDGE_HALO_PEERS", "").split(",") if p}
        tls = [f for f in os.environ.get("MEDEDGE_HALO_TLS", "").split(os.pathsep) if f]
        self.peers = _HaloPeers(listen, peers, tls)
        print(f"MedEdge edge part {config['name']}: halo peers reach it on {listen}"
              f"{' (mutual TLS)' if tls else ' (plaintext)'}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.peers.stop()

    async def execute(self, requests):
        """Decoupled: each band runs in a thread of its own and is answered when it ends, so bands of other studies
        run meanwhile (an edge running one band at a time would hold one study's band while the other edge holds
        another's, each waiting for rows the other cannot send)."""
        for request in requests:
            self.pool.submit(self._answer, request)

    def _answer(self, request) -> None:
        request.get_response_sender().send(self._one(request), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _one(self, request):
        links: dict[str, Any] = {}
        try:
            asked = json.loads(request.parameters() or "{}")
            session, band = str(asked.get("mededge_halo_session", "")), int(asked.get("mededge_halo_band", -1))
            if len(session) != 32 or any(c not in "0123456789abcdef" for c in session):
                raise _HaloRefused("a halo request needs its session (32 hex digits)")
            if not 0 <= band < self.bands:
                raise _HaloRefused(f"band {band} is not one of this part's {self.bands}")
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            if band > 0:
                links["above"] = self.peers.above(session, band)
            if band < self.bands - 1:
                links["below"] = self.peers.below(session, band, str(asked.get("mededge_halo_below", "")))
            self.running.links, self.running.refused = links, None
            torch = self.torch
            started = time.perf_counter()
            with torch.inference_mode():
                maps = self.module(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
            compute_ms = (time.perf_counter() - started) * 1e3
        except _HaloRefused as exc:
            return _failed(exc)
        except Exception:  # e.g. a band of another shape: the workstation gets one line, the edge's log the rest
            if getattr(self.running, "refused", None) is not None:
                return _failed(self.running.refused)
            import traceback

            traceback.print_exc(file=sys.stderr)
            return _failed("the band could not run on this edge (see its log)")
        finally:
            self.peers.close(links)
        tensors = [pb_utils.Tensor(name, m.numpy()) for name, m in zip(self.outputs, maps, strict=True)]
        tensors.append(pb_utils.Tensor("edge_compute_ms", np.full((image.shape[0], 1), compute_ms, np.float32)))
        return pb_utils.InferenceResponse(output_tensors=tensors)
