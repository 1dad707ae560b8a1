"""A real Orthanc PACS for the tests (Debian's `orthanc`): its own storage and free loopback ports, stopped after."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.relay import Relay
from inference.edge.server import free_ports

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
AE_TITLE = "ORTHANC"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


@dataclass(frozen=True)
class Orthanc:
    dicom_port: int
    http_port: int                         # HTTP, or HTTPS through the TLS proxy when `ca` is set
    ca: Path | None = None                 # HTTPS, with a server certificate this CA signed
    user: tuple[str, str] | None = None    # HTTP basic auth

    @property
    def node(self) -> str:
        return f"{AE_TITLE}@127.0.0.1:{self.dicom_port}"

    @property
    def dicomweb(self) -> str:
        return f"{'https' if self.ca else 'http'}://localhost:{self.http_port}/dicom-web"

    def rest(self, path: str):
        request = urllib.request.Request(f"{'https' if self.ca else 'http'}://localhost:{self.http_port}{path}")
        if self.user:
            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(self.user).encode()).decode())
        context = ssl.create_default_context(cafile=str(self.ca)) if self.ca else None
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            return json.loads(reply.read())

    def instances_of_class(self, sop_class: str) -> list[dict]:
        tags = [self.rest(f"/instances/{i}/simplified-tags") for i in self.rest("/instances")]
        return [t for t in tags if t.get("SOPClassUID") == sop_class]


@contextlib.contextmanager
def running_orthanc(folder: Path, known: dict[str, tuple] | None = None, dicomweb: bool = False,
                    tls: tuple[Path, Path, Path] | None = None, user: tuple[str, str] | None = None,
                    dicom_tls: tuple[Path, Path, Path] | None = None):
    """An Orthanc; `known`: the DICOM nodes it lets query and retrieve (AE title → host, port, and "tls" when it
    sends a C-MOVE's images to them over DICOM TLS), as a site's PACS administrator declares them — any node may
    store and echo. `dicomweb`: its DICOMweb plugin on the HTTP port
    (`tls`: over HTTPS, (CA, server certificate, key); `user`: behind HTTP basic auth). `dicom_tls`: its DICOM
    port speaks DICOM TLS with that (CA, certificate, key); clients need no certificate."""
    dicom_port, http_port = free_ports(2)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"Name": "MedEdge test PACS", "StorageDirectory": str(folder / "storage"),
              "IndexDirectory": str(folder / "index"), "HttpPort": http_port, "DicomPort": dicom_port,
              "DicomAet": AE_TITLE, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True, "Plugins": [],
              "ConcurrentJobs": 1, "HttpThreadsCount": 4,
              "DicomModalities": {title.lower(): {"AET": title, "Host": address[0], "Port": address[1],
                                                  "UseDicomTls": len(address) > 2 and address[2] == "tls"}
                                  for title, address in (known or {}).items()}}
    if dicomweb:
        config |= {"Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    if user is not None:
        config |= {"AuthenticationEnabled": True, "RegisteredUsers": {user[0]: user[1]}}
    if dicom_tls is not None:
        config |= {"DicomTlsEnabled": True, "DicomTlsTrustedCertificates": str(dicom_tls[0]),
                   "DicomTlsCertificate": str(dicom_tls[1]), "DicomTlsPrivateKey": str(dicom_tls[2]),
                   "DicomTlsRemoteCertificateRequired": False}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    proxy = None
    if tls is not None:
        # HTTPS through a TLS-terminating proxy, as sites put nginx in front of a PACS: Debian's Orthanc 1.10.1
        # segfaults on its own HTTPS (civetweb under OpenSSL 3; seen here on the first request)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls[1], tls[2])
        proxy = Relay(("127.0.0.1", http_port), tls=context).start()
    pacs = Orthanc(dicom_port, proxy.port if proxy else http_port, tls[0] if tls else None, user)
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
        if proxy is not None:
            proxy.stop()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
