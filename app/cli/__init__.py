"""Command line: `mededge` / `python main.py` — the viewer, or a subcommand (one module each).

Subcommands import only what they need, so `inspect` starts without Qt or torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.cli import bench, edge, evaluate, infer, inspection, listen, models
from app.cli.common import EXIT_OK

# anything else opens the viewer with FILES
COMMANDS = ("inspect", "infer", "evaluate", "listen", "edge", "models", "bench")


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mededge",
        description="MedEdge Viewer: chest radiographs with split AI inference on a Triton edge server.",
        epilog="Without a subcommand the viewer opens, with FILES if given.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (inspection, infer, evaluate, listen, edge, bench, models):
        command.add_parser(sub)
    return parser


def _gui(args: argparse.Namespace) -> int:
    if args.screenshot:
        import os

        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # a screenshot needs no screen
    from app.main_window import run_viewer

    return run_viewer(args.files, screenshot=args.screenshot)


def _gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mededge", description="Open the viewer. Commands: inspect, infer, evaluate, "
                                     "listen, edge, models, bench (`mededge COMMAND --help`).")
    parser.add_argument("files", nargs="*", metavar="FILE", help="DICOM, PNG, JPEG or TIFF files or folders to open")
    parser.add_argument("--screenshot", metavar="OUT.png", help="open FILES, analyse the first with the current "
                        "settings, render the window at 1440×900 into OUT.png and exit")
    parser.set_defaults(run=_gui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command_line = parser()
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        args = command_line.parse_args(argv)
    else:
        args = _gui_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mededge inspect … | head`
        return EXIT_OK

