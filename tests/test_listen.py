"""`listen`, the DICOM node: dcmtk's storescu sends real radiographs, the listener keeps, analyses and reports
them, and sends each SR to a real Orthanc; a kill -9 mid-stream loses nothing and analyses nothing twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from app.worklist import read_results
from inference.edge.server import free_ports
from pacs.listener import INCOMING

from conftest import ROOT
from orthanc import running_orthanc

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk's storescu is not installed")]
CANINE, CR = "dicom/highdicom_dx_image_canine_thorax.dcm", "dicom/RG1_J2KI.dcm"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
FAST = ["--detector-size", "128", "--runtime", "torch"]  # demo weights, small: the node's plumbing is under test


class Listener:
    def __init__(self, out: Path, *options: str) -> None:
        self.port = free_ports(1)[0]
        self.log_path = out.parent / f"listen-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "listen", "--out", str(out),
                                         "--port", str(self.port), *FAST, *options],
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.wait_for("listening as")

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while what not in self.text():
            assert self.process.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {what!r} in: {self.text()}"
            time.sleep(0.1)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        self.log.close()
        return code

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no chance to finish anything
        self.process.wait(timeout=30)
        self.log.close()


def storescu(port: int, files, aet: str = "STORESCU", *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-v", *options, "-aet", aet, "-aec", "MEDEDGE", "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=300)


def copies(source: Path, folder: Path, count: int) -> list[Path]:
    """`count` instances of the radiograph, each its own study (new UIDs), as a modality would send them."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        files.append(folder / f"{index:03d}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    return files


def wait_results(out: Path, count: int, timeout: float = 300) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(records := read_results(out)) < count:
        assert time.monotonic() < deadline, f"{len(records)} of {count} results"
        time.sleep(0.2)
    return records


def test_received_radiographs_are_analysed_and_their_srs_reach_the_pacs(tmp_path, shared_cxr):
    out = tmp_path / "node"
    unreadable = copies(shared_cxr / CANINE, tmp_path / "bad", 1)[0]
    ds = pydicom.dcmread(unreadable)
    ds.PixelData = ds.PixelData[:100]  # a third of a row: no loader can show it
    ds.save_as(unreadable)
    with running_orthanc(tmp_path / "orthanc") as pacs:
        listener = Listener(out, "--send", pacs.node, "--annotated-image")
        # each its own association: storescu stops at the first refusal
        refusals = [storescu(listener.port, [path]) for path in (get_testdata_file("MR_small.dcm"), unreadable)]
        assert all(r.returncode != 0 for r in refusals) and "SOPClassNotSupported" in refusals[0].stdout + \
            refusals[0].stderr and "CannotUnderstand" in refusals[1].stdout + refusals[1].stderr
        assert storescu(listener.port, [shared_cxr / CANINE]).returncode == 0
        # the JPEG 2000 CR as it is (storescu proposes JPEG 2000 only when told; it cannot decode it itself)
        assert storescu(listener.port, [shared_cxr / CR], "STORESCU", "--propose-j2k-lossy").returncode == 0
        records = wait_results(out, 2)
        assert sorted(Path(r["path"]).parent.name for r in records) == [INCOMING, INCOMING]
        assert all(r["mode"] == "local" and r["sent"] == pacs.node and (out / r["sr"]).is_file() for r in records)
        log = listener.text()
        assert "refused" in log and "MR Image Storage is not a radiograph this node analyses" in log, log
        assert log.count("refused") == 2 and sorted(p.name for p in (out / INCOMING).iterdir()) == sorted(
            f"{pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID}.dcm" for f in (shared_cxr / CANINE,
                                                                                          shared_cxr / CR))
        # The SRs are in the PACS, as sent: read back by their UIDs.
        in_pacs = {t["SOPInstanceUID"] for t in pacs.instances_of_class(COMPREHENSIVE_SR)}
        assert in_pacs == {str(pydicom.dcmread(out / r["sr"]).SOPInstanceUID) for r in records}
        images = {t["SOPInstanceUID"]: t for t in pacs.instances_of_class(SECONDARY_CAPTURE)}
        assert set(images) == {str(pydicom.dcmread(out / r["image"]).SOPInstanceUID) for r in records}
        assert all(t["BurnedInAnnotation"] == "YES" and "DEMO WEIGHTS" in t["SeriesDescription"]
                   for t in images.values())

        storescu(listener.port, [shared_cxr / CANINE])  # the same instance again: acknowledged, kept once
        listener.wait_for("was received before")
        assert listener.stop() == 0
    assert len(read_results(out)) == 2
    assert "2 received, 1 duplicates, 2 refused; 2 analysed, 0 failed, 2 SRs sent (" in listener.text()


def test_a_killed_node_analyses_every_acknowledged_instance_exactly_once_after_a_restart(tmp_path, shared_cxr):
    out = tmp_path / "node"
    files = copies(shared_cxr / CANINE, tmp_path / "send", 12)
    listener = Listener(out)
    sent = storescu(listener.port, files)
    assert sent.returncode == 0, sent.stdout + sent.stderr  # every instance acknowledged
    listener.kill()
    before = read_results(out)
    assert len(before) < len(files), "the kill came after the whole stream was analysed: nothing to resume"
    assert len(list((out / INCOMING).glob("*.dcm"))) == len(files)  # acknowledged means on disk

    again = Listener(out)
    records = wait_results(out, len(files))
    again.wait_for("analysed")
    assert again.stop() == 0
    uids = sorted(Path(r["path"]).stem for r in read_results(out))
    assert uids == sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
    assert len(set(uids)) == len(uids) == len(records)  # each once, across the kill
    assert len(list((out / "sr").glob("*.dcm"))) == len(files)  # an SR rewritten after the kill is the same SR


def test_only_the_allowed_senders_get_in(tmp_path, shared_cxr):
    out = tmp_path / "node"
    listener = Listener(out, "--allow", "STORESCU,MODALITY1")
    refused = storescu(listener.port, [shared_cxr / CANINE], aet="INTRUDER")
    assert refused.returncode != 0 and not list((out / INCOMING).glob("*.dcm"))
    echo = subprocess.run(["echoscu", "-aet", "MODALITY1", "-aec", "MEDEDGE", "127.0.0.1", str(listener.port)],
                          capture_output=True, text=True, timeout=60)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert listener.stop() == 0


@pytest.mark.parametrize("options, says", [
    (["--host", "0.0.0.0"], "name the senders with --allow"),
    (["--host", "0.0.0.0", "--allow", "CT1"], "or --insecure to accept plaintext"),
    (["--ae-title", "A\\B"], "AE title"),
    (["--send", "pacs:4242"], "expected AET@host:port"),
])
def test_a_node_beyond_loopback_needs_its_senders_named_and_plaintext_accepted(tmp_path, options, says):
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "listen", "--out", str(tmp_path), *options],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ))
    assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_worklist_sends_its_srs_and_says_when_a_node_refuses(tmp_path, shared_cxr):
    """`infer --out DIR --send NODE`: each SR reaches the PACS; a node that rejects this workstation's AE title,
    or that is not there, gives the study's line a one-line reason and the SR stays on disk."""
    def infer(out: Path, node: str, *options: str) -> dict:
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / CR), "--out", str(out),
                               "--send", node, *options, *FAST], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        [record] = read_results(out)
        assert (out / record["sr"]).is_file()
        return record

    with running_orthanc(tmp_path / "orthanc") as pacs:
        record = infer(tmp_path / "to-pacs", pacs.node, "--annotated-image")
        assert record["sent"] == pacs.node
        [stored] = pacs.instances_of_class(COMPREHENSIVE_SR)
        assert stored["SOPInstanceUID"] == str(pydicom.dcmread(tmp_path / "to-pacs" / record["sr"]).SOPInstanceUID)
        [image] = pacs.instances_of_class(SECONDARY_CAPTURE)
        assert image["SOPInstanceUID"] == str(pydicom.dcmread(tmp_path / "to-pacs" / record["image"]).SOPInstanceUID)

    gatekeeper = Listener(tmp_path / "gatekeeper", "--allow", "SOMEONE")  # rejects MEDEDGE
    record = infer(tmp_path / "rejected", f"MEDEDGE@127.0.0.1:{gatekeeper.port}")
    assert record["send_error"].startswith("SR not sent: MEDEDGE@127.0.0.1") and "association rejected" in \
        record["send_error"] and "sent" not in record
    gatekeeper.stop()
    record = infer(tmp_path / "nobody", f"PACS@127.0.0.1:{free_ports(1)[0]}")
    assert "no answer" in record["send_error"] and "\n" not in record["send_error"]
    assert "no answer" in (tmp_path / "nobody" / "summary.csv").read_text()  # its error column says why

    # The node is there now: the same command sends what it could not send, without analysing the study again.
    with running_orthanc(tmp_path / "orthanc-later") as pacs:
        done = subprocess.run([sys.executable, str(ROOT / "main.py"), "infer", str(shared_cxr / CR), "--out",
                               str(tmp_path / "nobody"), "--send", pacs.node, *FAST],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert f"1 of 1 SRs of earlier runs sent to {pacs.node}" in done.stderr and "0 analysed" in done.stderr
        first, again = read_results(tmp_path / "nobody")
        assert again["sent"] == pacs.node and "send_error" not in again and again["sr"] == first["sr"]
        [stored] = pacs.instances_of_class(COMPREHENSIVE_SR)
        assert stored["SOPInstanceUID"] == str(pydicom.dcmread(tmp_path / "nobody" / first["sr"]).SOPInstanceUID)
    assert "no answer" not in (tmp_path / "nobody" / "summary.csv").read_text()


def test_srs_the_node_could_not_send_are_sent_when_it_can(tmp_path, shared_cxr):
    """`listen --send`: a PACS that is down when a study is analysed gets its SR later — at the next start, and while
    the node runs after a wait that doubles (30 s, 1 min, … 10 min) — never lost."""
    from app.cli.listen import _Resend
    from app.worklist import ResultsLog
    from pacs.remote import parse_node

    out = tmp_path / "node"
    down = f"PACS@127.0.0.1:{free_ports(1)[0]}"
    listener = Listener(out, "--send", down)
    assert storescu(listener.port, copies(shared_cxr / CANINE, tmp_path / "send", 1)).returncode == 0
    [record] = wait_results(out, 1)
    assert "no answer" in record["send_error"]
    assert listener.stop() == 0
    with running_orthanc(tmp_path / "orthanc") as pacs:
        listener = Listener(out, "--send", pacs.node)
        listener.wait_for(f"1 of 1 SRs not sent before now sent to {pacs.node}")
        assert listener.stop() == 0
        [stored] = pacs.instances_of_class(COMPREHENSIVE_SR)
        assert stored["SOPInstanceUID"] == str(pydicom.dcmread(out / record["sr"]).SOPInstanceUID)
        assert read_results(out)[-1]["sent"] == pacs.node

        # while running: a failed send is tried again once its wait is over, the wait doubling while it fails
        (out / "results.jsonl").write_text((out / "results.jsonl").read_text().splitlines(keepends=True)[0])
        notes = []
        with ResultsLog(out) as log:
            resend = _Resend(out, parse_node(down), "MEDEDGE", log, notes.append)
            assert resend.when_due() == 0 and notes == ["0 of 1 SRs not sent before now sent to "
                                                        f"{down}; the other 1 again in 30 s"]
            assert resend.when_due() == 0 and len(notes) == 1  # not before its time
            resend.due_at = 0.0
            assert resend.when_due() == 0 and notes[-1].endswith("again in 60 s")
            resend.destination, resend.due_at = parse_node(pacs.node), 0.0  # (the node back)
            assert resend.when_due() == 1 and not resend.pending and resend.wait_s == _Resend.FIRST_S
            resend.failed()  # a study's SR not sent since: tried again in 30 s
            assert resend.pending and 25 < resend.due_at - time.monotonic() <= 30
