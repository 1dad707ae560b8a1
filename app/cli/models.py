"""`models convert|quantize`: plain weights from a trusted checkpoint; INT8 local runtimes."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import EXIT_OK, EXIT_USAGE, add_model_options, chosen_models, fail, model_choice
from inference.config import ModelKind, Runtime

if TYPE_CHECKING:  # the models load only when a command runs (`--help` stays quick)
    import numpy as np

    from inference.models.stages import StagedModel

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
                                             "0.02, boxes at IoU >= 0.9) on the images — for a calibrated runtime "
                                             "on a quarter of them held back from its calibration. `--runtime "
                                             "auto` uses a model only when it passes. One JSON line per model.")
    quantize.add_argument("--images", metavar="DIR", help="the site's radiographs (DICOM, PNG, …), sub-folders "
                          "too; files that are not images are skipped. Required: the gate runs on them (for the "
                          "calibrated runtimes, static and openvino-int8, at least 2: three quarters calibrate, the "
                          "rest are held back for the gate)")
    quantize.add_argument("--runtime", default=str(Runtime.ONNXRUNTIME_INT8_STATIC),
                          choices=[str(r) for r in QUANTIZED_RUNTIMES],
                          help="which INT8 runtime to build (default onnxruntime-int8-static)")
    quantize.add_argument("--models", default="detector,classifier", help="which models (default both)")
    add_model_options(quantize, runtime=False)
    quantize.set_defaults(run=_quantize)

    prune = models.add_parser("prune", help="build a pruned copy distilled on your radiographs (the pruned runtime)",
                              description="Removes a share of each layer's channels (smallest L2 magnitude; the "
                                          "layers whose outputs are read keep theirs), then trains the pruned copy "
                                          "to answer like the unpruned model on your unlabelled radiographs "
                                          "(distillation), holding a quarter of them back. The copy is kept as the "
                                          "`pruned` runtime only if it passes the fidelity gate against the "
                                          "unpruned model on the held-back radiographs. With --unstructured, the "
                                          "seeds' magnitude pruning + INT8 instead, for its size on disk only. "
                                          "One JSON line per model.")
    prune.add_argument("--images", required=True, metavar="DIR", help="the site's radiographs (DICOM, PNG, …), at "
                       "least 2, sub-folders too; no labels needed. Files that are not images are skipped")
    prune.add_argument("--ratio", type=float, default=0.5, help="share of each layer's channels removed (default 0.5)")
    prune.add_argument("--steps", type=int, default=200, help="distillation steps of 4 inputs each (default 200)")
    prune.add_argument("--unstructured", type=float, metavar="SPARSITY",
                       help="instead: zero this share of the weights (rising from 0.5 while distilling), INT8; "
                            "reports its size compressed (not a runtime: zeros do not run faster)")
    prune.add_argument("--models", default="classifier", help="which models (default classifier; the detector's "
                       "distillation takes hours on a CPU)")
    add_model_options(prune, runtime=False)
    prune.set_defaults(run=_prune)


def _site_models(args: argparse.Namespace) -> tuple[list[tuple[ModelKind, StagedModel, str]], Path]:
    """Each chosen model with its weights, and the folder of the local builds (ValueError for a list of none)."""
    from inference.analysis.analyzer import Analyzer
    from inference.models.weights import data_dir

    if not (kinds := chosen_models(args.models)):
        raise ValueError("--models names no model (detector, classifier)")
    analyzer = Analyzer(model_choice(args, runtime=Runtime.TORCH))  # the models only; no runtime choice
    folder = data_dir() / "local-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    return [(kind, analyzer.model(kind), analyzer.weights[kind]) for kind in kinds], folder


def _site_inputs(command: str, images: str | None, models: list[tuple[ModelKind, StagedModel, str]]
                 ) -> dict[ModelKind, list[np.ndarray]]:
    """Each model's inputs made from the readable radiographs in `images` and its sub-folders, each file read once
    (the others named on stderr); none without a folder."""
    from inference.runtimes.local import model_input, site_radiographs

    if not images:
        return {kind: [] for kind, _, _ in models}
    read, skipped = site_radiographs(Path(images), lambda grey: [model_input(model, grey) for _, model, _ in models])
    for path, reason in skipped:  # e.g. a report or a damaged file among the images
        print(f"mededge {command}: skipped {path}: {reason}", file=sys.stderr)
    return {kind: [inputs[i] for inputs in read] for i, (kind, _, _) in enumerate(models)}


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
    from inference.models.weights import WeightsError
    from inference.runtimes.fidelity import split_held_back
    from inference.runtimes.local import CALIBRATED, file_session, verdict

    calibrated = Runtime(args.runtime) in CALIBRATED
    at_least = 2 if calibrated else 1  # calibrated on some, gated on others; a gate on the synthetic sample
    #                                    alone does not count for auto
    why = (f"{args.runtime} is calibrated on radiographs and gated on others: give a folder of at least 2"
           if calibrated else f"{args.runtime} is gated on radiographs: give a folder of them")
    if not args.images:
        return fail("models quantize", f"{why} with --images DIR")
    if not Path(args.images).is_dir():
        return fail("models quantize", f"{args.images} is not a folder")
    try:
        models, folder = _site_models(args)
    except (WeightsError, ValueError, OSError, RuntimeError) as exc:  # as below
        return fail("models quantize", exc)
    site = _site_inputs("models quantize", args.images, models)
    if (readable := len(next(iter(site.values())))) < at_least:
        return fail("models quantize", f"{why} with --images DIR ({readable} of its files could be read)")
    try:
        for kind, model, weights in models:
            name, inputs = kind.value, site[kind]
            # calibrated on some, gated on the others; a dynamic build (no calibration) gated on all
            calibration, held_back = split_held_back(inputs) if calibrated else ([], inputs)
            print(f"mededge models quantize: {name} {args.runtime}"
                  + (f" calibrated on {len(calibration)} image(s), gated on {len(held_back)} held back …"
                     if calibrated else f", gated on {len(held_back)} image(s) …"), file=sys.stderr, flush=True)
            session = file_session(model, weights, folder, Runtime(args.runtime), calibration=calibration or None,
                                   images_folder=Path(args.images) if calibrated else None, held_back=len(held_back))
            result = verdict(model, session, held_back)
            print(json.dumps({"model": name, "runtime": args.runtime, "file": str(session.path),
                              "calibration_images": len(calibration)}
                             | ({"held_back_images": len(held_back)} if calibrated else {}) | result), flush=True)
    except (WeightsError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError: an export or NNCF failing
        return fail("models quantize", exc)
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    """Build a pruned copy of each model, distilled on the site's radiographs; one JSON line per model."""
    from inference.models.weights import WeightsError
    from inference.runtimes import pruning
    from inference.runtimes.local import (
        DYNAMIC,
        PRUNED,
        OnnxModel,
        build_quantized,
        fp32_file,
        gate,
        make_current,
        verdict,
    )
    from inference.runtimes.openvino import OpenVinoModel

    command = "models prune"
    if args.device != "cpu":
        return fail(command, "pruning runs on the CPU, where the pruned copy runs too: leave out --device")
    if not Path(args.images).is_dir():
        return fail(command, f"{args.images} is not a folder")
    if args.steps < 1:
        return fail(command, f"--steps must be at least 1, got {args.steps}")
    try:
        models, folder = _site_models(args)
    except (WeightsError, ValueError, OSError, RuntimeError) as exc:  # as below
        return fail(command, exc)
    site = _site_inputs(command, args.images, models)
    if (readable := len(next(iter(site.values())))) < 2:
        return fail(command, f"pruning needs at least 2 radiographs (some to distil on, some held back for the "
                             f"fidelity gate); {args.images} has {readable} readable")
    plan = pruning.Distillation(steps=args.steps)
    try:
        for kind, model, weights in models:
            name, inputs = kind.value, site[kind]
            fp32, outputs = fp32_file(model, weights, folder)

            def progress(text: str, name: str = name) -> None:
                print(f"mededge {command}: {name} {text}", file=sys.stderr, flush=True)

            if args.unstructured is not None:
                progress(f"magnitude pruning to {args.unstructured:.0%} while distilling on {len(inputs)} image(s) …")
                sparse, sparsity, held_back = pruning.build_sparse(model, weights, fp32, args.unstructured, inputs,
                                                                   plan, progress)
                int8 = build_quantized(sparse, DYNAMIC)
                result = gate(model, OnnxModel(int8, outputs, DYNAMIC), held_back)
                print(json.dumps({"model": name, "file": str(int8), "sparsity": round(sparsity, 4),
                                  "bytes": int8.stat().st_size, "bytes_compressed": pruning.compressed_size(int8),
                                  "fp32_bytes_compressed": pruning.compressed_size(fp32),
                                  "held_back_images": len(held_back)} | result), flush=True)
                continue
            progress(f"removing {args.ratio:.0%} of the channels, distilling on {len(inputs)} image(s) "
                     f"({args.steps} steps) …")
            path, record, held_back = pruning.build_pruned(model, weights, fp32, args.ratio, inputs, plan, progress)
            # on the held-back radiographs, and kept as this build's verdict (what `open_runtime` reads)
            result = verdict(model, OpenVinoModel(path, outputs, PRUNED, pruning.cam_weight(path)), held_back)
            if result["passes"]:
                make_current(fp32, PRUNED, path, record.training_images)
            else:
                progress(f"not used: it fails the fidelity gate on the {len(held_back)} held-back radiograph(s) "
                         f"(largest difference {result['max_difference']:.3g} vs the unpruned model)")
            print(json.dumps({"model": name, "runtime": PRUNED, "kept": result["passes"], "file": str(path)}
                             | asdict(record) | result), flush=True)
    except (WeightsError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError: an export failing
        return fail(command, exc)
    return EXIT_OK
