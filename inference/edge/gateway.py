"""The edge server's face to the network: a gRPC front that passes the workstations' calls to Triton.

Triton listens on a Unix socket only the service's user can open; this gateway listens where the workstations
reach the edge. It exists for what Triton's own options cannot do (in the 2.51 release of the nvidia-pytriton
wheel, and in the stock container's):

- **Bounded requests.** Triton accepts gRPC messages up to 2 GiB and buffers each in full before it checks the
  tensors (measured: one 1.5 GB request for a 100 KB input took tritonserver's memory from 0.04 to 3 GB). Here
  gRPC refuses a message larger than the largest legitimate request as soon as its length prefix arrives,
  after decompression too (a deflate bomb is refused at the same size). Calls are served by asyncio, so a
  client that opens calls and never sends their bodies ties up no thread; each connection may hold
  `STREAMS_PER_CONNECTION` calls, the gateway `MAX_CONCURRENT_CALLS`, idle connections are closed and no call
  outlives `MAX_CALL_S`.
- **Only what a workstation calls.** Health, metadata, the part's configuration, inference and statistics pass
  (and the standard gRPC health check, for load balancers); every other call (repository load/unload, shared
  memory, logging, tracing) is unknown here. Triton refuses those too without the operator's credential
  (`--grpc-restricted-protocol`): two locks, either one enough.

TLS and mutual TLS end here, with gRPC's own TLS (the same as Triton's). Requests are passed on as the bytes
that arrived, without the caller's metadata, so nothing from the network reaches Triton but the message.
"""

from __future__ import annotations

import asyncio
import math
import threading
from typing import NoReturn, Protocol

import grpc

from inference.edge.access import STREAMED_CALLS, WORKSTATION_CALLS

SERVICE = "inference.GRPCInferenceService"
HEALTH = ("grpc.health.v1.Health", "Check")  # the standard health check (Triton answers it too)
MAX_CONCURRENT_CALLS = 64       # beyond this gRPC answers RESOURCE_EXHAUSTED: memory stays under 64 × the largest request
STREAMS_PER_CONNECTION = 16     # a workstation keeps a few calls in flight (a pipelined series: 2 studies ahead)
MAX_CALL_S = 600.0              # a call without a deadline is given this one
IDLE_CONNECTION_MS = 5 * 60_000  # a connection with no call for this long is closed


class _CallContext(Protocol):
    """What a forwarder uses of `grpc.aio.ServicerContext` (grpc ships no type information)."""

    def time_remaining(self) -> float | None: ...

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn: ...


class EdgeGateway:
    """Listens on `host:port` (TLS when `credentials` are given) and forwards to Triton's gRPC at `triton`.

    Runs its own asyncio loop in a thread: `start()` returns once it listens, `stop()` once it has stopped."""

    def __init__(self, triton: str, host: str, port: int, max_request_bytes: int,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.triton = triton
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_request_bytes = max_request_bytes
        self.credentials = credentials
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="edge-gateway", daemon=True)
        self._server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    async def _serve(self) -> None:
        self._channel = channel = grpc.aio.insecure_channel(
            self.triton, options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        self._server = grpc.aio.server(
            maximum_concurrent_rpcs=MAX_CONCURRENT_CALLS,
            options=[("grpc.max_receive_message_length", self.max_request_bytes),
                     ("grpc.max_send_message_length", -1),
                     ("grpc.max_concurrent_streams", STREAMS_PER_CONNECTION),
                     ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
                     ("grpc.so_reuseport", 0)])  # a port already taken is an error, never shared
        calls = {name: self._forwarder(channel, SERVICE, name) for name in WORKSTATION_CALLS}
        calls.update({name: self._stream_forwarder(channel, SERVICE, name) for name in STREAMED_CALLS})
        self._server.add_generic_rpc_handlers([
            grpc.method_handlers_generic_handler(SERVICE, calls),
            grpc.method_handlers_generic_handler(HEALTH[0], {HEALTH[1]: self._forwarder(channel, *HEALTH)})])
        if self.credentials is None:
            self._server.add_insecure_port(self.address)
        else:
            self._server.add_secure_port(self.address, self.credentials)
        await self._server.start()

    @staticmethod
    def _forwarder(channel: grpc.aio.Channel, service: str, method: str) -> grpc.RpcMethodHandler:
        async def forward(request: bytes, context: _CallContext) -> bytes:
            call = channel.unary_unary(f"/{service}/{method}")  # bytes in, bytes out: nothing re-encoded
            remaining = context.time_remaining()
            timeout = min(remaining, MAX_CALL_S) if remaining is not None and math.isfinite(remaining) else MAX_CALL_S
            try:
                # The workstation giving up cancels this task, and with it Triton's request.
                return await call(request, timeout=timeout)
            except grpc.aio.AioRpcError as error:  # Triton's own answer (a refused tensor, a missing part), as it is
                await context.abort(error.code(), error.details() or "")

        return grpc.unary_unary_rpc_method_handler(forward)

    @staticmethod
    def _stream_forwarder(channel: grpc.aio.Channel, service: str, method: str) -> grpc.RpcMethodHandler:
        """A stream both ways, each message passed on as its bytes (each bounded as a request is)."""
        async def forward(requests, context: _CallContext):
            call = channel.stream_stream(f"/{service}/{method}")
            remaining = context.time_remaining()
            timeout = min(remaining, MAX_CALL_S) if remaining is not None and math.isfinite(remaining) else MAX_CALL_S
            try:
                async for response in call(requests, timeout=timeout):
                    yield response
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")

        return grpc.stream_stream_rpc_method_handler(forward)

    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(30)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace_s: float = 5.0) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                await self._server.stop(grace_s)
            if self._channel is not None:
                await self._channel.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(grace_s + 10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()


def server_credentials(certificate: bytes, key: bytes, client_ca: bytes | None) -> grpc.ServerCredentials:
    """TLS; with `client_ca`, mutual TLS: a client must present a certificate that CA signed."""
    return grpc.ssl_server_credentials([(key, certificate)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
