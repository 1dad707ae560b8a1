"""A real Orthanc PACS for the tests (Debian's `orthanc`): its own storage and free loopback ports, stopped after."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from inference.edge.server import free_ports

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
AE_TITLE = "ORTHANC"


@dataclass(frozen=True)
class Orthanc:
    dicom_port: int
    http_port: int

    @property
    def node(self) -> str:
        return f"{AE_TITLE}@127.0.0.1:{self.dicom_port}"

    def rest(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as reply:
            return json.loads(reply.read())

    def instances_of_class(self, sop_class: str) -> list[dict]:
        tags = [self.rest(f"/instances/{i}/simplified-tags") for i in self.rest("/instances")]
        return [t for t in tags if t.get("SOPClassUID") == sop_class]


@contextlib.contextmanager
def running_orthanc(folder: Path, known: dict[str, tuple[str, int]] | None = None):
    """An Orthanc; `known`: the DICOM nodes it lets query and retrieve (AE title → host, port), as a site's PACS
    administrator declares them — any node may store and echo."""
    dicom_port, http_port = free_ports(2)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"Name": "MedEdge test PACS", "StorageDirectory": str(folder / "storage"),
              "IndexDirectory": str(folder / "index"), "HttpPort": http_port, "DicomPort": dicom_port,
              "DicomAet": AE_TITLE, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True, "Plugins": [],
              "ConcurrentJobs": 1, "HttpThreadsCount": 4,
              "DicomModalities": {title.lower(): [title, host, port] for title, (host, port) in (known or {}).items()}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    pacs = Orthanc(dicom_port, http_port)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                pacs.rest("/system")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_tail = (folder / "orthanc.log").read_text()[-2000:]
                    raise RuntimeError(f"Orthanc did not start: {log_tail}") from None
                time.sleep(0.2)
        yield pacs
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
