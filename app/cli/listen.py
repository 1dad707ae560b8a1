"""`listen`: a DICOM node that analyses the radiographs it receives (storage SCP → queue → analysis session → SR,
sent on with --send). What was acknowledged is analysed exactly once, across crashes and restarts:
DIR/incoming/ holds every instance acknowledged, DIR/results.jsonl each one analysed (app/worklist.py)."""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
import time
from pathlib import Path

from app.cli.common import (
    EXIT_OK,
    add_edge_options,
    add_model_options,
    analysis_session,
    fail,
)
from app.results import write_and_send

BURST = 32  # studies taken from the queue into one pipelined series


def add_parser(sub) -> None:
    listen = sub.add_parser("listen", help="a DICOM node: receive radiographs by C-STORE, analyse each, write its "
                            "DICOM SR (and send it on)",
                            description="A storage SCP. Each CR/DX image received is written to DIR/incoming and "
                                        "synced before success is answered (other SOP classes, and images the "
                                        "loader cannot read, are refused with a status), then analysed (the "
                                        "queue pipelined, with local fallback); its SR goes to DIR/sr and, with "
                                        "--send, to that node. DIR/results.jsonl gets a line per study. A restart "
                                        "resumes the queue; an instance received twice is analysed once. "
                                        "Stops on Ctrl-C or SIGTERM after the studies in progress.")
    listen.add_argument("--out", required=True, metavar="DIR", help="received images, results and SRs")
    listen.add_argument("--ae-title", default="MEDEDGE", metavar="AET", help="this node's AE title (default MEDEDGE)")
    listen.add_argument("--host", default="127.0.0.1", help="listen here (default 127.0.0.1: this machine only; "
                        "another address needs --allow and, DIMSE being plaintext, --insecure)")
    listen.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    listen.add_argument("--allow", metavar="AET,...", help="the calling AE titles let in (others: association "
                        "rejected); required beyond loopback")
    listen.add_argument("--tls-cert", metavar="PEM", help="this node's certificate: DICOM TLS only (PS3.15 B.1)")
    listen.add_argument("--tls-key", metavar="PEM", help="its private key")
    listen.add_argument("--tls-client-ca", metavar="PEM", help="mutual TLS: accept senders whose certificate this "
                        "CA signed")
    listen.add_argument("--insecure", action="store_true", help="allow plaintext DICOM beyond loopback")
    listen.add_argument("--send", metavar="NODE", help="send each SR to this PACS node: AET@HOST:PORT (C-STORE) "
                        "or https://… (DICOMweb STOW-RS)")
    listen.add_argument("--annotated-image", action="store_true", help="beside each SR, the annotated view as a "
                        "DICOM Secondary Capture image (boxes and findings burned in, marked as AI output), sent with "
                        "--send")
    add_model_options(listen)
    add_edge_options(listen)
    listen.set_defaults(run=_listen)


def _listen(args: argparse.Namespace) -> int:
    from app.worklist import ResultsLog, file_key, finished_records, read_results, write_summary
    from inference.edge.access import is_loopback
    from inference.edge.client import EdgeError
    from inference.models.weights import WeightsError
    from pacs.listener import Inbox, StorageListener
    from pacs.nodes import checked_ae_title
    from pacs.remote import parse_node

    note = lambda message: print(f"mededge listen: {message}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        ae_title = checked_ae_title(args.ae_title)
        allowed = tuple(checked_ae_title(t, "allowed AE title") for t in args.allow.split(",") if t.strip()) \
            if args.allow else None
        destination = parse_node(args.send) if args.send else None
        tls = _server_tls(args)
        if not is_loopback(args.host):
            if allowed is None:
                raise ValueError(f"listening on {args.host} lets any DICOM node in: name the senders with --allow")
            if tls is None and not args.insecure:
                raise ValueError(f"DICOM on {args.host} would be plaintext beyond this machine: give --tls-cert and "
                                 "--tls-key, or --insecure to accept plaintext (e.g. on an isolated modality network)")
        session = analysis_session(args, "listen")
    except (WeightsError, ValueError, EdgeError) as exc:
        return fail("listen", exc)

    folder = Path(args.out)
    inbox = Inbox(folder)
    done = finished_records(read_results(folder))
    waiting: queue.Queue[str] = queue.Queue()
    for path in inbox.files():  # acknowledged before a stop or a crash, not analysed yet
        key = file_key(path)
        if key is None or (key["file"], key["size"], key["mtime_ns"]) not in done:
            waiting.put(path)
    if waiting.qsize():
        note(f"{waiting.qsize()} received before, not analysed yet: queued first")
    listener = StorageListener(inbox, ae_title, allowed, waiting.put, note)
    try:
        listener.start(args.host, args.port, tls)
    except OSError as exc:
        return fail("listen", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    note(f"listening as {ae_title} on {args.host}:{args.port}" + (" (DICOM TLS)" if tls else "")
         + (f", from {', '.join(allowed)} only" if allowed else "") + (f"; SRs sent to {destination}" if destination
                                                                       else "") + "; stop with Ctrl-C")
    counts = {"analysed": 0, "failed": 0, "sent": 0}
    with ResultsLog(folder) as log:
        resend = _Resend(folder, destination, ae_title, log, note) if destination is not None else None
        while not stop.is_set():
            if resend is not None:
                counts["sent"] += resend.when_due()
            burst = _take(waiting, stop)
            if burst:
                for record, finished in _analyse(session, burst, folder, destination, ae_title, note, stop,
                                                  args.annotated_image):
                    counts["analysed"] += finished and "error" not in record
                    counts["failed"] += "error" in record
                    counts["sent"] += "sent" in record
                    log.write(record, file_key(record["path"]), finished)
                    if resend is not None and "send_error" in record:
                        resend.failed()
    listener.stop()
    session.close()  # the planner's background measurement, if any, ends before the process does
    write_summary(folder, read_results(folder))
    note(f"stopped: {listener.received} received, {listener.duplicates} duplicates, {listener.refused} refused; "
         f"{counts['analysed']} analysed, {counts['failed']} failed, {counts['sent']} SRs sent (what was received "
         "and not analysed yet is analysed on the next start)")
    return EXIT_OK


class _Resend:
    """--send: SRs that could not be sent (the node down, a restart since) are sent again — at the start, then
    while any is left after 30 s, 1, 2, 4 … up to 10 minutes — rather than lost to the PACS."""

    FIRST_S, LONGEST_S = 30.0, 600.0

    def __init__(self, folder: Path, destination, ae_title: str, log, note) -> None:
        self.folder, self.destination, self.ae_title, self.log, self.note = folder, destination, ae_title, log, note
        self.pending, self.due_at = True, 0.0  # a first round at once: what earlier runs left unsent
        self.wait_s = self.FIRST_S

    def failed(self) -> None:
        """A study's SR was not sent: try again once the wait is over."""
        if not self.pending:
            self.pending, self.due_at = True, time.monotonic() + self.wait_s

    def when_due(self) -> int:
        """Sends what is left unsent when it is time; how many were sent."""
        from app.worklist import resend_unsent

        if not self.pending or time.monotonic() < self.due_at:
            return 0
        sent, unsent = resend_unsent(self.folder, self.log, self.destination, self.ae_title)
        left = unsent - sent
        if unsent:
            self.note(f"{sent} of {unsent} SRs not sent before now sent to {self.destination}"
                      + (f"; the other {left} again in {self.wait_s:.0f} s" if left else ""))
        self.pending = left > 0
        self.due_at = time.monotonic() + self.wait_s
        self.wait_s = min(self.wait_s * 2, self.LONGEST_S) if left else self.FIRST_S
        return sent


def _server_tls(args: argparse.Namespace):
    """The DICOM TLS context of --tls-cert/--tls-key (and --tls-client-ca), or None; ValueError when incomplete
    or unreadable."""
    import ssl

    from security.pem import check_server_files

    if not (args.tls_cert or args.tls_key):
        if args.tls_client_ca:
            raise ValueError("mutual TLS (--tls-client-ca) needs TLS: give --tls-cert and --tls-key too")
        return None
    if not (args.tls_cert and args.tls_key):
        raise ValueError("DICOM TLS needs both --tls-cert and --tls-key")
    for warning in check_server_files(args.tls_cert, args.tls_key, args.tls_client_ca, "--tls-cert and --tls-key"):
        print(f"mededge listen: warning: {warning}", file=sys.stderr, flush=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            context.load_verify_locations(args.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"DICOM TLS files not usable: {getattr(exc, 'strerror', None) or exc}") from None
    return context


def _take(waiting: queue.Queue[str], stop: threading.Event) -> list[str]:
    """The next studies: waits (a while) for the first, then takes what else is queued, up to BURST."""
    try:
        burst = [waiting.get(timeout=0.5)]
    except queue.Empty:
        return []
    while len(burst) < BURST and not stop.is_set():
        try:
            burst.append(waiting.get_nowait())
        except queue.Empty:
            break
    return burst


def _analyse(session, paths: list[str], folder: Path, destination, ae_title: str, note, stop: threading.Event,
             annotated_image: bool = False):
    """(record, finished) per study of `paths`, as a pipelined series: its SR (and the annotated image) written,
    and sent on. Once `stop` is set no study is begun (those left stay in the inbox for the next start)."""
    from app.worklist import SR_FOLDER
    from inference.analysis.analyzer import StudyError
    from inference.reports.structured_report import result_uid
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    radiographs = {}

    def studies():
        for path in paths:
            if stop.is_set():
                return
            try:
                radiographs[path] = load_radiograph(path)
            except RadiographError as exc:  # checked when received; a file damaged on disk since
                yield StudyError(path, exc)
                continue
            yield radiographs[path]

    for result in session.analyze_series(studies(), count=len(paths)):
        if isinstance(result, StudyError):
            error = result.error
            unreadable = isinstance(error, RadiographError)  # stays so; another failure is retried next start
            reason = error.reason if unreadable else f"analysis failed ({type(error).__name__}): {error}"
            note(f"{Path(result.path).stem}: {reason}")
            yield {"path": result.path, "error": reason}, unreadable
            continue
        radiograph = radiographs.pop(result.path)
        # derived from the image's and the results: a study analysed again after a crash rewrites the same SR
        uid = result_uid(str(radiograph.header.SOPInstanceUID), result)
        outcome = write_and_send(result, radiograph.header, folder / SR_FOLDER, session.analyzer, destination,
                                 ae_title, sop_instance_uid=uid, image_of=radiograph if annotated_image else None)
        for written in ("sr", "image"):  # relative to DIR: the folder can be moved as a whole
            if written in outcome:
                outcome[written] = str(Path(outcome[written]).relative_to(folder))
        record = result.to_json() | outcome
        note(f"{Path(result.path).stem}: analysed ({result.mode.value})"
             + (f", SR{' and annotated image' if 'image' in record else ''} sent to {destination}"
                if "sent" in record else "")
             + "".join(f"; {record[problem]}" for problem in ("sr_error", "send_error", "image_error")
                       if problem in record))
        yield record, True
