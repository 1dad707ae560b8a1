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


def _expand(paths: list[str]) -> list[str]:
    """Folders become their files (sorted, not recursive); files stay in the order given."""
    from pathlib import Path

    out: list[str] = []
    for path in paths:
        folder = Path(path)
        out.extend(sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else [path])
    return out


def _model_choice(args: argparse.Namespace):
    from inference.analyze import ModelChoice
    from inference.classifier import ClassifierConfig
    from inference.detector import DetectorConfig

    given = {"architecture": args.detector_arch, "input_size": args.detector_size,
             "confidence": args.confidence, "iou": args.iou}
    detector = DetectorConfig(**{k: v for k, v in given.items() if v is not None})
    classifier = ClassifierConfig(ten_crop=True) if args.ten_crop else ClassifierConfig()
    return ModelChoice(detector_weights=args.detector_weights, classifier_weights=args.classifier_weights,
                       detector=detector, classifier=classifier, device=args.device)


def _infer(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from inference.analyze import Analyzer
    from inference.weights import WeightsError
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    try:
        analyzer = Analyzer(_model_choice(args))
    except (WeightsError, ValueError) as exc:
        print(f"mededge infer: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = False
    target = nullcontext(sys.stdout) if args.json == "-" else open(args.json, "w", encoding="utf-8")
    with target as out:
        for path in _expand(args.paths):
            try:
                record = analyzer.analyze(load_radiograph(path)).to_json()
                record["path"] = path
            except RadiographError as exc:
                record = {"path": path, "error": exc.reason}
            except Exception as exc:  # one study's failure must not stop the others
                record = {"path": path, "error": f"analysis failed ({type(exc).__name__}): {exc}"}
            failed |= "error" in record
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            out.flush()
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _convert(args: argparse.Namespace) -> int:
    from inference.convert import convert_pickled_checkpoint
    from inference.weights import WeightsError, describe_weights

    try:
        summary = convert_pickled_checkpoint(args.source, args.target, trust_pickle=args.trust_pickle)
        summary |= describe_weights(args.target)
    except WeightsError as exc:
        print(f"mededge models convert: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"written": args.target} | summary))
    return EXIT_OK


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

    infer = sub.add_parser("infer", help="analyse radiographs with both models, one JSON line per file",
                           description="One JSON object per file and line: detections (boxes in original "
                                       "pixels), probabilities, weights used, mode, cut, timings. "
                                       "Exit 0 when all were analysed, 2 when any failed.")
    infer.add_argument("paths", nargs="+", metavar="PATH", help="files, or folders (their files)")
    infer.add_argument("--json", default="-", metavar="OUT", help="write JSON lines here (default - = stdout)")
    infer.add_argument("--detector-weights", metavar="F", help="detector state dict (default: demo weights)")
    infer.add_argument("--classifier-weights", metavar="F", help="classifier weights (default: demo weights)")
    infer.add_argument("--detector-arch", choices=("yolov4-p5", "yolov4-p6", "yolov4-p7"),
                       help="detector network (default from resources/models/models.yaml: yolov4-p5)")
    infer.add_argument("--detector-size", type=int, metavar="PX", help="letterbox size (default 512)")
    infer.add_argument("--confidence", type=float, help="detection threshold (default 0.4)")
    infer.add_argument("--iou", type=float, help="NMS IoU threshold (default 0.5)")
    infer.add_argument("--ten-crop", action="store_true", help="classifier: average the ten 224 px crops")
    infer.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto (CUDA when present)")
    infer.set_defaults(run=_infer)

    models = sub.add_parser("models", help="model weights tools").add_subparsers(dest="models_command",
                                                                                 metavar="ACTION", required=True)
    convert = models.add_parser("convert", help="turn a trusted pickled training checkpoint into a plain state dict",
                                description="Original Scaled-YOLOv4 training checkpoints and torchxrayvision "
                                            "models are whole pickled objects; the viewer loads only plain "
                                            "weights. Unpickling can run code: convert only files you trust.")
    convert.add_argument("--trust-pickle", action="store_true", help="required: you trust this file")
    convert.add_argument("source", metavar="IN")
    convert.add_argument("target", metavar="OUT")
    convert.set_defaults(run=_convert)
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
