"""`inspect`: what the loader reads from each file (a patient CD's index and its images too), a JSON line each."""

from __future__ import annotations

import argparse
import json

from app.cli.common import EXIT_OK, EXIT_SOME_FAILED


def add_parser(sub) -> None:
    inspect = sub.add_parser("inspect", help="print what the loader reads from each file, one JSON line per file",
                             description="One JSON object per file and line: a folder's files (sorted, as infer "
                                         "takes them), a patient CD's index and then each image it lists. Exit 0 "
                                         "when all loaded, 2 when any failed.")
    inspect.add_argument("files", nargs="+", metavar="FILE", help="files, folders, a CD's folder or its DICOMDIR")
    inspect.add_argument("--recursive", action="store_true", help="folders: their sub-folders' files too")
    inspect.set_defaults(run=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from viewer.media import dicomdir_of, files_to_open

    failed = False
    for path in args.files:
        contents = files_to_open([path], args.recursive)  # what the viewer and infer open for this path
        dicomdir = dicomdir_of(path)
        if dicomdir is not None:  # a patient CD: the index first, then each image it lists
            record = ({"ok": False, "error": "; ".join(contents.notes)} if contents.notes else
                      {"ok": True, "dicomdir": True, "images": len(contents.listed),
                       "missing": sum(not image.present for image in contents.listed.values())})
            print(json.dumps({"path": str(dicomdir), **record}, ensure_ascii=False), flush=True)
            failed |= not record["ok"]
        elif not contents.files:
            print(json.dumps({"path": path, "ok": False, "error": "no files in this folder"}, ensure_ascii=False))
            failed = True
        for file in contents.files:
            image = contents.listed.get(file)
            context = {} if image is None else {"patient": image.patient, "study": image.study, "series": image.series}
            failed |= not _inspect_one(file, context, contents.absence(file))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _inspect_one(path: str, context: dict, absence: str | None = None) -> bool:
    """One JSON line for `path` (with `context` first); whether it opened. `absence`: why it is known not to."""
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph
    from viewer.report import describe

    try:
        record = ({"path": path, "ok": False, "error": absence} if absence is not None
                  else describe(load_radiograph(path)))
    except RadiographError as exc:
        record = {"path": path, "ok": False, "error": exc.reason}
    except Exception as exc:  # a bug of ours must still not hide the other files' results
        record = {"path": path, "ok": False, "error": f"unexpected error ({type(exc).__name__}): {exc}"}
    print(json.dumps({"path": record.pop("path"), **context, **record}, ensure_ascii=False), flush=True)
    return record["ok"]

