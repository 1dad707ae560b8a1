"""What to open for the paths a user gives: files as they are, folders as their files, and patient CDs or USB
sticks through their DICOMDIR — the index (DICOM Part 10 file-set) of the patients, studies, series and images
on the media, read with pydicom's `FileSet`.

One place for this: the viewer's Open files / Open folder / drop, `infer`, `inspect` and the command line.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

DICOMDIR = "DICOMDIR"
MAX_RECORDS = 1_000_000  # an index larger than any CD or stick holds is damaged (and would take forever)


@dataclass(frozen=True)
class ReferencedImage:
    """One image a DICOMDIR lists, where it should be on the media, and under whom."""

    path: str
    patient: str     # "Name (ID)"
    study: str       # "date description", as the index gives them
    series: str      # "modality #number description"
    present: bool


    @property
    def absence(self) -> str:
        """Why the file cannot be opened when the media lacks it: the index's words, with whose it is (names
        such as IM000001 repeat across patients)."""
        return f"listed in the DICOMDIR but not on the media ({self.patient}, {self.study}, {self.series})"


class MediaError(Exception):
    """A DICOMDIR that cannot be read; the message is one line for a person."""


@dataclass(frozen=True)
class OpenList:
    """What the paths a user gave come to: the files to open in order, the index entry of each a DICOMDIR
    lists (keyed by path), and notes for the user (a damaged index, and what was opened instead)."""

    files: list[str]
    listed: dict[str, ReferencedImage] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def absence(self, path: str) -> str | None:
        """The reason `path` is known not to open before it is tried: a DICOMDIR lists it, the media lacks it."""
        image = self.listed.get(path)
        return image.absence if image is not None and not image.present else None


def dicomdir_of(path: str | os.PathLike[str]) -> Path | None:
    """The DICOMDIR `path` names: the file itself, or the one at the root of a folder (any letter case, as CDs
    written on other systems spell it); None otherwise."""
    path = Path(path)
    if path.is_file():
        return path if _media_name(path.name) == DICOMDIR and _is_dicomdir(path) else None
    if path.is_dir():
        for candidate in sorted(path.iterdir()):
            if _media_name(candidate.name) == DICOMDIR and candidate.is_file() and _is_dicomdir(candidate):
                return candidate
    return None


def _media_name(name: str) -> str:
    """A file name as the index spells it: CD drives may show ISO 9660 names lower-cased, with their version
    (";1") and an empty extension's dot ("IM000001." ) — Part 10 names are upper-case, without either."""
    return name.split(";", 1)[0].rstrip(".").upper()


def _on_media(root: Path, relative: Path, listings: dict[Path, dict[str, Path]]) -> Path:
    """Where the file the index names is: the exact path, or the one the media spells differently (see
    `_media_name`); the exact path when neither is there. Only names the folders hold are followed."""
    exact = root / relative
    if exact.is_file():
        return exact
    here = root
    for part in relative.parts:
        if here not in listings:
            try:
                listings[here] = {_media_name(p.name): p for p in sorted(here.iterdir())} if here.is_dir() else {}
            except OSError:
                listings[here] = {}
        found = listings[here].get(_media_name(part))
        if found is None:
            return exact
        here = found
    return here if here.is_file() else exact


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
            index = pydicom.dcmread(dicomdir)
            _check_links(index)  # before pydicom follows them: it would loop for ever on a cycle
            file_set = FileSet()  # orphan records left out: pydicom would copy their files to a scratch folder
            file_set.load(index, include_orphans=False)
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on a damaged index, in Python's words
        raise MediaError(f"{dicomdir}: damaged DICOMDIR: its records cannot be read") from exc
    images = []
    root = file_set.root_path  # set by `load` from a file read from disk
    listings: dict[Path, dict[str, Path]] = {}
    # The record tree, not `for instance in file_set`: pydicom leaves out of that the images missing from the
    # media, which the user must hear about.
    for node in file_set._tree:
        if not node.has_instance or node.record_type != "IMAGE":  # not SR, presentation states, private
            continue
        levels = {level.record_type: level._record for level in node.reverse() if not level.is_root}
        relative = node.file_id_path(root)
        assert relative is not None, "pydicom gives an instance only to a record with a file ID"
        path = _on_media(root, relative, listings)
        images.append(ReferencedImage(
            str(path), _patient(levels.get("PATIENT")), _study(levels.get("STUDY")), _series(levels.get("SERIES")),
            path.is_file()))
    return images


def _check_links(index) -> None:
    """MediaError unless the index's records form a tree: every link (first record, next record, first record
    of the level below) leads to a record of the index, and no record is reached twice."""
    records = index.get("DirectoryRecordSequence") or []
    if len(records) > MAX_RECORDS:
        raise MediaError(f"{index.filename}: damaged DICOMDIR: {len(records)} records, more than any media holds")
    at = {record.seq_item_tell: record for record in records}
    seen: set[int] = set()
    heads = [index.get("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity", 0)]
    while heads:
        offset = heads.pop()
        while offset:  # one level: first record, then each next one
            record = at.get(offset)
            if record is None:
                raise MediaError(f"{index.filename}: damaged DICOMDIR: a record link points outside its records")
            if offset in seen:
                raise MediaError(f"{index.filename}: damaged DICOMDIR: its record links loop")
            seen.add(offset)
            heads.append(record.get("OffsetOfReferencedLowerLevelDirectoryEntity", 0))
            offset = record.get("OffsetOfTheNextDirectoryRecord", 0)


def _text(record, keyword: str) -> str:
    value = record.get(keyword, "") if record is not None else ""
    return " ".join(str(value or "").split())


def _patient(record) -> str:
    from viewer.names import readable_person_name  # pydicom, as the index itself: only once a DICOMDIR is read

    name, patient_id = readable_person_name(_text(record, "PatientName")), _text(record, "PatientID")
    return f"{name or 'no name'} ({patient_id})" if patient_id else name or "no name"


def _study(record) -> str:
    return " ".join(v for v in (_text(record, "StudyDate"), _text(record, "StudyDescription")) if v) or "study"


def _series(record) -> str:
    number = _text(record, "SeriesNumber")
    parts = (_text(record, "Modality"), f"#{number}" if number else "", _text(record, "SeriesDescription"))
    return " ".join(v for v in parts if v) or "series"


def files_to_open(paths: Iterable[str], recursive: bool = False) -> OpenList:
    """The files to open, in the order given. A DICOMDIR, or a folder holding one at its root, becomes the
    images it lists (those missing from the media too, in their place: see `OpenList.absence`); a damaged
    one, with a note, the files of its folder and sub-folders (as a CD lays them out). Any other folder becomes
    its files, sorted, hidden ones (".name") and index files left out; with `recursive` its sub-folders' too
    (sorted, hidden ones skipped, links to folders not followed: no loops)."""
    out = OpenList([])
    for path in paths:
        folder = Path(path)
        dicomdir = dicomdir_of(folder)
        if dicomdir is not None:
            try:
                images = referenced_images(dicomdir)
            except MediaError as exc:  # what the media holds is still worth opening
                out.notes.append(f"{exc}: opened the files on the media instead")
                out.files.extend(_files_in(dicomdir.parent, recursive=True))
                continue
            out.files.extend(image.path for image in images)
            out.listed.update((image.path, image) for image in images)
        elif folder.is_dir():
            out.files.extend(_files_in(folder, recursive))
        else:
            out.files.append(str(folder))  # spelled as given (results are matched by path)
    return out


def _files_in(folder: Path, recursive: bool) -> list[str]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [Path(root) / f for f in files if not f.startswith(".") and (Path(root) / f).is_file()
                  and not (_media_name(f) == DICOMDIR and _is_dicomdir(Path(root) / f))]
    # Sorting paths (not strings) keeps a folder's files together: "a/b.dcm" before "a-1.dcm".
    return [str(p) for p in sorted(found, key=lambda p: p.relative_to(folder).parts)]
