"""DIMSE calls to a DICOM node (pynetdicom): C-ECHO, and C-STORE of the results. Each failure is one line in the
DICOM vocabulary — association rejected, aborted, a failure status — never a library's exception text."""

from __future__ import annotations

import copy
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.transport import ThreadedAssociationServer

from pacs.nodes import DicomNode

VERIFICATION = "1.2.840.10008.1.1"  # the C-ECHO SOP class

# PS3.7 C.4.2: what a C-STORE status means when it is not success
STORE_STATUSES = {0xA700: "out of resources", 0xA900: "data set does not match the SOP class",
                  0xC000: "cannot understand", 0x0122: "SOP class not supported", 0x0124: "not authorised",
                  0x0211: "unrecognised operation", 0x0212: "mistyped argument"}


class DicomNetworkError(Exception):
    """A DICOM node could not be reached or refused; str() is one line naming the node and the reason."""


def associate(node: DicomNode, ae: AE, timeout_s: float, ext_neg: list | None = None, handlers: list | None = None):
    """An association of `ae` (its contexts proposed) with `node`; DicomNetworkError saying why not."""
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    tls = None
    if node.tls:
        try:
            tls = (node.tls_files.client(), node.host)
        except (ssl.SSLError, OSError) as exc:  # a file that is not a PEM certificate, or the key not its own
            raise DicomNetworkError(f"{node}: the TLS files cannot be used ({getattr(exc, 'reason', None) or exc}: "
                                    "check the PACS CA, certificate and key)") from None
    try:  # first the connection alone: "refused", "timed out" or "not trusted" says more than pynetdicom's abort
        with socket.create_connection((node.host, node.port), timeout=timeout_s) as probe:
            if tls is not None:
                tls[0].wrap_socket(probe, server_hostname=node.host).close()
    except ssl.SSLCertVerificationError as exc:
        raise DicomNetworkError(f"{node}: TLS: the node's certificate is not trusted ({exc.verify_message}; give "
                                "its CA as the PACS CA)") from None
    except ssl.SSLError as exc:
        raise DicomNetworkError(f"{node}: TLS refused ({exc.reason or exc}: does the node speak DICOM TLS, and "
                                "does it want this workstation's certificate?)") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__.replace("Error", " error").lower()
        raise DicomNetworkError(f"{node}: no answer ({reason}: is the node running, and the host and port "
                                "right?)") from None
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, ext_neg=ext_neg, evt_handlers=handlers,
                         tls_args=tls)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        raise DicomNetworkError(f"{node}: association rejected (is this workstation's AE title "
                                f"{ae.ae_title} known to the node, and is the node's AE title right?)")
    raise DicomNetworkError(f"{node}: association aborted by the node (is {node.host}:{node.port} its DICOM port, "
                            f"and does it accept this workstation's AE title {ae.ae_title}?)")


HANDSHAKE_S = 10.0  # a DICOM TLS peer that has not finished its handshake by then is let go


class _HandshakeInItsThread(ThreadedAssociationServer):
    """pynetdicom's threaded server with the TLS handshake moved out of the accepting thread, where a single
    connection that sends nothing held up every other peer, into the connection's own thread, bounded in time;
    a handshake that fails is named to `refused` (pynetdicom drops it without a word)."""

    refused: Callable[[str], None] = staticmethod(lambda reason: None)
    daemon_threads = True  # a peer silent in its handshake does not hold up shutdown() for its 10 s

    def get_request(self):
        assert self.socket is not None  # (bound by then)
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def finish_request(self, request, client_address) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(HANDSHAKE_S)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                reason = (f"nothing in {HANDSHAKE_S:.0f} s" if isinstance(exc, TimeoutError) else
                          getattr(exc, "reason", None) or exc.strerror or type(exc).__name__)
                self.refused(f"TLS handshake with {client_address[0]} failed ({reason}): a peer without DICOM TLS, "
                             "or without a certificate this node trusts")
                request.close()
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


def serve(ae: AE, address: tuple[str, int], handlers: list, tls: ssl.SSLContext | None,
          refused: Callable[[str], None] | None = None) -> _HandshakeInItsThread:
    """`ae`'s association server on `address`, running in a thread of its own (stop it with `shutdown()`); with
    `tls`, DICOM TLS only. `refused` hears of each peer whose TLS handshake failed."""
    server = cast(_HandshakeInItsThread, ae.make_server(address, ssl_context=tls, evt_handlers=handlers,
                                                        server_class=_HandshakeInItsThread))
    if refused is not None:
        server.refused = refused
    ae._servers.append(server)  # as `start_server` keeps it: `shutdown()` takes it off the AE's list
    threading.Thread(target=server.serve_forever, name=f"DICOM node {address[1]}", daemon=True).start()
    return server


def _offering(calling_ae: str, contexts: Iterable[tuple[str, str | None]]) -> AE:
    """`calling_ae` proposing each (SOP class, its data's own transfer syntax or None)."""
    ae = AE(ae_title=calling_ae)
    for sop_class, syntax in dict.fromkeys(contexts):
        if syntax not in (None, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            # a context of its own: offered beside the plain ones, a node picks a plain one and the compressed
            # data set could not be sent as it is
            ae.add_requested_context(sop_class, [syntax])
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def echo(node: DicomNode, calling_ae: str, timeout_s: float = 10.0) -> float:
    """C-ECHO: the round trip in ms, or DicomNetworkError."""
    started = time.perf_counter()
    assoc = associate(node, _offering(calling_ae, [(VERIFICATION, None)]), timeout_s)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or status.Status != 0x0000:
        raise DicomNetworkError(f"{node}: C-ECHO failed" + (f" (status 0x{status.Status:04X})" if status else
                                                              " (no response)"))
    return (time.perf_counter() - started) * 1e3


def store(node: DicomNode, datasets: list[Dataset], calling_ae: str, timeout_s: float = 30.0) -> None:
    """C-STORE each dataset (one association); DicomNetworkError at the first that the node does not keep."""
    if not datasets:
        return
    contexts = [(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets]
    assoc = associate(node, _offering(calling_ae, contexts), timeout_s)
    try:
        for ds in datasets:
            pixels = ds.get("PixelData")
            if isinstance(pixels, bytes) and len(pixels) % 2 and not ds.file_meta.TransferSyntaxUID.is_compressed:
                ds = copy.copy(ds)  # a native value of odd length (some files have one): padded as PS3.5 7.1.1 asks
                ds.PixelData = pixels + b"\0"
            try:
                status = assoc.send_c_store(ds)
            except ValueError:  # no presentation context accepted for it
                raise DicomNetworkError(f"{node}: does not accept {ds.SOPClassUID.name} in "
                                        f"{ds.file_meta.TransferSyntaxUID.name}") from None
            if not status:
                raise DicomNetworkError(f"{node}: C-STORE of {ds.SOPInstanceUID} got no response "
                                        "(association aborted or timed out)")
            code = int(status.Status)
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # B0xx: stored, with a warning
                meaning = STORE_STATUSES.get(code) or STORE_STATUSES.get(code & 0xFF00, "failure")
                raise DicomNetworkError(f"{node}: C-STORE of {ds.SOPInstanceUID} refused: {meaning} "
                                        f"(status 0x{code:04X})")
    finally:
        if assoc.is_established:
            assoc.release()
