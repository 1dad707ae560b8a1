"""What to open for the paths a user gives: files as they are, folders as their files, and patient CDs or USB
sticks through their DICOMDIR — the index (DICOM Part 10 file-set) of the patients, studies, series and images
on the media, read with pydicom's `FileSet`.

One place for this: the viewer's Open files / Open folder / drop, `infer`, `inspect` and the command line.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DICOMDIR = "DICOMDIR"


@dataclass(frozen=True)
class ReferencedImage:
    """One image a DICOMDIR lists, where it should be on the media, and under whom."""

    path: str
    patient: str     # "Name (ID)"
    study: str       # "date description", as the index gives them
    series: str      # "modality #number description"
    present: bool


class MediaError(Exception):
    """A DICOMDIR that cannot be read; the message is one line for a person."""


def dicomdir_of(path: str | os.PathLike[str]) -> Path | None:
    """The DICOMDIR `path` names: the file itself, or the one at the root of a folder (any letter case, as CDs
    written on other systems spell it); None otherwise."""
    path = Path(path)
    if path.is_file():
        return path if path.name.upper() == DICOMDIR and _is_dicomdir(path) else None
    if path.is_dir():
        for candidate in sorted(path.iterdir()):
            if candidate.name.upper() == DICOMDIR and candidate.is_file() and _is_dicomdir(candidate):
                return candidate
    return None


def _is_dicomdir(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
            return head[128:132] == b"DICM" and b"1.2.840.10008.1.3.10" in stream.read(512)  # Media Storage
    except OSError:                                                                           # Directory SOP Class
        return False


def referenced_images(dicomdir: str | os.PathLike[str]) -> list[ReferencedImage]:
    """The images the DICOMDIR lists, patient by patient, study by study, series by series (its own order);
    `MediaError` when it cannot be read."""
    import pydicom
    from pydicom.fileset import FileSet

    dicomdir = Path(dicomdir)
    try:
        with warnings.catch_warnings():  # e.g. a listed image missing from the media: reported per image below
            warnings.simplefilter("ignore")
            file_set = FileSet()  # orphan records left out: pydicom would copy their files to a scratch folder
            file_set.load(pydicom.dcmread(dicomdir), include_orphans=False)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a damaged index
        raise MediaError(f"{dicomdir}: not a readable DICOMDIR ({_reason(exc)})") from exc
    images = []
    # The record tree, not `for instance in file_set`: pydicom leaves out of that the images missing from the
    # media, which the user must hear about.
    for node in file_set._tree:
        if not node.has_instance or node.record_type != "IMAGE":  # not SR, presentation states, private
            continue
        instance = node.instance
        levels = {node.record_type: node._record for node in instance.node.reverse() if not node.is_root}
        path = Path(instance.path)
        images.append(ReferencedImage(
            str(path), _patient(levels.get("PATIENT")), _study(levels.get("STUDY")), _series(levels.get("SERIES")),
            path.is_file()))
    return images


def _reason(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 100 else text[:98].rsplit(" ", 1)[0] + " …"


def _text(record, keyword: str) -> str:
    value = record.get(keyword, "") if record is not None else ""
    return " ".join(str(value or "").split())


def _patient(record) -> str:
    name, patient_id = _text(record, "PatientName").replace("^", " ").strip(), _text(record, "PatientID")
    return f"{name or 'no name'} ({patient_id})" if patient_id else name or "no name"


def _study(record) -> str:
    return " ".join(v for v in (_text(record, "StudyDate"), _text(record, "StudyDescription")) if v) or "study"


def _series(record) -> str:
    number = _text(record, "SeriesNumber")
    parts = (_text(record, "Modality"), f"#{number}" if number else "", _text(record, "SeriesDescription"))
    return " ".join(v for v in parts if v) or "series"


def files_to_open(paths: Iterable[str], recursive: bool = False) -> list[str]:
    """Files in the order given. A DICOMDIR, or a folder holding one at its root, becomes the images it lists
    (those missing from the media too: each is then reported as missing, in its place); any other folder
    becomes its files, sorted, hidden ones (".name") and a damaged DICOMDIR index left out. With `recursive`
    sub-folders are walked too (sorted, hidden ones skipped, links to folders not followed: no loops)."""
    out: list[str] = []
    for path in paths:
        folder = Path(path)
        dicomdir = dicomdir_of(folder)
        if dicomdir is not None:
            try:
                out += [image.path for image in referenced_images(dicomdir)]
                continue
            except MediaError:
                pass  # a damaged index: what the folder holds is still worth opening
        if not folder.is_dir():
            out.append(str(folder))  # spelled as given (results are matched by path)
            continue
        found: list[Path] = []
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
            found += [Path(root) / f for f in files if not f.startswith(".") and (Path(root) / f).is_file()
                      and not (f.upper() == DICOMDIR and _is_dicomdir(Path(root) / f))]
        # Sorting paths (not strings) keeps a folder's files together: "a/b.dcm" before "a-1.dcm".
        out += [str(p) for p in sorted(found, key=lambda p: p.relative_to(folder).parts)]
    return out
