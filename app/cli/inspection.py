"""`inspect`: what the loader reads from each file (a patient CD's index and its images too), a JSON line each."""

from __future__ import annotations

import argparse
import json

from app.cli.common import EXIT_OK, EXIT_SOME_FAILED


def add_parser(sub) -> None:
    inspect = sub.add_parser("inspect", help="print what the loader reads from each file, one JSON line per file",
                             description="One JSON object per file and line. Exit 0 when all loaded, 2 when any "
                                         "failed.")
    inspect.add_argument("files", nargs="+", metavar="FILE")
    inspect.set_defaults(run=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from viewer.media import MediaError, dicomdir_of, referenced_images

    failed = False
    for path in args.files:
        dicomdir = dicomdir_of(path)
        if dicomdir is None:
            failed |= not _inspect_one(path, {})
            continue
        try:  # a patient CD: the index, then each image it lists, under its patient, study and series
            images = referenced_images(dicomdir)
        except MediaError as exc:
            print(json.dumps({"path": str(dicomdir), "ok": False, "error": str(exc)}, ensure_ascii=False))
            failed = True
            continue
        missing = sum(not image.present for image in images)
        print(json.dumps({"path": str(dicomdir), "ok": True, "dicomdir": True, "images": len(images),
                          "missing": missing}, ensure_ascii=False), flush=True)
        for image in images:
            failed |= not _inspect_one(image.path, {"patient": image.patient, "study": image.study,
                                                    "series": image.series}, None if image.present else image.absence)
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

