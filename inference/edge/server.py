"""Run a real NVIDIA Triton Inference Server without Docker: the `tritonserver` in the nvidia-pytriton wheel.

That build has only the Python backend, so the repository it serves is the Python-backend overlay of an
exported repository (see edge_repository). Its backend stub links libpython: this interpreter's LIBDIR goes
first on LD_LIBRARY_PATH, or another Python's libpython is picked up and model start fails.

Secure by default: the network reaches only the gateway (edge_gateway: the calls a workstation makes, requests
bounded in size, TLS). Triton's gRPC listens on a Unix socket in a folder only the server's user can enter (no
TCP port: other users of the machine cannot reach it either), its HTTP is off, its metrics (read-only) listen on
loopback; and Triton itself refuses every call that loads, unloads or changes a model, registers shared memory
or changes logging or tracing unless it carries a credential made at each start (`--grpc-restricted-protocol`;
it also lies in `control.json`, mode 0600, for `edge control`). Plaintext beyond loopback needs `insecure=True`.
The repository must be changeable by nobody but its owner (and root), hold no symbolic links, and each part
loads only if its ONNX is the one exported (inference/resources/triton/python_model.py checks the SHA-256); the
other code it runs (the folders in MEDEDGE_SITE_PACKAGES, Triton's folder, this interpreter's site-packages) must
be changeable by nobody else either. Write access through a group counts unless it is the owner's own group.
"""

from __future__ import annotations

import functools
import grp
import importlib.util
import json
import os
import pwd
import secrets
import signal
import site as python_site
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from inference.edge.access import LOOPBACK, is_loopback, local_url_host, operator_flags, operator_headers
from inference.edge.client import parse_address
from inference.edge.gateway import EdgeGateway, server_credentials
from inference.edge.repository import (
    HALO_ADDRESS,
    HALO_BANDS,
    fp32_sibling,
    largest_request_bytes,
    overlay_part,
    python_backend_overlay,
    read_config,
    served_through,
)
from security.pem import check_server_files

EXIT_TIMEOUT_S = 5  # Triton waits this long for in-flight requests on SIGTERM (its default is 30)
UNLOAD_WAIT_S = 30.0  # an operator's unload waits this long for the part to finish its requests and go


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
        site = installed_triton_site() if site is None else site
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
        libdir = sysconfig.get_config_var("LIBDIR")
        libraries = [*([Path(libdir).resolve()] if libdir else []), self.libraries, *inherited_library_folders()]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(str(folder) for folder in libraries))
        # The stub ignores PYTHONPATH (isolated mode); model.py adds these folders itself: any the operator named in
        # MEDEDGE_SITE_PACKAGES first (e.g. a NumPy 1.x for the stub where this interpreter has 2.x), then this
        # interpreter's.
        operator = [str(folder) for folder in operator_site_packages()]
        paths = [*operator, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        env["MEDEDGE_SITE_PACKAGES"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
        for name in ("MEDEDGE_HALO_LISTEN", "MEDEDGE_HALO_PEERS", "MEDEDGE_HALO_TLS"):
            env.pop(name, None)  # (set by EdgeServer for its own server only)
        return env


def installed_triton_site() -> Path:
    """The folder the installed nvidia-pytriton lies in (found, not imported: only its files are used, and
    importing it loads its client too)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise EdgeServerError("the nvidia-pytriton package is not installed: pip install nvidia-pytriton")
    return Path(spec.origin).resolve().parent.parent


def inherited_library_folders() -> list[Path]:
    """The folders of this process's LD_LIBRARY_PATH, resolved, as the server is given them: an empty entry (the
    current folder, to the loader) is dropped."""
    return [Path(folder).resolve() for folder in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if folder]


def operator_site_packages() -> list[Path]:
    """The folders the operator named in MEDEDGE_SITE_PACKAGES, resolved: the parts import from them first."""
    return [Path(folder).resolve() for folder in os.environ.get("MEDEDGE_SITE_PACKAGES", "").split(os.pathsep)
            if folder]


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



@functools.cache
def _private_group(gid: int, owner: int) -> bool:
    """Whether group `gid` is `owner`'s own (a user private group, as pip's files get under umask 002): the owner's
    primary group, named as the owner, with no member but the owner. Its write bit lets no one else in. (Accounts
    that have it as their primary group cannot be listed where accounts come from a directory, hence the name.)"""
    try:
        account, group = pwd.getpwuid(owner), grp.getgrgid(gid)
    except KeyError:
        return False
    return account.pw_gid == gid and group.gr_name == account.pw_name and set(group.gr_mem) <= {account.pw_name}


def writable_by_others(repository: Path, owner: int | None = None, links: bool = False,
                       contents: bool = True) -> str | None:
    """Why someone other than `owner` (default: this process's user) or root could change what the server will
    run from `repository`: the first path that another user owns or may write (the repository, anything in it, a
    folder above it unless sticky, like /tmp; group write counts unless the group is its owner's own), or a
    symbolic link in it — with `links`, a link is judged by what it points to, as if that were there (the
    folders above it too, a linked folder's contents, a link to nothing refused: another user might create it).
    Without `contents`, the folder and those above it only. None when there is no such path."""
    trusted = frozenset({0, os.geteuid() if owner is None else owner})

    def unsafe(path: Path | str, above: bool = False, info: os.stat_result | None = None) -> str | None:
        info = info or os.lstat(path)
        if info.st_uid not in trusted:
            return f"{path} belongs to another user (uid {info.st_uid})"
        others = stat.S_IWOTH | (0 if _private_group(info.st_gid, info.st_uid) else stat.S_IWGRP)
        if info.st_mode & others and not (above and info.st_mode & stat.S_ISVTX):
            return f"{path} can be changed by other users (mode {stat.S_IMODE(info.st_mode):04o})"
        return None

    def with_folders_above(path: Path) -> str | None:
        for folder in reversed(path.parents):
            if problem := unsafe(folder, above=True):
                return problem
        return unsafe(path)

    root = repository.resolve()
    if (problem := with_folders_above(root)) or not contents:
        return problem
    seen: set[tuple[int, int]] = set()  # folders walked (a linked folder may lead back to one)
    for here, folders, files in os.walk(root, followlinks=links):
        info = os.stat(here)
        if (info.st_dev, info.st_ino) in seen:
            folders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        for name in (*folders, *files):
            # plain strings and one lstat per entry: a site-packages and a standard library are 100 000 files
            path = os.path.join(here, name)
            info = os.lstat(path)
            if not stat.S_ISLNK(info.st_mode):
                problem = unsafe(path, info=info)
            elif not links:
                problem = f"{path} is a symbolic link (the edge serves the files themselves)"
            elif not Path(path).exists():  # (a target it may not look at raises: not a link to nothing)
                problem = f"{path} is a link to nothing (another user might create what it names)"
            else:
                problem = with_folders_above(Path(path).resolve())
            if problem:
                return problem
    return None


def refuse_if_writable_by_others(repository: Path, owner: int | None = None) -> None:
    if (problem := writable_by_others(repository, owner)) is not None:
        raise EdgeServerError(f"refusing to serve {repository}: {problem} — a part is code the server runs: make "
                              "the repository this user's, without links, and chmod -R go-w it")


def refuse_code_writable_by_others(triton_site: Path | None) -> None:
    """The code the server runs beside the repository's is held to the repository's rule: another user able to
    change a file there could run code as the server (links are allowed: a site-packages holds them). That is the
    folders named in MEDEDGE_SITE_PACKAGES (the parts import from them first), Triton's folder (another one's, or
    the installed one's), this interpreter's site-packages, its base interpreter's and its standard library (the
    parts and the backend's stub import from them; `.pth` files there run at start), and the folders the server
    loads shared libraries from: libpython's and those inherited in LD_LIBRARY_PATH, their subfolders too (the
    loader looks in glibc-hwcaps/… first). A site or library folder that does not exist is judged by whoever may
    create it."""
    site, libpython, library = "this Python's site-packages", "libpython's folder", "LD_LIBRARY_PATH"
    paths = sysconfig.get_paths()
    libdir = sysconfig.get_config_var("LIBDIR")
    named = [*((f, "MEDEDGE_SITE_PACKAGES") for f in operator_site_packages()),
             *((Path(paths[k]).resolve(), site) for k in ("purelib", "platlib")),
             *((Path(f).resolve(), site) for f in python_site.getsitepackages([sys.base_prefix])),
             *((Path(paths[k]).resolve(), "this Python's standard library") for k in ("stdlib", "platstdlib")),
             *((f, libpython) for f in ([Path(libdir).resolve()] if libdir else [])),
             *((f, library) for f in inherited_library_folders())]
    if triton_site is not None or importlib.util.find_spec("pytriton") is not None:  # (else start says it is missing)
        named.append(((triton_site or installed_triton_site()).resolve(), "the Triton folder"))  # often the site's
    walked = {folder for folder, _ in named}
    checked: set[Path] = set()
    for folder, what in named:
        if folder in checked or not walked.isdisjoint(folder.parents):
            continue  # once, and not inside another one walked whole (a venv's site-packages in its lib folder)
        checked.add(folder)
        if what in (site, libpython, library) and not folder.exists():  # (Debian's /usr/local site-packages may not exist)
            folder = next(parent for parent in folder.parents if parent.exists())
            problem = writable_by_others(folder, links=True, contents=False)
        elif not folder.is_dir():
            raise EdgeServerError(f"refusing to start: {what} names {folder}, which is not a folder")
        else:
            problem = writable_by_others(folder, links=True)
        if problem is not None:
            raise EdgeServerError(f"refusing to start: {what} names {folder}, and {problem} — the server "
                                  f"{'loads libraries' if what in (libpython, library) else 'imports code'} from it: "
                                  "make it this user's or root's and chmod -R go-w it")


def triton_socket_url(folder: Path) -> str:
    """Triton binds `--grpc-address` + ":" + `--grpc-port`: with a Unix socket address that is its file name."""
    return f"unix:{folder / 'triton.sock'}:{SOCKET_PORT}"


SOCKET_PORT = 1  # only the suffix of the socket's file name (see triton_socket_url)
SOCKET_PATH_MAX = 100  # a Unix socket's path must stay under 108 bytes


class OperatorClient:
    """The operator's calls on a running edge (list, unload, load a part), through Triton's private socket with
    the credential. `python main.py edge control` uses it with the server's `control.json`; the tests with
    `EdgeServer.operator`."""

    def __init__(self, triton_grpc: str, credential: str, repository: Path, serving: Path) -> None:
        import tritonclient.grpc as grpcclient

        self._client = grpcclient.InferenceServerClient(triton_grpc)
        self._headers = operator_headers(credential)
        self.repository = repository  # the exported parts
        self.serving = serving        # the Python-backend overlay Triton serves

    @classmethod
    def from_control_file(cls, path: Path) -> OperatorClient:
        try:
            control = json.loads(path.read_text())
            return cls(control["triton_grpc"], control["credential"], Path(control["repository"]),
                       Path(control["serving"]))
        except FileNotFoundError:
            raise EdgeServerError(f"no edge server's control file at {path}: is it running, on that gRPC port "
                                  "and with this MEDEDGE_DATA_DIR?") from None
        except PermissionError:
            raise EdgeServerError(f"{path} is readable by the edge server's user only: run this as that user "
                                  "(e.g. sudo -u mededge) or as root") from None
        except (OSError, ValueError, KeyError) as exc:
            raise EdgeServerError(f"unreadable control file {path}: {exc}") from None

    def status(self) -> tuple[bool, str, list[tuple[str, str]]]:
        """(ready, Triton's version, (part, state) of every model)."""
        ready = self._client.is_server_ready(client_timeout=10)
        return bool(ready), self._client.get_server_metadata(client_timeout=10).version, self.models()

    def models(self) -> list[tuple[str, str]]:
        """(part, state) for every model in the served repository."""
        index = self._client.get_model_repository_index(headers=self._headers)
        return [(model.name, model.state or "UNAVAILABLE") for model in index.models]

    def unload(self, part: str) -> None:
        """Unload `part`; refused while a loaded part runs its stages in it (an FP16 or int8 part of its cut)."""
        models = self.models()
        if part not in {name for name, _ in models}:
            raise EdgeServerError(f"no part {part!r} is served here (see: edge control list)")
        through = sorted(name for name, state in models
                         if state == "READY" and served_through(self.serving / name / "config.pbtxt") == part)
        if through:
            raise EdgeServerError(f"{part} runs the stages of {', '.join(through)}: unload those first")
        self._client.unload_model(part, headers=self._headers)
        deadline = time.monotonic() + UNLOAD_WAIT_S  # Triton answers before the part has gone: say "unloaded" once
        while dict(self.models()).get(part) == "UNLOADING" and time.monotonic() < deadline:
            time.sleep(0.1)

    def load(self, part: str) -> None:
        """Load `part` as the repository holds it now (e.g. after a re-export: its config is taken again);
        its ONNX must match the digest in that config, or Triton refuses it. (A part new since the start whose
        tensors are larger than every part's then would meet the gateway's size limit: restart for those.)"""
        exported = self.repository / part / "config.pbtxt"
        if not exported.is_file():
            raise EdgeServerError(f"no part {part!r} in {self.repository}")
        server_user = self.serving.stat().st_uid  # root may run this for the server's user
        refuse_if_writable_by_others(self.repository, owner=server_user)
        try:
            through = fp32_sibling(exported)
            if through and (through, "READY") not in self.models():
                raise EdgeServerError(f"{part} runs its stages in {through}, which is not loaded: load it first")
            made = overlay_part(exported, self.serving)
        except ValueError as exc:
            raise EdgeServerError(f"{exported}: {exc}") from None
        if os.geteuid() != server_user:  # what root made there, the server must be able to replace later
            for path in (self.serving / made, *(self.serving / made).rglob("*")):
                os.chown(path, server_user, self.serving.stat().st_gid, follow_symlinks=False)
        self._client.load_model(part, headers=self._headers)

    def close(self) -> None:
        self._client.close()


@dataclass
class EdgeServer:
    """Triton serving the exported `repository`, reached by the workstations through the gateway on
    `host:grpc_port`; Triton's metrics (read-only) on `metrics_host:metrics_port`, loopback unless told
    otherwise.

    The Python-backend overlay, Triton's log, its socket and the operator's control file live in `work_dir`."""

    repository: Path
    work_dir: Path
    host: str = LOOPBACK
    grpc_port: int = 8001
    metrics_port: int = 8002
    metrics_host: str = LOOPBACK
    tls: TlsFiles | None = None
    insecure: bool = False  # allow plaintext beyond loopback (each such listener is in `exposure_warnings`)
    log_verbose: int = 0
    triton_site: Path | None = None  # another nvidia-pytriton's folder (Installation.find); None: the installed one
    halo_listen: str = ""  # HOST:PORT where a halo part's peer channel listens
    halo_address: str = ""  # HOST:PORT where the other edges reach it (a relay, NAT); "": halo_listen
    halo_peers: tuple[str, ...] = ()  # the other edges' halo HOST:PORT, the only ones a halo part connects to
    process: subprocess.Popen | None = field(default=None, init=False)
    credential: str = field(default="", init=False, repr=False)
    gateway: EdgeGateway | None = field(default=None, init=False)
    _socket_dir: Path | None = field(default=None, init=False, repr=False)
    _lock: int | None = field(default=None, init=False, repr=False)  # the work folder's, held while serving

    @property
    def log_path(self) -> Path:
        return self.work_dir / "tritonserver.log"

    @property
    def control_path(self) -> Path:
        return self.work_dir / "control.json"

    @property
    def serving_path(self) -> Path:
        """The Python-backend overlay of `repository` that Triton serves (made at start)."""
        return self.work_dir / "serve"

    @property
    def grpc_address(self) -> str:
        """Where the workstations' client reaches this server from this machine (the gateway)."""
        return f"{local_url_host(self.host)}:{self.grpc_port}"

    @property
    def triton_grpc_address(self) -> str:
        """Triton's own gRPC: a Unix socket the server's user alone can open — the operator's way in (with the
        credential), never the network's."""
        return triton_socket_url(self._socket_dir or self.work_dir)

    def plaintext_beyond_loopback(self) -> list[str]:
        """The listeners (and a halo part's connections to its peers) that would carry plaintext to other machines."""
        listeners = [("metrics", self.metrics_host, self.metrics_port)]
        if self.tls is None:
            listeners.insert(0, ("gRPC", self.host, self.grpc_port))
        if self.halo_listen and (self.tls is None or self.tls.client_ca is None):  # peers: mutual TLS or plaintext
            for address in (self.halo_listen, *self.halo_peers):  # its listener, and the peers it connects to
                host, port = parse_address(address)
                listeners.append(("halo peers" if address == self.halo_listen else "halo peer", host, port))
        return [f"{name} on {host}:{port}" for name, host, port in listeners if not is_loopback(host)]

    def check_exposure(self) -> list[str]:
        """Refuse plaintext beyond loopback unless `insecure`; the warnings to log on this start otherwise."""
        plaintext = self.plaintext_beyond_loopback()
        if plaintext and not self.insecure:
            advice = ("give --tls-cert and --tls-key" if self.tls is None and not is_loopback(self.host)
                      else "give --tls-client-ca too (the peers' CA: halo peers use mutual TLS)"
                      if any(p.startswith("halo") for p in plaintext) else "keep the metrics on loopback")
            raise EdgeServerError(f"refusing plaintext beyond loopback ({', '.join(plaintext)}): {advice}, "
                                  "or accept the risk with --insecure")
        return [f"insecure: {listener} is plaintext, readable and writable by anyone on that network"
                for listener in plaintext]

    def operator(self) -> OperatorClient:
        return OperatorClient(self.triton_grpc_address, self.credential, self.repository, self.serving_path)

    def command(self, installation: Installation) -> list[str]:
        backends = installation.backend_directory(self.work_dir / "backends")
        address = self.triton_grpc_address.rsplit(":", 1)[0]
        return [str(installation.tritonserver), f"--model-repository={self.serving_path}",
                f"--backend-directory={backends}",
                f"--grpc-address={address}", f"--grpc-port={SOCKET_PORT}", "--allow-http=false",
                f"--metrics-address={self.metrics_host}", f"--metrics-port={self.metrics_port}",
                f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
                "--strict-readiness=true", f"--log-verbose={self.log_verbose}", "--allow-gpu-metrics=false",
                # the export writes each config whole: no extra Python stub per part to complete it (half the start)
                "--disable-auto-complete-config",
                # every part loads at start; the operator (credential) can unload or reload one
                "--model-control-mode=explicit", "--load-model=*", *operator_flags(self.credential)]

    def check_tls(self) -> list[str]:
        """EdgeServerError unless the TLS files are a PEM certificate in its validity dates and its key (and the
        clients' CA PEM) — before Triton starts, not as a bind failure once it has; the warnings to log."""
        if self.tls is None:
            return []
        try:
            return check_server_files(self.tls.certificate, self.tls.key, self.tls.client_ca, "--tls-cert and --tls-key")
        except ValueError as exc:
            raise EdgeServerError(str(exc)) from None

    def check_code(self) -> None:
        """Refuses code the server imports that other users could change (checked again at `start`: the export
        between may take minutes)."""
        refuse_code_writable_by_others(self.triton_site)

    def start(self, ready_timeout_s: float = 180.0) -> None:
        self.check_exposure()
        self.check_tls()
        refuse_if_writable_by_others(self.repository)
        self.check_code()  # (most of a second: site-packages is walked)
        halo = [("halo peers", *parse_address(self.halo_listen))] if self.halo_listen else []
        busy = [f"{name} port {port}" for name, host, port in (("gRPC", self.host, self.grpc_port),
                                                                ("metrics", self.metrics_host, self.metrics_port),
                                                                *halo)
                if port_in_use(host, port)]
        if busy:
            raise EdgeServerError(f"cannot start: {', '.join(busy)} already in use "
                                  "(another server running? choose other ports)")
        installation = Installation.find(self.triton_site)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.chmod(0o700)  # the socket, the overlay and the control file: this user's only
        self._take_work_folder()
        try:
            try:
                python_backend_overlay(self.repository, self.serving_path)
                self._advertise_halo()
                limit = largest_request_bytes(self.serving_path)
            except ValueError as exc:
                raise EdgeServerError(f"refusing to serve {self.repository}: {exc}") from None
            credentials = self._tls_credentials()
            self.credential = secrets.token_urlsafe(32)  # a new one each start: an old copy opens nothing
            self._socket_dir = self._private_socket_folder()
            self._write_control_file()
            log = open(self.log_path, "wb")
            self.process = process = subprocess.Popen(self.command(installation), stdout=log,
                                                      stderr=subprocess.STDOUT, env=self._environment(installation),
                                                      start_new_session=True)
            log.close()
        except BaseException:
            self._release_work_folder()
            raise
        try:
            self._wait_ready(process, ready_timeout_s)
            self.gateway = EdgeGateway(self.triton_grpc_address, self.host, self.grpc_port, limit, credentials)
            self.gateway.start()
        except RuntimeError as exc:  # gRPC could not bind the address, or Triton did not come up
            self.stop()
            if isinstance(exc, EdgeServerError):
                raise
            raise EdgeServerError(f"cannot listen on {self.host}:{self.grpc_port}: {exc}") from None
        except BaseException:
            self.stop()
            raise

    def _advertise_halo(self) -> None:
        """Each halo part's config in the overlay names where the other edges reach its peer channel (the
        workstation reads it and tells the edge of the band above); ValueError where nothing would listen."""
        for path in self.serving_path.glob("*/config.pbtxt"):
            config = read_config(path)
            if HALO_BANDS not in config.parameters:
                continue
            if not self.halo_listen:
                raise ValueError(f"{config.name} swaps rows with other edges: serve it with --halo-listen HOST:PORT "
                                 "(where they reach this edge) and --halo-peers (theirs)")
            config.parameters[HALO_ADDRESS].string_value = self.halo_address or self.halo_listen
            path.write_text(text_format.MessageToString(config))

    def _environment(self, installation: Installation) -> dict[str, str]:
        """Triton's environment: the installation's, and where a halo part's peer channel listens and connects."""
        env = installation.environment()
        if self.halo_listen:
            env["MEDEDGE_HALO_LISTEN"] = self.halo_listen
            env["MEDEDGE_HALO_PEERS"] = ",".join(self.halo_peers)
            if self.tls is not None and self.tls.client_ca is not None:
                env["MEDEDGE_HALO_TLS"] = os.pathsep.join(str(p) for p in (self.tls.certificate, self.tls.key,
                                                                             self.tls.client_ca))
        return env

    def _take_work_folder(self) -> None:
        """An exclusive lock on the work folder for as long as this server runs. A second server given the same
        folder (the same --grpc-port on another address) took over its socket, overlay and control file, and
        stopping it left the first one running with no way in."""
        import fcntl

        path = self.work_dir / "server.lock"
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 32).decode(errors="replace").strip() or "?"
            os.close(descriptor)
            raise EdgeServerError(f"another edge server (pid {holder}) uses {self.work_dir}: stop it, or give this "
                                  "one another --grpc-port") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, str(os.getpid()).encode())
        self._lock = descriptor

    def _release_work_folder(self) -> None:
        descriptor, self._lock = self._lock, None
        if descriptor is not None:
            os.close(descriptor)  # (the lock goes with it)

    def _private_socket_folder(self) -> Path:
        """The work folder (0700) holds Triton's socket unless its path is too long for a Unix socket; then a
        fresh 0700 folder under the runtime folder (systemd's RuntimeDirectory) or the temporary folder."""
        if len(str(self.work_dir / "triton.sock:1")) <= SOCKET_PATH_MAX:
            return self.work_dir
        import tempfile

        return Path(tempfile.mkdtemp(prefix="mededge-edge-", dir=os.environ.get("RUNTIME_DIRECTORY") or None))

    def _tls_credentials(self):
        if self.tls is None:
            return None
        try:
            return server_credentials(self.tls.certificate.read_bytes(), self.tls.key.read_bytes(),
                                      self.tls.client_ca.read_bytes() if self.tls.client_ca else None)
        except OSError as exc:
            raise EdgeServerError(f"cannot read the TLS files: {exc}") from None

    def _write_control_file(self) -> None:
        """Readable by this user only: whoever reads it can load code into the server."""
        text = json.dumps({"triton_grpc": self.triton_grpc_address, "credential": self.credential,
                           "repository": str(self.repository.resolve()), "serving": str(self.serving_path)})
        descriptor = os.open(self.control_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as stream:
            stream.write(text)
        self.control_path.chmod(0o600)

    def _wait_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.triton_grpc_address)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise EdgeServerError(self.why_stopped())
                try:
                    if client.is_server_ready(client_timeout=1):
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        raise EdgeServerError(f"tritonserver not ready after {timeout_s:.0f} s: {self.log_tail()}")

    def why_stopped(self) -> str:
        """One line on how Triton ended: the signal that killed it, or its exit code and its log's last errors."""
        code = self.process.returncode if self.process is not None else None
        if code is not None and code < 0:  # its log says nothing of that
            try:
                name = signal.Signals(-code).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-code}"
            return f"tritonserver killed by {name}"
        errors = self.log_tail(errors_only=True)
        return f"tritonserver exited with code {code}" + (f": {errors}" if errors else "")

    def log_tail(self, lines: int = 3, errors_only: bool = False) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errors = [line for line in text if (line[:1] == "E" and line[1:5].isdigit()) or "error" in line.lower()]
        return " | ".join((errors if errors or errors_only else text)[-lines:])[:600]

    def stop(self, timeout_s: float = EXIT_TIMEOUT_S + 10) -> None:
        """The gateway first (in-flight calls finish), then Triton: SIGTERM, SIGKILL if it has not exited in
        time; the Python stubs go with it. The control file goes too: its credential is dead."""
        gateway, self.gateway = self.gateway, None
        if gateway is not None:
            gateway.stop(grace_s=EXIT_TIMEOUT_S)
        if self._lock is not None:  # (a server refused the folder leaves the one using it alone)
            self.control_path.unlink(missing_ok=True)
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._socket_dir is not None and self._socket_dir != self.work_dir:
            import shutil

            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._release_work_folder()

    def __enter__(self) -> EdgeServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
