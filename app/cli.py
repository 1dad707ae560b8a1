"""Command line: `mededge` / `python main.py` — the viewer, or a subcommand.

Subcommands import only what they need, so `inspect` starts without Qt or torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_SOME_FAILED = 2


def _inspect(args: argparse.Namespace) -> int:
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph
    from viewer.report import describe

    failed = False
    for path in args.files:
        try:
            record = describe(load_radiograph(path))
        except RadiographError as exc:
            record = {"path": path, "ok": False, "error": exc.reason}
        except Exception as exc:  # a bug of ours must still not hide the other files' results
            record = {"path": path, "ok": False, "error": f"unexpected error ({type(exc).__name__}): {exc}"}
        failed |= not record["ok"]
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _gui(args: argparse.Namespace) -> int:
    from app.main_window import run_viewer

    return run_viewer(args.files)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mededge",
        description="MedEdge Viewer: chest radiographs with split AI inference on a Triton edge server.",
        epilog="Without a subcommand the viewer opens, with FILES if given.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    inspect = sub.add_parser("inspect", help="print what the loader reads from each file, one JSON line per file",
                             description="One JSON object per file and line. Exit 0 when all loaded, 2 when any failed.")
    inspect.add_argument("files", nargs="+", metavar="FILE")
    inspect.set_defaults(run=_inspect)
    return parser


def _gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mededge", description="Open the viewer (see `mededge --help-commands`).")
    parser.add_argument("files", nargs="*", metavar="FILE", help="DICOM, PNG, JPEG or TIFF files or folders to open")
    parser.set_defaults(run=_gui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if argv and (argv[0] in commands or argv[0] in ("-h", "--help")):
        args = parser.parse_args(argv)
    else:
        args = _gui_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mededge inspect … | head`
        return EXIT_OK
