"""Who may call what on an edge server: one policy for `edge serve` and the stock-container set-up.

Workstations need health, metadata, a part's configuration, inference and statistics (the planner's queue
times). Everything else Triton offers loads, unloads or changes a model (and a model can be any code), registers
shared memory, or changes logging and tracing: those are the operator's, behind a credential Triton checks
itself (`--grpc-restricted-protocol`, `--http-restricted-api`).
"""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK = "127.0.0.1"
# gRPC methods of inference.GRPCInferenceService a workstation calls (edge_gateway passes these only).
WORKSTATION_CALLS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                     "ModelConfig", "ModelInfer", "ModelStatistics")
STREAMED_CALLS = ("ModelStreamInfer",)  # a decoupled part's inference (the halo part: bands of studies at once)
# Triton's API groups that need the operator's credential.
OPERATOR_APIS = ("model-repository", "shared-memory", "trace", "logging")
CREDENTIAL_HEADER = "mededge-admin"  # the HTTP header; over gRPC Triton expects it prefixed (operator_headers)


def operator_flags(credential: str) -> list[str]:
    """Triton's own lock on the operator APIs, over gRPC and HTTP: refused without the credential header."""
    restricted = f"{','.join(OPERATOR_APIS)}:{CREDENTIAL_HEADER}={credential}"
    return [f"--grpc-restricted-protocol={restricted}", f"--http-restricted-api={restricted}"]


def operator_headers(credential: str) -> dict[str, str]:
    """The gRPC metadata that opens the operator APIs (Triton prefixes restricted gRPC header keys)."""
    return {f"triton-grpc-protocol-{CREDENTIAL_HEADER}": credential}


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is reachable from this machine only. The wildcard addresses
    (0.0.0.0, ::) are every interface, so not loopback."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        # IP addresses are text; getaddrinfo's (int, bytes) form is for Python built without IPv6
        found = {address for *_, sockaddr in socket.getaddrinfo(host, None)
                 if isinstance(address := sockaddr[0], str)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in found)


def local_url_host(host: str) -> str:
    """How this machine reaches a listener on `host`: loopback for the wildcard addresses, brackets for IPv6."""
    host = {"0.0.0.0": LOOPBACK, "": LOOPBACK, "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host
