"""The hospital network's two figures (issue 23), against a real Orthanc on loopback, in one run:

1. Retrieving a study: the viewer's C-GET (pacs.query.get_study) against dcmtk's getscu for the same study from
   the same Orthanc, side by side in rotated rounds — images per second, and their ratio.
2. The DICOM node under a stream: `listen` (demo weights, local) receives studies sent by dcmtk's storescu
   while it analyses; when the sender is done and when the last result is written, and whether the queue and the
   results are complete.

    .venv/bin/python bench/bench_pacs.py --images 40 --rounds 5 --stream 100
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import pydicom  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from app.worklist import read_results  # noqa: E402
from inference.edge.server import free_ports  # noqa: E402
from inference.reports.benchmark import machine_description  # noqa: E402
from pacs import dimse  # noqa: E402
from pacs.nodes import DicomNode  # noqa: E402
from pacs.query import get_study  # noqa: E402

from orthanc import AE_TITLE, running_orthanc  # noqa: E402

RADIOGRAPH = ROOT.parent / "shared" / "data" / "cxr" / "dicom" / "DX_chest_966_fixed.dcm"  # 2128 × 2000, J2K


def _instances(count: int, folder: Path | None = None) -> tuple[str, list]:
    """`count` copies of the real radiograph as one study (uncompressed: a transfer both tools can carry)."""
    source = pydicom.dcmread(RADIOGRAPH)
    source.decompress()
    study, series = generate_uid(), generate_uid()
    copies = []
    for index in range(count):
        ds = copy.deepcopy(source)  # (a shallow copy shares its data elements: every copy one UID)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = "BENCH"
        if folder is not None:
            ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()  # the stream: a study each
            path = folder / f"{index:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
        copies.append(ds)
    return study, copies


def retrieve(images: int, rounds: int, work: Path) -> dict:
    with running_orthanc(work / "orthanc", known={"MEDEDGE": ("127.0.0.1", 1)}) as orthanc:
        node = DicomNode(AE_TITLE, "127.0.0.1", orthanc.dicom_port)
        study, datasets = _instances(images)
        dimse.store(node, datasets, "MEDEDGE")
        size_mb = sum(len(ds.PixelData) for ds in datasets) / 1e6
        times: dict[str, list[float]] = {"viewer C-GET": [], "dcmtk getscu": []}

        def ours() -> None:
            target = work / "ours"
            shutil.rmtree(target, ignore_errors=True)
            assert len(get_study(node, study, target, "MEDEDGE").files) == images

        def getscu() -> None:
            target = work / "getscu"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            subprocess.run(["getscu", "-aet", "MEDEDGE", "-aec", AE_TITLE, "-S", "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={study}", "-od", str(target), "127.0.0.1",
                            str(orthanc.dicom_port)], check=True, capture_output=True, timeout=600)
            assert len(list(target.iterdir())) == images

        tools = {"viewer C-GET": ours, "dcmtk getscu": getscu}
        for tool in tools.values():
            tool()  # warm-up: Orthanc's caches, first connections
        names = list(tools)
        for round_ in range(rounds):
            for name in names[round_ % 2:] + names[:round_ % 2]:  # rotated: drift falls on both alike
                started = time.perf_counter()
                tools[name]()
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {"images": images, "megabytes": round(size_mb, 1), "rounds": rounds,
            "median_s": {name: round(s, 3) for name, s in medians.items()},
            "images_per_s": {name: round(images / s, 1) for name, s in medians.items()},
            "ours_over_getscu_time": round(medians["viewer C-GET"] / medians["dcmtk getscu"], 2)}


def stream(count: int, work: Path) -> dict:
    """`count` one-image studies sent by storescu to a running `listen`, which analyses as they come."""
    send = work / "send"
    send.mkdir()
    _instances(count, send)
    out, port = work / "node", free_ports(1)[0]
    log = open(work / "listen.log", "w")
    node = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "listen", "--out", str(out), "--port", str(port),
                             "--runtime", "torch"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        while "listening as" not in (work / "listen.log").read_text():
            if node.poll() is not None:
                raise RuntimeError((work / "listen.log").read_text())
            time.sleep(0.2)
        started = time.perf_counter()
        sent = subprocess.run(["storescu", "-aet", "MODALITY", "-aec", "MEDEDGE", "127.0.0.1", str(port),
                               *sorted(map(str, send.iterdir()))], capture_output=True, text=True, timeout=3600)
        sent_s = time.perf_counter() - started
        while len(read_results(out)) < count and node.poll() is None:
            time.sleep(0.5)
        analysed_s = time.perf_counter() - started
    finally:
        node.terminate()
        node.wait(timeout=120)
        log.close()
    results = read_results(out)
    uids = {Path(r["path"]).stem for r in results}
    return {"studies": count, "storescu_exit": sent.returncode, "sent_s": round(sent_s, 1),
            "all_analysed_s": round(analysed_s, 1), "received": len(list((out / "incoming").glob("*.dcm"))),
            "results": len(results), "distinct": len(uids), "errors": sum("error" in r for r in results),
            "analysed_per_s": round(count / analysed_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream", type=int, default=100)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_description(),
                  "command": " ".join(sys.argv), "retrieve": retrieve(args.images, args.rounds, work)}
        print(json.dumps(report["retrieve"]), flush=True)
        if args.stream:
            report["stream"] = stream(args.stream, work)
            print(json.dumps(report["stream"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
