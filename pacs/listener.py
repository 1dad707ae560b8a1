"""The storage SCP of `listen`: radiographs arrive by C-STORE; each is kept on disk before it is acknowledged.

An instance is written to DIR/incoming/<SOP Instance UID>.dcm through a temporary file, synced (file and
folder) and checked by the loader *before* the success status goes back: what the sender was told is stored
survives a crash, and an image that cannot be read is refused with a status instead. The same instance sent
again is acknowledged and kept once. Other SOP classes than CR and DX are refused (status 0x0122).
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from pacs.dimse import VERIFICATION, serve
from viewer.errors import RadiographError
from viewer.loader import load_radiograph

INCOMING = "incoming"
ANALYSED = (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
            DigitalXRayImageStorageForProcessing)
SUCCESS, NOT_SUPPORTED, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0x0122, 0xA700, 0xC000
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class Inbox:
    """DIR/incoming: the instances acknowledged, one file each, named by SOP Instance UID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / INCOMING
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        for partial in self.folder.glob(".*.partial"):  # a crash mid-write: never acknowledged
            partial.unlink(missing_ok=True)

    def keep(self, sop_instance_uid: str, encoded: bytes) -> tuple[Path, bool]:
        """(the instance's file, whether it is new). RadiographError when the loader cannot read it (nothing
        is kept), OSError when the disk refuses."""
        if len(sop_instance_uid) > 64 or not _UID.match(sop_instance_uid):
            raise RadiographError(f"SOP Instance UID {sop_instance_uid[:70]!r} is not a valid UID")
        path = self.folder / f"{sop_instance_uid}.dcm"
        if path.exists():
            return path, False
        # each association runs in its own thread: a temporary file of its own, and one rename at a time
        with tempfile.NamedTemporaryFile(dir=self.folder, prefix=f".{sop_instance_uid}.", suffix=".partial",
                                         delete=False) as out:
            partial = Path(out.name)
            try:
                out.write(encoded)
                out.flush()
                os.fsync(out.fileno())
            except OSError:
                partial.unlink(missing_ok=True)
                raise
        try:
            load_radiograph(str(partial))  # refused now, not found unreadable after it was acknowledged
            with self._lock:
                if path.exists():  # the same instance, kept meanwhile by another association
                    return path, False
                os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)  # the new name is on disk too
        finally:
            os.close(folder)
        return path, True

    def files(self) -> list[str]:
        """Every instance kept, oldest first (the order they came in)."""
        return [str(p) for p in sorted(self.folder.glob("*.dcm"), key=lambda p: (p.stat().st_mtime_ns, p.name))]


class StorageListener:
    """A storage SCP (and C-ECHO) as `ae_title` that keeps radiographs in `inbox` and hands each new one to
    `kept`; `allowed`: the calling AE titles let in (None: any). `log` gets a line per instance."""

    def __init__(self, inbox: Inbox, ae_title: str, allowed: tuple[str, ...] | None, kept: Callable[[str], None],
                 log: Callable[[str], None]) -> None:
        self.inbox, self.ae_title, self.allowed, self.kept, self.log = inbox, ae_title, allowed, kept, log
        self.received = self.refused = self.duplicates = 0
        self._server: ThreadedAssociationServer | None = None

    def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        """Listen on host:port; with `tls`, DICOM TLS only."""
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is None:
                continue
            # radiographs in any transfer syntax the loader decodes; other classes are negotiated, then refused
            syntaxes = ALL_TRANSFER_SYNTAXES if context.abstract_syntax in ANALYSED else context.transfer_syntax
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(VERIFICATION)
        if self.allowed is not None:
            ae.require_calling_aet = list(self.allowed)  # others: association rejected
        handlers: list = [(evt.EVT_C_STORE, self._stored), (evt.EVT_C_ECHO, lambda event: SUCCESS)]
        self._server = serve(ae, (host, port), handlers, tls, refused=self.log)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _stored(self, event) -> int:
        request = event.request
        sop_class, uid = UID(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID)
        sender = str(event.assoc.requestor.ae_title).strip()
        if sop_class not in ANALYSED:
            self.refused += 1
            self.log(f"refused {uid} from {sender}: {sop_class.name} is not a radiograph this node analyses "
                     "(CR, DX)")
            return NOT_SUPPORTED
        try:
            path, new = self.inbox.keep(uid, event.encoded_dataset())
        except RadiographError as exc:
            self.refused += 1
            self.log(f"refused {uid} from {sender}: {exc.reason}")
            return CANNOT_UNDERSTAND
        except OSError as exc:
            self.refused += 1
            self.log(f"refused {uid} from {sender}: cannot keep it on disk ({exc.strerror or exc})")
            return OUT_OF_RESOURCES
        if not new:
            self.duplicates += 1
            self.log(f"{uid} from {sender} was received before: kept once")
            return SUCCESS
        self.received += 1
        self.kept(str(path))
        return SUCCESS
