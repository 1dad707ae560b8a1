"""`infer`: analyse studies through the analysis session, a JSON line each or a resumable worklist."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from app.cli.common import (
    EXIT_EDGE_FAILED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    add_edge_options,
    add_model_options,
    analysis_session,
    fail,
)
from app.results import write_and_send
from viewer.media import files_to_open


def add_parser(sub) -> None:
    infer = sub.add_parser("infer", help="analyse radiographs with both models, one JSON line per file",
                           description="One JSON object per file and line: detections (boxes in original "
                                       "pixels), probabilities, weights used, mode, cut, timings. "
                                       "Exit 0 when all were analysed, 2 when any failed.")
    infer.add_argument("paths", nargs="+", metavar="PATH", help="files, or folders (their files)")
    written = infer.add_mutually_exclusive_group()
    written.add_argument("--json", default="-", metavar="OUT", help="write JSON lines here (default - = stdout)")
    infer.add_argument("--recursive", action="store_true", help="folders: walk their sub-folders too (sorted; "
                       "hidden files and folders are skipped)")
    written.add_argument("--out", metavar="DIR", help="a resumable worklist instead of --json: DIR/results.jsonl "
                       "(a line per study, appended as each ends), DIR/summary.csv (rewritten at the end), a DICOM "
                       "SR per DICOM study in DIR/sr/ (or --sr DIR), and a progress bar. Run it again to resume: "
                       "studies already in results.jsonl are skipped unless their file changed (path, size, mtime). "
                       "A file that could not be read counts as done (see --retry-failed); a study whose analysis "
                       "failed is retried. Ctrl-C stops after the study in progress (exit 130)")
    infer.add_argument("--retry-failed", action="store_true", help="with --out: also retry files that could not "
                       "be read in an earlier run (e.g. after installing a decoder)")
    add_model_options(infer)
    add_edge_options(infer)
    infer.add_argument("--no-fallback", action="store_true",
                       help="fail (exit 3) instead of finishing a study locally when the edge fails")
    infer.add_argument("--send", metavar="NODE", help="with --out or --sr: send each SR to this PACS node, "
                       "AET@HOST:PORT (C-STORE) or https://… (DICOMweb STOW-RS); the study's line says \"sent\" or "
                       "\"send_error\"")
    infer.add_argument("--ae-title", default="MEDEDGE", metavar="AET", help="this workstation's AE title for "
                       "--send (default MEDEDGE)")
    infer.add_argument("--sr", metavar="DIR", help="also write a DICOM Comprehensive SR (TID 1500) per DICOM study "
                       "into DIR, named by its SOP Instance UID")
    infer.add_argument("--annotated-image", action="store_true", help="beside each SR, the annotated view as a DICOM "
                       "Secondary Capture image (boxes and findings burned in, marked as AI output), sent with --send")
    infer.set_defaults(run=_infer)


class _JsonLines:
    """`infer` without --out: a JSON line per study on stdout or into --json FILE (Batch's interface)."""

    stopping = interrupted = False
    failed_before = 0

    def __init__(self, target: str) -> None:
        self.target, self.failed, self._out = target, 0, None

    def __enter__(self) -> _JsonLines:
        self._out = sys.stdout if self.target == "-" else open(self.target, "w", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        if self._out is not sys.stdout:
            self._out.close()

    @staticmethod
    def note(message: str) -> None:
        print(f"mededge infer: {message}", file=sys.stderr, flush=True)

    def record(self, record: dict, finished: bool = True, structured_report=None) -> None:
        if structured_report is not None:
            record = dict(record) | structured_report()
        self.failed += "error" in record
        self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._out.flush()


def _infer_target(args: argparse.Namespace):
    """(files to analyse, where each study's line goes, SR folder or None): a resumable worklist with --out
    (app/worklist.py), JSON lines otherwise."""
    from app.worklist import SR_FOLDER, Batch

    contents = files_to_open(args.paths, args.recursive)
    for note in contents.notes:  # e.g. a damaged DICOMDIR: its media's files are analysed instead
        print(f"mededge infer: {note}", file=sys.stderr)
    if args.out:
        batch = Batch(Path(args.out), contents.files, retry_failed=args.retry_failed)
        return batch.todo, batch, args.sr or str(Path(args.out) / SR_FOLDER)
    return contents.files, _JsonLines(args.json), args.sr


def _infer(args: argparse.Namespace) -> int:
    from inference.analysis.analyzer import StudyError
    from inference.edge.client import EdgeError
    from inference.models.weights import WeightsError
    from inference.reports.structured_report import StructuredReportError, read_source_header
    from pacs.nodes import checked_ae_title
    from pacs.remote import parse_node
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    try:
        destination = parse_node(args.send) if args.send else None
        if destination is not None and not (args.out or args.sr):
            raise ValueError("--send sends the DICOM SRs: write them with --out DIR or --sr DIR")
        if args.annotated_image and not (args.out or args.sr):
            raise ValueError("--annotated-image goes beside the DICOM SRs: write them with --out DIR or --sr DIR")
        checked_ae_title(args.ae_title)
        session = analysis_session(args, "infer", choose_in_background=True)
    except (WeightsError, ValueError, EdgeError) as exc:
        return fail("infer", exc)
    files, sink, sr_folder = _infer_target(args)
    analyzer = session.analyzer
    dicom: set[str] = set()  # a worklist writes an SR for DICOM studies only; --sr alone says why not for others

    def studies():  # loaded lazily, a little ahead of the devices analysing them
        for path in files:
            if sink.stopping:
                return  # Ctrl-C: the studies already begun finish and are written; no new one starts
            try:
                radiograph = load_radiograph(path)
            except RadiographError as exc:
                yield StudyError(path, exc)
                continue
            if radiograph.file_format == "DICOM":
                dicom.add(radiograph.path)
            yield radiograph

    def report(result):
        if sr_folder is None or (args.out and result.path not in dicom):
            return None

        def written() -> dict:
            image_of = None
            try:  # read again: analyze_many keeps only the Findings of each study (the image too when drawn)
                if args.annotated_image:
                    image_of = load_radiograph(result.path)
                    header = image_of.header
                else:
                    header = read_source_header(result.path)
            except (StructuredReportError, RadiographError) as exc:  # e.g. a PNG: no DICOM identity to report on
                return {"sr_error": getattr(exc, "reason", None) or str(exc)}
            return write_and_send(result, header, sr_folder, analyzer, destination, args.ae_title, image_of=image_of)

        return written

    with sink, contextlib.closing(session):  # closing: the planner's background measurement ends first
        if args.out and destination is not None:
            sink.send_again(destination, args.ae_title)
        # JSON lines in the order of the paths given; a worklist's lines as each study ends
        edge_failure: str | None = None
        for result in session.analyze_series(studies(), allow_fallback=not args.no_fallback,
                                             in_order=not args.out, count=len(files)):
            if isinstance(result, StudyError):
                error = result.error
                if isinstance(error, EdgeError):  # only with --no-fallback: the series stops here
                    sink.record({"path": result.path, "error": f"edge: {error}"}, finished=False)
                    return fail("infer", f"edge failed and --no-fallback was given: {error}", EXIT_EDGE_FAILED)
                unreadable = isinstance(error, RadiographError)  # stays so until the file changes; others retried
                sink.record({"path": result.path, "error": error.reason if unreadable else
                             f"analysis failed ({type(error).__name__}): {error}"}, finished=unreadable)
                continue
            if result.fallback_reason != edge_failure:  # said when the edge fails, and when it works again
                edge_failure = result.fallback_reason
                sink.note(f"{Path(result.path).name}: " + (f"analysed on this workstation: {edge_failure}"
                                                           if edge_failure else "the edge is used again"))
            sink.record(result.to_json(), structured_report=report(result))
        if (analyzer.choosing_runtimes or analyzer.building_heads) and not sink.stopping:  # kept for the next run
            print("mededge infer: every study is written; finishing what this workstation builds in the background "
                  "(its runtime choice, INT8 stages before a cut: once per machine; Ctrl-C leaves it to the next "
                  "run)…", file=sys.stderr)
            while not ((analyzer.runtime_choice_done(timeout_s=0.5) and analyzer.heads_built(timeout_s=0.5))
                       or sink.stopping):
                pass
    if sink.interrupted:
        return 130  # Ctrl-C: every finished study is written; the same command resumes
    return EXIT_SOME_FAILED if sink.failed or sink.failed_before else EXIT_OK



