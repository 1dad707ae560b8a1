"""The edge server from an attacker's side, against real Triton servers on loopback.

The attack the edge once allowed: one HTTP request to Triton's repository API uploading a Python-backend model
whose `model.py` runs at import — code from the network running inside the edge server. It, the same through
gRPC, and every other call that loads, unloads or changes a model, registers shared memory or changes logging or
tracing must be refused to anyone without the operator's credential: against `EdgeServer`'s defaults, the
installed service's command line (packaging/edge/mededge-edge.service) and the stock-container script the export
writes (run here by a stand-in `docker` that starts the wheel's Triton with the script's own Triton flags).
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shlex
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inference.analysis.analyzer import Analyzer, ModelChoice
from inference.config import WireFormat
from inference.edge.client import EdgeClient, EdgeSettings
from inference.edge.repository import DOCKER_SCRIPT, PartRequest, largest_request_bytes, write_repository
from inference.edge.server import (
    EdgeServer,
    EdgeServerError,
    Installation,
    TlsFiles,
    free_ports,
    refuse_code_writable_by_others,
)
from inference.models.findings import Mode
from inference.models.parts import part_spec
from inference.planning.plan import ModelPlan, Plan
from viewer.loader import load_radiograph

from certificates import dated_certificate, make_certificates
from conftest import ROOT
from dicom_factory import dataset, gradient, write
from test_edge import TINY, start_server

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(ModelChoice(detector=TINY, runtime="torch"))


@pytest.fixture(scope="module")
def part(analyzer) -> str:
    return part_spec(analyzer.classifier, 7, WireFormat.FP32, analyzer.classifier_weights.source).name


@pytest.fixture(scope="module")
def repository(analyzer, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("secure") / "repository"
    write_repository(root, [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7,
                                        WireFormat.FP32)], gpu=False)
    return root


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    return load_radiograph(write(dataset(gradient(320, 288, bits=12, seed=5), bits_stored=12), folder / "s.dcm"))


def _server(repository: Path, work: Path, **options) -> EdgeServer:
    return start_server(repository, work, **options)


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    """`EdgeServer` with its defaults: the gateway and Triton on loopback, no TLS."""
    server = _server(repository, tmp_path_factory.mktemp("plain"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tls_server(repository, certificates, tmp_path_factory):
    server = _server(repository, tmp_path_factory.mktemp("tls"),
                     tls=TlsFiles(certificates["server.pem"], certificates["server.key"]))
    yield server
    server.stop()


# ------------------------------------------------------------ the attacker's requests


def _malicious_model(name: str, marker: Path) -> tuple[str, bytes]:
    """A Python-backend model whose model.py writes `marker` when Triton imports it."""
    code = (f"open({str(marker)!r}, 'w').write('code from the network ran on the edge')\n"
            "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    config = {"name": name, "backend": "python", "max_batch_size": 0,
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]}
    return json.dumps(config), code.encode()


def _http(port: int, path: str, body: dict | None = None, headers: dict | None = None) -> int:
    """The status of one plain HTTP request to this machine's `port`."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body is not None else "GET",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def _http_upload(port: int, marker: Path) -> int:
    config, code = _malicious_model("pwn", marker)
    return _http(port, "/v2/repository/models/pwn/load",
                 {"parameters": {"config": config, "file:1/model.py": base64.b64encode(code).decode()}})


def _refused(call) -> str:
    """Run a gRPC call that must fail; its error text."""
    try:
        call()
    except InferenceServerException as error:
        return str(error)
    raise AssertionError("the edge accepted a call it must refuse")


def _operator_calls(client: grpcclient.InferenceServerClient, part: str, marker: Path) -> dict:
    """Every operator call an attacker would try over gRPC, by name."""
    config, code = _malicious_model("pwn", marker)
    changed = json.dumps({"name": part, "backend": "python", "max_batch_size": 1})
    return {
        "upload code": lambda: client.load_model("pwn", config=config, files={"file:1/model.py": code}),
        "unload a part": lambda: client.unload_model(part),
        "load a part with a changed config": lambda: client.load_model(part, config=changed),
        "register shared memory": lambda: client.register_system_shared_memory("attacker", "/mededge-attack", 64),
        "change logging": lambda: client.update_log_settings({"log_file": str(marker)}),
        "change tracing": lambda: client.update_trace_settings(settings={"trace_file": str(marker),
                                                                         "trace_level": ["TIMESTAMPS"]}),
        "list the repository": lambda: client.get_model_repository_index(),
    }


def _still_serving(address: str, part: str, analyzer: Analyzer, study, **settings) -> None:
    """The part is loaded as exported and a study is analysed on the edge at `address`."""
    client = EdgeClient(EdgeSettings(address, timeout_s=30, **settings))
    try:
        assert part in client.status().models
        analyzer.edge = client
        findings = analyzer.analyze(study, Plan(ModelPlan(analyzer.detector.stage_count), ModelPlan(7)),
                                    allow_fallback=False)
        assert findings.mode is Mode.DISTRIBUTED
    finally:
        analyzer.edge = None
        client.close()


# ------------------------------------------------------------ EdgeServer's defaults


def test_the_code_upload_and_every_operator_call_are_refused(server, part, analyzer, study, tmp_path):
    marker = tmp_path / "pwned"
    for name, call in _operator_calls(grpcclient.InferenceServerClient(server.grpc_address), part, marker).items():
        assert "UNIMPLEMENTED" in _refused(call), name  # the gateway does not know these calls
    # Triton offers no HTTP (the upload's way in) and no gRPC port: over TCP, only its read-only metrics.
    assert _tcp_listeners(server.process.pid) == {("127.0.0.1", server.metrics_port)}
    assert "--allow-http=false" in Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode().split("\0")
    # Its own gRPC, a Unix socket the server's user alone can open, refuses them too without the credential.
    for name, call in _operator_calls(grpcclient.InferenceServerClient(server.triton_grpc_address), part,
                                      marker).items():
        assert "restricted" in _refused(call), name
    assert not marker.exists()
    _still_serving(server.grpc_address, part, analyzer, study)
    # The operator, with the credential the server wrote for its own user, can list (and unload, see test_faults).
    assert (part, "READY") in server.operator().models()
    assert oct(server.control_path.stat().st_mode & 0o777) == "0o600"
    assert oct(server.work_dir.stat().st_mode & 0o777) == "0o700"
    # A load balancer's standard gRPC health check passes the gateway: HealthCheckResponse{status: SERVING}.
    import grpc

    with grpc.insecure_channel(server.grpc_address) as channel:
        assert channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10) == b"\x08\x01"


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="needs root (to act as another user) and the system's python3")
def test_another_user_of_the_edge_box_cannot_reach_triton_or_read_the_credential(server):
    """What `ps` shows of Triton's command line (the credential) opens nothing: its socket and the control file
    are in a folder only the server's user can enter. The system's python3 stands for the other user's program
    (this venv's interpreter may sit in a folder that user cannot enter)."""
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1]); print('reached')\n"
             "except OSError as e:\n    print('refused', e)\n"
             "try:\n    open(sys.argv[2]).read(); print('read')\n"
             "except OSError as e:\n    print('unreadable', e)\n")
    socket_path = server.triton_grpc_address.removeprefix("unix:")
    assert Path(socket_path).exists()
    nobody = 65534
    done = subprocess.run(["/usr/bin/python3", "-c", probe, socket_path, str(server.control_path)],
                          capture_output=True, text=True, timeout=60, user=nobody, group=nobody,
                          env={"PATH": "/usr/bin:/bin"}, cwd="/")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused") and "Permission denied" in lines[0], done.stdout + done.stderr
    assert lines[1].startswith("unreadable") and "Permission denied" in lines[1], done.stdout + done.stderr


def _tcp_listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket the process holds (from /proc: its descriptors' socket
    inodes matched against the kernel's TCP tables)."""
    import ipaddress

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))  # the kernel prints 32-bit words
            found.add((str(ipaddress.ip_address(raw)), int(port, 16)))
    return found


def test_the_code_upload_is_refused_over_tls(tls_server, part, analyzer, study, certificates, tmp_path):
    marker = tmp_path / "pwned"
    secure = grpcclient.InferenceServerClient(tls_server.grpc_address, ssl=True,
                                              root_certificates=str(certificates["ca.pem"]))
    for name, call in _operator_calls(secure, part, marker).items():
        assert "UNIMPLEMENTED" in _refused(call), name
    assert not marker.exists()
    _still_serving(tls_server.grpc_address, part, analyzer, study, tls=True, root_certificate=certificates["ca.pem"])


def test_oversized_and_mismatched_requests_are_refused_before_they_are_buffered(server, part, repository):
    """A request larger than the largest legitimate one is refused at its length prefix: neither the gateway
    (this process) nor Triton grows by its size. Tensors of another shape, type, name or batch are refused."""
    limit = largest_request_bytes(repository)
    assert limit < 8 << 20  # one classifier tensor at cut 7, or the link probe's payload, and some framing
    triton = _ResidentMemory(server.process.pid)
    gateway = _ResidentMemory(os.getpid())
    def attack(address: str, megabytes: int, compression: str = "") -> str:
        """One request of `megabytes` for a 100 KB input, sent from another process; the edge's answer."""
        code = ("import sys, tritonclient.grpc as g\n"
                "c = g.InferenceServerClient(sys.argv[1])\n"
                "i = g.InferInput('t06', [1, 512, 7, 7], 'FP32')\n"
                "i._raw_content = bytes(int(sys.argv[3]) << 20)\n"
                "try:\n"
                "    c.infer(sys.argv[2], [i], compression_algorithm=sys.argv[4] or None, client_timeout=120)\n"
                "except Exception as e:\n    print(e)\n")
        return subprocess.run([sys.executable, "-c", code, address, part, str(megabytes), compression],
                              capture_output=True, text=True, timeout=300).stdout

    # The measurement can tell: straight to Triton (its own loopback port, as before the gateway), 100 MB grow it.
    with triton:
        assert "byte size mismatch" in attack(server.triton_grpc_address, 100)
    assert triton.growth_mb > 80, triton.growth_mb
    for compression in ("", "deflate"):  # deflate: 300 MB of zeros arrive as a few hundred KB
        with triton, gateway:
            answer = attack(server.grpc_address, 300, compression)
        assert "RESOURCE_EXHAUSTED" in answer and "larger than max" in answer, answer
        assert triton.growth_mb < 50 and gateway.growth_mb < 50, (compression, triton.growth_mb, gateway.growth_mb)

    client = grpcclient.InferenceServerClient(server.grpc_address)

    def infer(name: str, shape: list[int], dtype: str) -> str:
        tensor = grpcclient.InferInput(name, shape, dtype)
        tensor.set_data_from_numpy(np.zeros(shape, {"FP32": np.float32, "FP16": np.float16}[dtype]))
        return _refused(lambda: client.infer(part, [tensor]))

    assert "unexpected shape" in infer("t06", [1, 256, 7, 7], "FP32")
    assert "data-type is 'FP16'" in infer("t06", [1, 512, 7, 7], "FP16")
    assert "unexpected inference input" in infer("t99", [1, 512, 7, 7], "FP32")
    assert "batch-size must be <=" in infer("t06", [9, 512, 7, 7], "FP32")
    tensor = grpcclient.InferInput("t06", [1, 512, 7, 7], "FP32")
    tensor._raw_content = bytes(1 << 20)  # within the size limit, but not what the shape says
    assert "byte size mismatch" in _refused(lambda: client.infer(part, [tensor]))


class _ResidentMemory:
    """Peak growth of a process's resident memory while the `with` block runs, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.growth_mb = 0.0

    def _rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

    def __enter__(self):
        self.growth_mb = 0.0
        self._start = self._rss_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.wait(0.005):
            self.growth_mb = max(self.growth_mb, self._rss_mb() - self._start)

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def test_a_second_server_cannot_take_over_a_running_server_s_folder(server, repository):
    """Two `edge serve` with the same --grpc-port on different addresses share run-PORT: the second took over the
    first one's socket, overlay and control file, and when it stopped the first ran on with no way in."""
    second = EdgeServer(repository, server.work_dir, host="127.0.0.2", grpc_port=server.grpc_port,
                        metrics_port=free_ports(1)[0])
    with pytest.raises(EdgeServerError, match=f"another edge server .pid {os.getpid()}. uses {server.work_dir}"):
        second.start()
    assert second.process is None
    second.stop()  # (as `edge serve` does on its way out): the first one's control file stays
    assert server.control_path.is_file() and server.operator().models()


def test_a_killed_triton_is_named_as_such(repository, tmp_path):
    """`edge serve` exits when Triton goes; it said "tritonserver stopped:" and Triton's last info lines."""
    server = _server(repository, tmp_path / "killed")
    try:
        server.process.kill()
        server.process.wait(timeout=30)
        assert server.why_stopped() == "tritonserver killed by SIGKILL"
    finally:
        server.stop()


def test_tls_files_that_cannot_serve_are_refused_before_triton_starts(repository, certificates, tmp_path):
    """An expired certificate started a server every workstation then refused (falling back, with a vague reason);
    a key that is not the certificate's failed only once Triton was up, as "Failed to bind to address"."""
    expired, expired_key = dated_certificate(tmp_path, -365, -3)
    early, early_key = dated_certificate(tmp_path, 2, 365)
    for files, says in ((TlsFiles(expired, expired_key), "the server's certificate expired on "),
                        (TlsFiles(early, early_key), "the server's certificate is not valid before "),
                        (TlsFiles(certificates["server.pem"], certificates["client.key"]),
                         "--tls-cert and --tls-key: not a PEM certificate and its key"),
                        (TlsFiles(certificates["server.pem"], certificates["server.key"], certificates["server.key"]),
                         "the CA for the clients' certificates is not a PEM certificate")):
        server = EdgeServer(repository, tmp_path / "run", grpc_port=free_ports(1)[0], tls=files)
        with pytest.raises(EdgeServerError, match=says):
            server.start()
        assert server.process is None
    soon, soon_key = dated_certificate(tmp_path, -300, 10)
    [warning] = EdgeServer(repository, tmp_path / "run", tls=TlsFiles(soon, soon_key)).check_tls()
    assert warning.startswith("the server's certificate expires on ") and warning.endswith(": renew it")


# ------------------------------------------------------------ what the edge will serve


def test_a_repository_others_can_write_is_refused(repository, tmp_path):
    for unsafe in (repository, repository / f"{next(repository.glob('classifier_*')).name}/1/model.onnx"):
        mode = unsafe.stat().st_mode
        unsafe.chmod(mode | 0o002)
        try:
            server = EdgeServer(repository, tmp_path / "run", grpc_port=free_ports(1)[0])
            with pytest.raises(EdgeServerError, match="can be changed by other users"):
                server.start()
            assert server.process is None  # refused before Triton started
        finally:
            unsafe.chmod(mode)


def test_code_the_server_imports_from_others_can_write_is_refused(repository, tmp_path, monkeypatch):
    """MEDEDGE_SITE_PACKAGES (the parts import from it first) and another Triton's folder are code the server
    runs: held to the repository's rule, a link judged by what it points to."""
    site = tmp_path / "site"
    (site / "numpy").mkdir(parents=True)
    module = site / "numpy" / "__init__.py"
    module.write_text("")
    elsewhere = tmp_path / "elsewhere.py"
    elsewhere.write_text("")
    (site / "linked.py").symlink_to(elsewhere)
    for path in (tmp_path, site, site / "numpy", module, elsewhere):
        path.chmod(path.stat().st_mode & ~0o022)
    monkeypatch.setenv("MEDEDGE_SITE_PACKAGES", str(site))
    refuse_code_writable_by_others(site)  # as the operator made it: this user's, links to this user's files
    for unsafe in (site, module, elsewhere):
        mode = unsafe.stat().st_mode
        unsafe.chmod(mode | 0o002)
        try:
            for triton_site, named in ((None, "MEDEDGE_SITE_PACKAGES"), (site, "MEDEDGE_SITE_PACKAGES")):
                server = EdgeServer(repository, tmp_path / "run", grpc_port=free_ports(1)[0], triton_site=triton_site)
                with pytest.raises(EdgeServerError, match=f"{named} names .* can be changed by other users"):
                    server.start()
                assert server.process is None  # refused before Triton started
            monkeypatch.delenv("MEDEDGE_SITE_PACKAGES")
            with pytest.raises(EdgeServerError, match="the Triton folder names .* can be changed by other users"):
                refuse_code_writable_by_others(site)
            monkeypatch.setenv("MEDEDGE_SITE_PACKAGES", str(site))
        finally:
            unsafe.chmod(mode)
    # through links: a linked folder's contents, the folders above a link's target, a link to nothing
    package = tmp_path / "package"
    package.mkdir(mode=0o755)
    (package / "module.py").write_text("")
    (site / "linked_package").symlink_to(package)
    (site / "linked_package_again").symlink_to(package)  # walked once
    (package / "back").symlink_to(site)  # a loop: walked once
    refuse_code_writable_by_others(site)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "target.py").write_text("")
    cases = [(lambda: (package / "module.py").chmod(0o666), "module.py can be changed by other users"),
             (lambda: ((site / "via_shared.py").symlink_to(shared / "target.py"), shared.chmod(0o777)),
              "shared can be changed by other users"),
             (lambda: (site / "dangling.py").symlink_to(tmp_path / "later.py"), "a link to nothing")]
    for make_unsafe, problem in cases:
        make_unsafe()
        with pytest.raises(EdgeServerError, match=problem):
            refuse_code_writable_by_others(None)
        (package / "module.py").chmod(0o644)
        shared.chmod(0o755)
        for link in ("via_shared.py", "dangling.py"):
            (site / link).unlink(missing_ok=True)
    refuse_code_writable_by_others(None)
    monkeypatch.setenv("MEDEDGE_SITE_PACKAGES", str(tmp_path / "missing"))
    with pytest.raises(EdgeServerError, match="not a folder"):
        refuse_code_writable_by_others(None)


@pytest.mark.skipif(os.geteuid() != 0, reason="gives files to root's group and another account's")
def test_group_write_counts_only_where_the_group_holds_another_user(tmp_path, monkeypatch):
    """pip's files under umask 002 are group-writable by the user's own group: no one else is let in. A group that
    holds another account (here `daemon`'s) lets that account change the code."""
    site = tmp_path / "site"
    site.mkdir()
    module = site / "module.py"
    module.write_text("")
    for path in (tmp_path, site, module):
        path.chmod(path.stat().st_mode & ~0o022)
    monkeypatch.setenv("MEDEDGE_SITE_PACKAGES", str(site))
    os.chown(module, 0, 0)  # root's group holds root alone
    module.chmod(0o664)
    refuse_code_writable_by_others(None)
    os.chown(module, 0, pwd.getpwnam("daemon").pw_gid)
    with pytest.raises(EdgeServerError, match="module.py can be changed by other users"):
        refuse_code_writable_by_others(None)


def test_this_python_s_site_packages_is_code_the_server_imports(tmp_path, monkeypatch):
    """The parts import from this interpreter's site-packages (and the installed Triton lies there): held to the
    same rule, without anything named in MEDEDGE_SITE_PACKAGES."""
    monkeypatch.delenv("MEDEDGE_SITE_PACKAGES", raising=False)
    refuse_code_writable_by_others(None)  # this interpreter's, as installed
    site = tmp_path / "site-packages"
    site.mkdir(mode=0o755)
    (site / "numpy.py").write_text("")
    (site / "numpy.py").chmod(0o646)
    installed = sysconfig.get_paths()
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {**installed, "purelib": str(site), "platlib": str(site)})
    with pytest.raises(EdgeServerError, match="this Python's site-packages names .*numpy.py can be changed"):
        refuse_code_writable_by_others(None)
    # one that does not exist (Debian's /usr/local one): whoever may create it
    missing = tmp_path / "local" / "dist-packages"
    missing.parent.mkdir(mode=0o755)
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {**installed, "purelib": str(missing), "platlib": str(missing)})
    refuse_code_writable_by_others(None)
    missing.parent.chmod(0o777)
    with pytest.raises(EdgeServerError, match="local can be changed by other users"):
        refuse_code_writable_by_others(None)


def test_the_standard_library_and_the_library_folders_are_code_the_server_runs(tmp_path, monkeypatch):
    """The backend's stub imports this Python's standard library, and Triton loads shared libraries from libpython's
    folder and from each folder of an inherited LD_LIBRARY_PATH: held to the same rule (a library folder with its
    subfolders, where the loader looks first), and an empty entry, which the loader reads as the current folder, is
    not passed on."""
    monkeypatch.delenv("MEDEDGE_SITE_PACKAGES", raising=False)
    installed = sysconfig.get_paths()
    stdlib = tmp_path / "python3.x"
    (stdlib / "json").mkdir(parents=True, mode=0o755)
    (stdlib / "json" / "__init__.py").write_text("")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {**installed, "stdlib": str(stdlib)})
    refuse_code_writable_by_others(None)
    (stdlib / "json" / "__init__.py").chmod(0o646)
    with pytest.raises(EdgeServerError, match="standard library names .*json/__init__.py can be changed by other"):
        refuse_code_writable_by_others(None)
    monkeypatch.setattr(sysconfig, "get_paths", lambda: installed)
    base = tmp_path / "base-site-packages"  # the base interpreter's (a venv's stub imports from it): .pth files run
    base.mkdir(mode=0o755)
    (base / "distutils-precedence.pth").write_text("")
    (base / "distutils-precedence.pth").chmod(0o646)
    monkeypatch.setattr(site, "getsitepackages", lambda prefixes=None: [str(base)])
    with pytest.raises(EdgeServerError, match="site-packages names .*distutils-precedence.pth can be changed"):
        refuse_code_writable_by_others(None)
    monkeypatch.undo()
    monkeypatch.delenv("MEDEDGE_SITE_PACKAGES", raising=False)

    libraries = tmp_path / "lib"
    hwcaps = libraries / "glibc-hwcaps" / "x86-64-v3"  # where the loader looks first
    hwcaps.mkdir(parents=True, mode=0o755)
    (libraries / "libz.so.1").write_bytes(b"")
    (hwcaps / "libz.so.1").write_bytes(b"")
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)  # an empty entry would be this folder
    monkeypatch.chdir(work)
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{libraries}::")
    refuse_code_writable_by_others(None)
    paths = Installation(Path("/t/bin/tritonserver"), Path("/t/python"), Path("/t/stub"), Path("/t/libs")
                         ).environment()["LD_LIBRARY_PATH"].split(os.pathsep)
    assert "" not in paths and str(libraries) in paths and str(work) not in paths
    for library in (libraries / "libz.so.1", hwcaps / "libz.so.1"):
        library.chmod(0o646)
        with pytest.raises(EdgeServerError, match=f"LD_LIBRARY_PATH names {libraries}, and {library} can be "
                                                  "changed by other users .* loads libraries from it"):
            refuse_code_writable_by_others(None)
        library.chmod(0o644)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(work / "missing"))  # another user may create it
    with pytest.raises(EdgeServerError, match="work can be changed by other users"):
        refuse_code_writable_by_others(None)


def test_a_part_whose_onnx_is_not_the_exported_one_is_refused(analyzer, repository, tmp_path):
    """Another model's ONNX in a part's place (same config): the edge does not load it."""
    import shutil

    swapped = tmp_path / "swapped"
    shutil.copytree(repository, swapped)
    victim = next(swapped.glob("classifier_*")) / "1" / "model.onnx"
    victim.write_bytes(victim.read_bytes() + b"\0")  # any change at all
    with pytest.raises(EdgeServerError, match="is not the one exported"):
        _server(swapped, tmp_path / "run")


def test_a_part_whose_shared_weights_were_changed_is_refused(repository, tmp_path):
    """The parts of a model read their tensors from one `weights.bin`: one byte changed in a range a part
    uses, its ONNX untouched, and the edge does not load that part."""
    import shutil

    import onnx

    swapped = tmp_path / "swapped"
    shutil.copytree(repository, swapped)
    version = next(swapped.glob("classifier_*")) / "1"
    tensor = next(t for t in onnx.load(str(version / "model.onnx"), load_external_data=False).graph.initializer
                  if t.data_location == onnx.TensorProto.EXTERNAL)
    offset = int({entry.key: entry.value for entry in tensor.external_data}["offset"])
    blob = bytearray((version / "weights.bin").read_bytes())
    blob[offset] ^= 0x01  # one bit of one weight
    (version / "weights.bin").write_bytes(bytes(blob))
    with pytest.raises(EdgeServerError, match="weights it reads from weights.bin are not the ones exported"):
        _server(swapped, tmp_path / "run")


def test_the_operator_reloads_a_re_exported_part_and_a_tampered_one_is_not_loaded(repository, part, analyzer,
                                                                                   study, tmp_path):
    """`edge control`, as IT runs it on the edge box: list, unload, load after a re-export; a part whose ONNX was
    changed without a new export is refused, and the part loaded before keeps serving."""
    import shutil

    import onnx

    from inference.edge.repository import DIGEST, read_config
    from inference.models.weights import file_sha256

    exported = tmp_path / "repository"
    shutil.copytree(repository, exported)
    grpc_port, metrics = free_ports(2)
    env = dict(os.environ, MEDEDGE_DATA_DIR=str(tmp_path / "data"))
    process = _edge_serve("--repository", str(exported), "--grpc-port", str(grpc_port), "--metrics-port",
                          str(metrics), env=env)

    def control(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "main.py"), "edge", "control", "--grpc-port",
                               str(grpc_port), *args], env=env, capture_output=True, text=True, timeout=120)

    try:
        _until_serving(process)
        status = control("status")
        assert status.returncode == 0 and status.stdout.startswith("ready: Triton 2."), status
        assert f"{part}\tREADY" in control("list").stdout
        # A re-export: a new model.onnx and the digest of it in the config.
        onnx_path = exported / part / "1" / "model.onnx"
        model = onnx.load(str(onnx_path))
        model.doc_string = "re-exported"
        onnx.save(model, str(onnx_path))
        config = read_config(exported / part / "config.pbtxt")
        config.parameters[DIGEST].string_value = file_sha256(onnx_path)
        (exported / part / "config.pbtxt").write_text(str(config))
        assert control("unload", part).returncode == 0
        assert f"{part}\tUNAVAILABLE" in control("list").stdout
        assert f"parts loaded (not loaded: {part} UNAVAILABLE)" in control("status").stdout  # which, for monitoring
        done = control("unload", "nonexistent")  # (it said "unloaded nonexistent")
        assert done.returncode == 1 and "no part 'nonexistent' is served here" in done.stderr, done.stderr
        done = control("load", part)
        assert done.returncode == 0 and f"loaded {part}" in done.stdout, done.stderr
        _still_serving(f"127.0.0.1:{grpc_port}", part, analyzer, study)
        # The file changed, the config not: refused with the reason; what was loaded keeps serving.
        onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
        done = control("load", part)
        assert done.returncode == 1 and "is not the one exported" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        _still_serving(f"127.0.0.1:{grpc_port}", part, analyzer, study)
        assert "needs the part's name" in control("load").stderr
    finally:
        _stopped(process)
    assert "no edge server's control file" in control("list").stderr  # stopped: its credential is gone


# ------------------------------------------------------------ plaintext beyond loopback, the command line


def _edge_serve(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), "edge", "serve", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _until_serving(process: subprocess.Popen) -> str:
    lines = []
    while not any("stop with" in line for line in lines):
        line = process.stdout.readline()
        assert line, process.stderr.read()
        lines.append(line)
    return "".join(lines)


def _stopped(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    return process.stderr.read()


@pytest.mark.parametrize("where", [["--host", "0.0.0.0"], ["--metrics-host", "::"]])
def test_plaintext_beyond_loopback_is_refused_without_insecure(repository, where):
    ports = [str(p) for p in free_ports(2)]
    process = _edge_serve("--repository", str(repository), "--grpc-port", ports[0], "--metrics-port", ports[1],
                          *where)
    assert process.wait(timeout=60) == 1
    error = process.stderr.read()
    assert "refusing plaintext beyond loopback" in error and "--insecure" in error and "Traceback" not in error


def test_insecure_serves_plaintext_and_warns_at_start(repository, part, analyzer, study, tmp_path):
    grpc_port, metrics = free_ports(2)
    env = dict(os.environ, MEDEDGE_DATA_DIR=str(tmp_path))
    process = _edge_serve("--repository", str(repository), "--host", "0.0.0.0", "--grpc-port", str(grpc_port),
                          "--metrics-port", str(metrics), "--insecure", env=env)
    try:
        _until_serving(process)
        client = EdgeClient(EdgeSettings(f"127.0.0.1:{grpc_port}"))
        assert part in client.status().models
        client.close()
    finally:
        errors = _stopped(process)
    assert f"warning: insecure: gRPC on 0.0.0.0:{grpc_port} is plaintext" in errors, errors  # printed at each start


def test_the_installed_service_command_line_refuses_the_attack(repository, part, analyzer, study, certificates,
                                                               tmp_path):
    """mededge-edge.service's ExecStart as written, with this machine's paths and free ports put in."""
    unit = (ROOT / "packaging/edge/mededge-edge.service").read_text()
    command = shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart="))[10:])
    ports = dict(zip(("8001", "8002"), free_ports(2), strict=True))
    local = {"/opt/mededge/.venv/bin/python": sys.executable, "main.py": str(ROOT / "main.py"),
             "/var/lib/mededge/repository": str(repository), "$MEDEDGE_EDGE_OPTS": None,
             **{f"/etc/mededge/tls/{name}": str(certificates[name]) for name in ("server.pem", "server.key")},
             **{port: str(free) for port, free in ports.items()}}
    assert set(local) - {"$MEDEDGE_EDGE_OPTS"} <= set(command), command  # the unit still has what is replaced
    command = [local.get(word, word) for word in command if local.get(word, word) is not None]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # the network, over TLS
    process = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, MEDEDGE_DATA_DIR=str(tmp_path)))
    try:
        _until_serving(process)
        marker = tmp_path / "pwned"
        triton = subprocess.run(["pgrep", "-P", str(process.pid), "tritonserver"], capture_output=True, text=True)
        assert _tcp_listeners(int(triton.stdout.split()[0])) == {("127.0.0.1", ports["8002"])}  # metrics only
        secure = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['8001']}", ssl=True,
                                                  root_certificates=str(certificates["ca.pem"]))
        for name, call in _operator_calls(secure, part, marker).items():
            assert "UNIMPLEMENTED" in _refused(call), name
        plaintext = EdgeClient(EdgeSettings(f"127.0.0.1:{ports['8001']}", check_timeout_s=2))
        with pytest.raises(Exception, match="require TLS"):
            plaintext.status()
        assert not marker.exists()
        _still_serving(f"127.0.0.1:{ports['8001']}", part, analyzer, study, tls=True,
                       root_certificate=certificates["ca.pem"])
    finally:
        _stopped(process)


# ------------------------------------------------------------ the stock-container set-up


STAND_IN_DOCKER = '''#!{python}
"""A stand-in for `docker run` of the stock Triton image: runs the wheel's tritonserver with the same Triton
arguments, the container's ports and mounts mapped to this machine (the wheel has only the Python backend, so
/models is served through its Python-backend overlay)."""
import os, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from inference.edge.repository import python_backend_overlay
from inference.edge.server import Installation

args = sys.argv[1:]
assert args.pop(0) == "run"
published, mounts = {{}}, {{}}
while args[0].startswith("-"):
    option = args.pop(0)
    if option == "-p":
        address, port, inside = args.pop(0).rsplit(":", 2)
        published[inside] = (address, port)
    elif option == "-v":
        host, inside = args.pop(0).split(":")[:2]
        mounts[inside] = host
    elif option == "--gpus":
        args.pop(0)
image, command = args[0], args[1:]
assert command[0] == "tritonserver", command
work = Path(os.environ["STAND_IN_WORK"])
served = work / "serve"
python_backend_overlay(Path(mounts["/models"]), served)
installation = Installation.find()
flags = []
for flag in command[1:]:
    if flag.startswith("--model-repository="):
        flag = f"--model-repository={{served}}"
    for inside, host in mounts.items():
        flag = flag.replace(f"={{inside}}/", f"={{host}}/")
    flags.append(flag)
for inside, kind in (("8001", "grpc"), ("8000", "http"), ("8002", "metrics")):
    address, port = published[inside]
    flags += [f"--{{kind}}-address={{address}}", f"--{{kind}}-port={{port}}"]
flags.append(f"--backend-directory={{installation.backend_directory(work / 'backends')}}")
print("stand-in docker:", image, *flags, file=sys.stderr, flush=True)
os.execve(installation.tritonserver, [str(installation.tritonserver), *flags], installation.environment())
'''


def test_the_stock_container_script_refuses_the_attack(analyzer, part, study, certificates, tmp_path):
    exported = tmp_path / "exported"
    write_repository(exported, [PartRequest(analyzer.classifier, analyzer.classifier_weights.source, 7,
                                            WireFormat.FP32)], gpu=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(STAND_IN_DOCKER.format(python=sys.executable, root=str(ROOT)))
    (bin_dir / "docker").chmod(0o755)
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    for name in ("server.pem", "server.key"):
        (tls_dir / name).write_bytes(certificates[name].read_bytes())
    grpc_port, http, metrics = free_ports(3)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", STAND_IN_WORK=str(tmp_path / "work"),
               MEDEDGE_TLS_DIR=str(tls_dir), MEDEDGE_GRPC_ADDRESS="127.0.0.1", MEDEDGE_GRPC_PORT=str(grpc_port),
               MEDEDGE_HTTP_PORT=str(http), MEDEDGE_METRICS_PORT=str(metrics))
    script = str(exported / DOCKER_SCRIPT)
    process = subprocess.Popen([script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while _http_ready(http) is False:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.5)
        marker = tmp_path / "pwned"
        assert _http_upload(http, marker) == 403
        secure = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}", ssl=True,
                                                  root_certificates=str(certificates["ca.pem"]))
        for name, call in _operator_calls(secure, part, marker).items():
            assert "restricted" in _refused(call), name  # Triton's own lock: this set-up has no gateway
        assert not marker.exists()
        _still_serving(f"127.0.0.1:{grpc_port}", part, analyzer, study, tls=True,
                       root_certificate=certificates["ca.pem"])
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)

    def refusal(**changes) -> str:
        done = subprocess.run([script], env={**env, **changes}, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        return done.stderr

    assert "refusing plaintext gRPC on 0.0.0.0" in refusal(MEDEDGE_TLS_DIR=str(tmp_path / "none"),
                                                          MEDEDGE_GRPC_ADDRESS="0.0.0.0")
    onnx = exported / part / "1" / "model.onnx"
    onnx.chmod(0o666)
    assert "can be changed by other users" in refusal()
    onnx.chmod(0o644)
    weights = exported / part / "1" / "weights.bin"
    kept = weights.read_bytes()
    weights.write_bytes(kept[:-1] + bytes([kept[-1] ^ 1]))  # the model's shared weights, one bit
    assert "not the one exported" in refusal()
    weights.write_bytes(kept)
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    assert "not the one exported" in refusal()


def _http_ready(port: int) -> bool:
    try:
        return _http(port, "/v2/health/ready") == 200
    except OSError:
        return False
