"""The edge server's face to the network: a gRPC front that passes the workstations' calls to Triton.

Triton listens on loopback only; this gateway listens where the workstations reach the edge. It exists for two
things Triton's own options cannot do (in the 2.51 release of the nvidia-pytriton wheel, and in the stock
container's):

- **Bounded requests.** Triton accepts gRPC messages up to 2 GiB and buffers each in full before it checks the
  tensors (measured: one 1.5 GB request for a 100 KB input took tritonserver's memory from 0.04 to 3 GB). Here
  gRPC refuses a message larger than the largest legitimate request as soon as its length prefix arrives,
  after decompression too (a deflate bomb is refused at the same size), and at most `MAX_CONCURRENT_CALLS` are
  in flight.
- **Only what a workstation calls.** Health, metadata, the part's configuration, inference and statistics pass;
  every other call (repository load/unload, shared memory, logging, tracing) is unknown here. Triton refuses
  those too without the operator's credential (`--grpc-restricted-protocol`): two locks, either one enough.

TLS and mutual TLS end here, with gRPC's own TLS (the same as Triton's). Requests are passed on as the bytes
that arrived, without the caller's metadata, so nothing from the network reaches Triton but the message.
"""

from __future__ import annotations

import math
from concurrent import futures

import grpc

from inference.edge_access import WORKSTATION_CALLS

SERVICE = "inference.GRPCInferenceService"
MAX_CONCURRENT_CALLS = 64  # beyond this gRPC answers RESOURCE_EXHAUSTED: memory stays under 64 × the largest request
WORKERS = 16


class EdgeGateway:
    """Listens on `host:port` (TLS when `credentials` are given) and forwards to Triton's gRPC at `triton`."""

    def __init__(self, triton: str, host: str, port: int, max_request_bytes: int,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        self.max_request_bytes = max_request_bytes
        self._channel = grpc.insecure_channel(triton, options=[("grpc.max_receive_message_length", -1),
                                                                ("grpc.max_send_message_length", -1)])
        self._server = grpc.server(
            futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="edge-gateway"),
            maximum_concurrent_rpcs=MAX_CONCURRENT_CALLS,
            options=[("grpc.max_receive_message_length", max_request_bytes),
                     ("grpc.max_send_message_length", -1),
                     ("grpc.so_reuseport", 0)])  # a port already taken is an error, never shared
        handlers = {name: self._forwarder(name) for name in WORKSTATION_CALLS}
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if credentials is None:
            self._server.add_insecure_port(target)
        else:
            self._server.add_secure_port(target, credentials)

    def _forwarder(self, method: str) -> grpc.RpcMethodHandler:
        call = self._channel.unary_unary(f"/{SERVICE}/{method}")  # bytes in, bytes out: nothing re-encoded

        def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
            remaining = context.time_remaining()
            timeout = remaining if remaining is not None and math.isfinite(remaining) and remaining < 1e6 else None
            pending = call.future(request, timeout=timeout)
            context.add_callback(pending.cancel)  # the workstation gave up: so does Triton's request
            try:
                return pending.result()
            except grpc.RpcError as error:  # Triton's own answer (a refused tensor, a missing part), as it is
                context.abort(error.code(), error.details() or "")
            except grpc.FutureCancelledError:
                context.abort(grpc.StatusCode.CANCELLED, "cancelled by the caller")

        return grpc.unary_unary_rpc_method_handler(forward)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_s: float = 5.0) -> None:
        self._server.stop(grace_s).wait()
        self._channel.close()


def server_credentials(certificate: bytes, key: bytes, client_ca: bytes | None) -> grpc.ServerCredentials:
    """TLS; with `client_ca`, mutual TLS: a client must present a certificate that CA signed."""
    return grpc.ssl_server_credentials([(key, certificate)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
