"""Run a real NVIDIA Triton Inference Server without Docker: the `tritonserver` in the nvidia-pytriton wheel.

That build has only the Python backend, so the repository it serves is the Python-backend overlay of an
exported repository (see edge_repository). Its backend stub links libpython: this interpreter's LIBDIR goes
first on LD_LIBRARY_PATH, or another Python's libpython is picked up and model start fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

EXIT_TIMEOUT_S = 5  # Triton waits this long for in-flight requests on SIGTERM (its default is 30)


class EdgeServerError(RuntimeError):
    """The server cannot start (or stopped); the message says why in one line."""


@dataclass(frozen=True)
class TlsFiles:
    certificate: Path
    key: Path
    client_ca: Path | None = None  # set for mutual TLS: clients must present a certificate it signed


@dataclass(frozen=True)
class Installation:
    tritonserver: Path
    python_backend: Path
    stub: Path
    libraries: Path

    @classmethod
    def find(cls, site: Path | None = None) -> Installation:
        """The Triton of the installed nvidia-pytriton, or of the one unpacked in folder `site` (e.g. a
        `pip install --target` of another release, to serve with another Triton version)."""
        if site is None:
            try:
                import pytriton
            except ImportError as exc:
                raise EdgeServerError("the nvidia-pytriton package is not installed: "
                                      "pip install nvidia-pytriton") from exc
            site = Path(pytriton.__file__).resolve().parent.parent
        root = Path(site) / "pytriton" / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        found = cls(root / "bin" / "tritonserver", root / "backends" / "python",
                    root / "python_backend_stubs" / version / "triton_python_backend_stub",
                    Path(site) / "nvidia_pytriton.libs")
        for path in (found.tritonserver, found.python_backend, found.stub):
            if not path.exists():
                raise EdgeServerError(f"incomplete nvidia-pytriton installation: {path} is missing")
        return found

    def backend_directory(self, where: Path) -> Path:
        """A backend folder holding the wheel's Python backend and this interpreter's stub."""
        python = where / "python"
        python.mkdir(parents=True, exist_ok=True)
        for source in (*self.python_backend.iterdir(), self.stub):
            if source.name == "__pycache__":
                continue
            link = python / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source)
        return where

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        libraries = [sysconfig.get_config_var("LIBDIR") or "", str(self.libraries), env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libraries if p)
        # The stub ignores PYTHONPATH (isolated mode); model.py adds these folders itself.
        paths = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        env["MEDEDGE_SITE_PACKAGES"] = os.pathsep.join(dict.fromkeys(paths))
        return env


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the system has free on `host` right now (for tests and the benchmark)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind((host, 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def port_in_use(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class EdgeServer:
    """A tritonserver process serving `repository` (a Python-backend repository) on the given ports."""

    repository: Path
    work_dir: Path
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    tls: TlsFiles | None = None
    log_verbose: int = 0
    triton_site: Path | None = None  # another nvidia-pytriton's folder (Installation.find); None: the installed one
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.work_dir / "tritonserver.log"

    def _local_url_host(self) -> str:
        """How this machine reaches the server: loopback for the wildcard addresses, brackets for IPv6."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    @property
    def grpc_address(self) -> str:
        return f"{self._local_url_host()}:{self.grpc_port}"

    def command(self, installation: Installation) -> list[str]:
        backends = installation.backend_directory(self.work_dir / "backends")
        command = [str(installation.tritonserver), f"--model-repository={self.repository}",
                   f"--backend-directory={backends}", f"--grpc-address={self.host}",
                   f"--grpc-port={self.grpc_port}", f"--http-address={self.host}", f"--http-port={self.http_port}",
                   f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                   f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
                   "--strict-readiness=true", f"--log-verbose={self.log_verbose}", "--allow-gpu-metrics=false",
                   # every part loads at start; IT can still unload or reload one through the API
                   "--model-control-mode=explicit", "--load-model=*"]
        if self.tls is not None:
            command += ["--grpc-use-ssl=true", f"--grpc-server-cert={self.tls.certificate}",
                        f"--grpc-server-key={self.tls.key}"]
            if self.tls.client_ca is not None:
                command += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={self.tls.client_ca}"]
        return command

    def start(self, ready_timeout_s: float = 180.0) -> None:
        busy = [f"{name} port {port}" for name, port in (("gRPC", self.grpc_port), ("HTTP", self.http_port),
                                                          ("metrics", self.metrics_port))
                if port_in_use(self.host, port)]
        if busy:
            raise EdgeServerError(f"cannot start: {', '.join(busy)} already in use on {self.host} "
                                  "(another server running? choose other ports)")
        installation = Installation.find(self.triton_site)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(installation), stdout=log, stderr=subprocess.STDOUT,
                                        env=installation.environment(), start_new_session=True)
        log.close()
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EdgeServerError(f"tritonserver exited with code {self.process.returncode}: {self.log_tail()}")
            if self._http_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise EdgeServerError(f"tritonserver not ready after {timeout_s:.0f} s: {self.log_tail()}")

    def _http_ready(self) -> bool:
        """Readiness over HTTP on loopback: independent of the gRPC TLS settings."""
        import urllib.request

        try:
            url = f"http://{self._local_url_host()}:{self.http_port}/v2/health/ready"
            with urllib.request.urlopen(url, timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errors = [line for line in text if " E" in line[:2] or "error" in line.lower()]
        return " | ".join((errors or text)[-lines:])[:600]

    def stop(self, timeout_s: float = EXIT_TIMEOUT_S + 10) -> None:
        """SIGTERM, then SIGKILL if Triton has not exited in time; the Python stubs go with it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> EdgeServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
