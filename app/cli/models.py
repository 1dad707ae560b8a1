"""`models convert|quantize`: plain weights from a trusted checkpoint; INT8 local runtimes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.common import EXIT_OK, EXIT_USAGE, add_model_options, chosen_models, fail, model_choice
from inference.config import Runtime
from viewer.media import files_to_open

# what `models quantize` builds
QUANTIZED_RUNTIMES = (Runtime.ONNXRUNTIME_INT8_DYNAMIC, Runtime.ONNXRUNTIME_INT8_STATIC, Runtime.OPENVINO_INT8)


def add_parser(sub) -> None:
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

    quantize = models.add_parser("quantize", help="build an INT8 local runtime (calibrated on your images)",
                                 description="Builds INT8 models of the whole detector and classifier from their "
                                             "FP32 ONNX (onnxruntime dynamic or static QDQ; OpenVINO by NNCF "
                                             "post-training quantisation), cached in the data folder, and checks "
                                             "each against PyTorch with the fidelity gate (probabilities within "
                                             "0.02, boxes at IoU >= 0.9) on the images. `--runtime auto` uses a "
                                             "model only when it passes. One JSON line per model.")
    quantize.add_argument("--images", metavar="DIR", help="calibration radiographs (DICOM, PNG, …); files that are "
                          "not images are skipped. Required for the calibrated runtimes (static, openvino-int8)")
    quantize.add_argument("--runtime", default=str(Runtime.ONNXRUNTIME_INT8_STATIC),
                          choices=[str(r) for r in QUANTIZED_RUNTIMES],
                          help="which INT8 runtime to build (default onnxruntime-int8-static)")
    quantize.add_argument("--models", default="detector,classifier", help="which models (default both)")
    add_model_options(quantize, runtime=False)
    quantize.set_defaults(run=_quantize)


def _convert(args: argparse.Namespace) -> int:
    from inference.models.convert import convert_pickled_checkpoint
    from inference.models.weights import WeightsError, describe_weights

    try:
        summary = convert_pickled_checkpoint(args.source, args.target, trust_pickle=args.trust_pickle)
        summary |= describe_weights(args.target)
    except WeightsError as exc:
        print(f"mededge models convert: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps({"written": args.target} | summary))
    return EXIT_OK


def _quantize(args: argparse.Namespace) -> int:
    """Build INT8 local runtimes and report each one's fidelity gate verdict, one JSON line per model."""
    from inference.analysis.analyzer import Analyzer
    from inference.models.weights import WeightsError, data_dir
    from inference.runtimes.local import CALIBRATED, file_session, model_input, verdict
    from viewer.display import render_8bit
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    greys = []
    if args.images:
        if not Path(args.images).is_dir():
            return fail("models quantize", f"{args.images} is not a folder")
        for path in files_to_open([args.images]).files:
            try:
                greys.append(render_8bit(load_radiograph(path)))
            except RadiographError as exc:  # e.g. a report or a damaged file among the images: skip it
                print(f"mededge models quantize: skipped {path}: {exc.reason}", file=sys.stderr)
    calibrated = Runtime(args.runtime) in CALIBRATED
    if calibrated and not greys:
        return fail("models quantize", f"{args.runtime} is calibrated on radiographs: give a folder of them with "
                     "--images DIR" + (" (none of its files could be read)" if args.images else ""))
    try:
        kinds = chosen_models(args.models)
        analyzer = Analyzer(model_choice(args, runtime=Runtime.TORCH))  # the models only; no runtime choice
        folder = data_dir() / "local-onnx"
        folder.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            model, weights, name = analyzer.model(kind), analyzer.weights[kind], kind.value
            inputs = [model_input(model, grey) for grey in greys]
            print(f"mededge models quantize: {name} {args.runtime} on {len(inputs)} image(s) …", file=sys.stderr,
                  flush=True)
            session = file_session(model, weights, folder, Runtime(args.runtime), calibration=inputs or None)
            result = verdict(model, session, inputs or None)  # the gate on these images (sample input if none)
            print(json.dumps({"model": name, "runtime": args.runtime, "file": str(session.path),
                              "calibration_images": len(inputs) if calibrated else 0} | result),
                  flush=True)
    except (WeightsError, ValueError, OSError) as exc:
        return fail("models quantize", exc)
    return EXIT_OK

