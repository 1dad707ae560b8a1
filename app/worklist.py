"""Batch worklist for `infer --out DIR`: which files to analyse, which are already done, and the outputs.

DIR/results.jsonl is the record of truth: one JSON line per analysed study, appended and flushed as each
study ends, so a run that is stopped (Ctrl-C, a crash, a power cut) loses at most the study in progress.
Each line carries a `worklist` key (the file's absolute path, size and mtime, and whether the study is
finished); a later run skips finished studies whose file is unchanged. DIR/summary.csv is derived from
results.jsonl and rewritten whole (through a temporary file) at the end of every run. No Qt here.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

RESULTS = "results.jsonl"
SUMMARY = "summary.csv"
SR_FOLDER = "sr"
SUMMARY_COLUMNS = ("path", "mode", "top_finding", "top_probability", "boxes", "max_box_score", "sr", "error", "ran_on",
                   "fallback_reason")


def file_key(path: str) -> dict[str, Any] | None:
    """What identifies a study's file between runs: absolute path, size and modification time (ns).

    None when the file cannot be stat'ed (it is analysed, and fails with its reason, every run).
    """
    try:
        info = os.stat(path)
    except OSError:
        return None
    return {"file": os.path.abspath(path), "size": info.st_size, "mtime_ns": info.st_mtime_ns}


def read_results(folder: Path) -> list[dict[str, Any]]:
    """Every complete, valid line of DIR/results.jsonl; a line cut short by a kill mid-write is ignored."""
    path = folder / RESULTS
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.endswith("\n"):
                break  # the last line was being written when the run stopped
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "path" in record:
                records.append(record)
    return records


def _identity(key: dict[str, Any]) -> tuple:
    return key.get("file"), key.get("size"), key.get("mtime_ns")


def unsent_records(records: Iterable[dict[str, Any]], destination) -> list[dict[str, Any]]:
    """Of each file's latest finished record, those whose SR was written but not sent to `destination`."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record.get("worklist")
        if isinstance(key, dict) and key.get("finished"):
            latest[key.get("file") or os.path.abspath(record["path"])] = record
    return [record for record in latest.values() if record.get("sr") and record.get("sent") != str(destination)]


def resend_unsent(folder: Path, log: ResultsLog, destination, ae_title: str) -> tuple[int, int]:
    """The SRs written into `folder` but not sent to `destination`, sent now (the round ends at its first failure),
    each study's line written again into `log`: (how many were sent, how many were unsent)."""
    from app.results import send_again

    unsent = unsent_records(read_results(folder), destination)
    sent = 0
    for record in send_again(unsent, folder, destination, ae_title):
        log.write(record, record["worklist"], finished=True)
        sent += "sent" in record
    return sent, len(unsent)


def finished_records(records: Iterable[dict[str, Any]], retry_failed: bool = False) -> dict[tuple, dict[str, Any]]:
    """The finished records by file identity; a changed file (other size or mtime) has another identity."""
    return {_identity(r["worklist"]): r for r in records
            if isinstance(r.get("worklist"), dict) and r["worklist"].get("finished")
            and not (retry_failed and "error" in r)}


class ResultsLog:
    """DIR/results.jsonl opened for appending; each `write` is one whole line, flushed to disk."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / RESULTS
        _drop_partial_line(self.path)  # else the next line would be glued onto the cut one
        self._file: TextIO = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any], key: dict[str, Any] | None, finished: bool) -> None:
        record = dict(record, worklist=dict(key or {"file": os.path.abspath(record["path"])}, finished=finished))
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())  # a finished study stays finished through a power cut

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_partial_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as raw:
        data = raw.read()
        if data.endswith(b"\n"):
            return
        raw.truncate(data.rfind(b"\n") + 1)


def summary_rows(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """One row per file, its latest record (a changed or retried file appears once), in first-seen order."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        file = (record.get("worklist") or {}).get("file") or os.path.abspath(record["path"])
        latest[file] = record  # a dict keeps the key's first position and takes the newest value
    for record in latest.values():
        analysed = "error" not in record
        probabilities = record.get("probabilities") or {}
        top = max(probabilities, key=probabilities.get) if probabilities else ""
        scores = [d["score"] for d in record.get("detections") or []]
        yield {"path": record["path"], "mode": record.get("mode", ""), "top_finding": top,
               "top_probability": f"{probabilities[top]:.4f}" if top else "", "boxes": len(scores) if analysed else "",
               "max_box_score": f"{max(scores):.4f}" if scores else "", "sr": record.get("sr") or "",
               # why a study, its SR or the SR's sending failed
               "error": record.get("error") or record.get("sr_error") or record.get("send_error", ""),
               # where it ran ("workstation", edge addresses), and why not on the edge when planned there
               "ran_on": " ".join(record.get("ran_on") or ()), "fallback_reason": record.get("fallback_reason", "")}


def write_summary(folder: Path, records: Iterable[dict[str, Any]]) -> Path:
    """DIR/summary.csv from the records, replaced in one step (a reader never sees half a file)."""
    path = folder / SUMMARY
    partial = folder / (SUMMARY + ".partial")
    with open(partial, "w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(summary_rows(records))
    os.replace(partial, path)
    return path


class Batch:
    """One `infer --out DIR` run: the files still to do, the progress bar, SRs, and a graceful Ctrl-C.

    Use as a context manager around the analysis loop: the first Ctrl-C asks to stop after the study in
    progress (`stopping` turns true; the loop stops feeding studies), a second one stops at once. Leaving
    the context rewrites summary.csv and says how far the run got.
    """

    def __init__(self, folder: Path, files: list[str], retry_failed: bool = False) -> None:
        self.folder = folder
        done = finished_records(read_results(folder), retry_failed)
        unique = list(dict.fromkeys(files))  # the same file given twice is analysed once
        # Taken before analysis: a file replaced while it is analysed is not marked done in its new version.
        self._keys = keys = {path: file_key(path) for path in unique}
        before = [done.get(_identity(keys[p])) if keys[p] else None for p in unique]
        self.total = len(unique)
        self.todo = [p for p, record in zip(unique, before, strict=True) if record is None]
        self.skipped = self.total - len(self.todo)
        self.failed_before = sum(1 for record in before if record is not None and "error" in record)
        self.analysed = 0
        self.failed = 0
        self.fell_back = 0  # analysed here after the edge failed
        self.stopping = False
        self.log: ResultsLog | None = None
        self._bar = None
        self._previous_handler = None

    def __enter__(self) -> Batch:
        self.log = ResultsLog(self.folder)
        if self.skipped:
            print(f"mededge infer: {self.skipped} of {self.total} studies already done in {self.folder / RESULTS}; "
                  "skipping them", file=sys.stderr, flush=True)
        self._bar = tqdm(total=self.total, initial=self.skipped, unit="study", desc="infer", file=sys.stderr,
                         dynamic_ncols=True, smoothing=0.1)
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread
            self._previous_handler = signal.signal(signal.SIGINT, self._interrupted)
        return self

    @property
    def interrupted(self) -> bool:
        """Stopped by Ctrl-C with studies left to do (the next run resumes)."""
        return self.stopping and self.skipped + self.analysed < self.total

    def _interrupted(self, signum, frame) -> None:
        self.stopping = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        self.note("stopping after the study in progress (Ctrl-C again to stop now)")

    def note(self, message: str) -> None:
        """A line on stderr, above the progress bar."""
        if self._bar is not None:
            self._bar.write(f"mededge infer: {message}", file=sys.stderr)
        else:
            print(f"mededge infer: {message}", file=sys.stderr, flush=True)

    def send_again(self, destination, ae_title: str) -> None:
        """--send: the SRs of earlier runs not sent there yet (the node was down, or is named only now) are sent
        first, their lines written again with "sent" (or the new "send_error")."""
        assert self.log is not None, "send_again() is called inside `with Batch(...)`"
        sent, unsent = resend_unsent(self.folder, self.log, destination, ae_title)
        if unsent:
            self.note(f"{sent} of {unsent} SRs of earlier runs sent to {destination}"
                      + ("" if sent == unsent else " (it failed: run again later)"))

    def record(self, record: dict[str, Any], finished: bool = True,
               structured_report: Callable[[], dict[str, str]] | None = None) -> None:
        """Write one study's line. `structured_report()` writes its SR first (so that a line marked finished
        always has its SR) and returns {"sr": path} or {"sr_error": reason} (and the annotated image's "image")."""
        if structured_report is not None:
            try:
                outcome = structured_report()
            except Exception as exc:  # the study's result still counts; the SR problem is reported with it
                outcome = {"sr_error": f"{type(exc).__name__}: {exc}"}
            for written in ("sr", "image"):  # relative to DIR when inside it (the folder can be moved as a whole),
                path = Path(outcome.get(written) or ".").resolve()  # else absolute (found again by a later run)
                if written in outcome:
                    inside = path.is_relative_to(self.folder.resolve())
                    outcome = outcome | {written: str(path.relative_to(self.folder.resolve()) if inside else path)}
            record = dict(record) | outcome
        assert self.log is not None, "record() is called inside `with Batch(...)`"
        path = record["path"]
        self.log.write(record, self._keys[path] if path in self._keys else file_key(path), finished)
        self.analysed += 1
        self.failed += "error" in record
        self.fell_back += record.get("mode") == "local-fallback"
        if self._bar is not None:
            self._bar.update()

    def __exit__(self, kind, error, traceback) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
        if self._bar is not None:
            self._bar.close()
        if self.log is not None:
            self.log.close()
        write_summary(self.folder, read_results(self.folder))
        if kind is KeyboardInterrupt:  # a second Ctrl-C: stopped at once
            self.stopping = True
        done = self.skipped + self.analysed
        if self.interrupted:
            print(f"mededge infer: stopped: {done} of {self.total} studies done, {self.total - done} left. "
                  f"Run the same command again to resume (finished studies are skipped).", file=sys.stderr, flush=True)
        else:
            failed = f", {self.failed} failed" if self.failed else ""
            succeeded = self.analysed - self.failed  # (`analysed` counts every study written, failed ones too)
            here = f" ({self.fell_back} on this workstation: the edge failed)" if self.fell_back else ""
            print(f"mededge infer: {succeeded} analysed{here}{failed}, {self.skipped} skipped (done before); "
                  f"{self.folder / RESULTS}, {self.folder / SUMMARY}", file=sys.stderr, flush=True)
