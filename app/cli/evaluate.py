"""`evaluate`: AUROC per finding and detection mAP@0.5 of each configuration on labelled radiographs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from app.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    RUNTIME_CHOICES,
    add_edge_options,
    add_model_options,
    analysis_session,
    fail,
    first_radiograph,
)
from inference.config import Runtime


def add_parser(sub) -> None:
    evaluate = sub.add_parser("evaluate", help="AUROC per finding and detection mAP@0.5 on your own labelled "
                              "radiographs, for local FP32, quantised and split runs",
                              description="Runs each configuration over the labelled images and prints a table "
                                          "(configuration × metric, then AUROC per finding). AUROC is computed for "
                                          "the findings with both positive and negative images. mAP@0.5 (one "
                                          "class, opacity; all-point interpolated AP) counts the images in the box "
                                          "file and those labelled No Finding; boxes down to confidence 0.001 are "
                                          "kept unless --confidence is given (AP needs the whole precision-recall "
                                          "curve). Exit 2 when a configuration could not run (e.g. an INT8 model "
                                          "refused by the fidelity gate).")
    evaluate.add_argument("--labels", required=True, metavar="FILE", help="ChestX-ray14-style CSV: 'Image Index', "
                          "'Finding Labels' ('|'-separated ChestX-ray14 names, or 'No Finding')")
    evaluate.add_argument("--images", required=True, metavar="DIR", help="the labelled images (found by file name, "
                          "in DIR or below it)")
    evaluate.add_argument("--boxes", metavar="CSV", help="ground-truth opacity boxes: image, x, y, w, h in original "
                          "pixels (NIH BBox_List_2017.csv works too)")
    evaluate.add_argument("--runtimes", default="torch,onnxruntime-int8-dynamic", metavar="LIST",
                          help="local configurations to compare (default torch,onnxruntime-int8-dynamic: FP32 and "
                               f"INT8); any of {', '.join(RUNTIME_CHOICES)}")
    evaluate.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    add_model_options(evaluate, runtime=False)
    add_edge_options(evaluate, edge_help="also evaluate a split run on this edge server",
                     split_help="the split run's cuts: auto (default), edge, K, or detector:K,classifier:K")
    evaluate.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    """Each configuration (a local runtime, or a split on --edge) over the labelled images, then the metrics."""
    from inference.edge.client import EdgeError
    from inference.models.weights import WeightsError
    from inference.reports.evaluation import (
        EvaluationInputError,
        locate_images,
        predict,
        read_boxes,
        read_labels,
        score,
        table,
        with_changes,
    )

    try:
        labels = read_labels(args.labels)
        boxes = read_boxes(args.boxes) if args.boxes else None
        if not Path(args.images).is_dir():
            raise ValueError(f"{args.images} is not a folder")
        names = list(dict.fromkeys(r.strip() for r in args.runtimes.split(",") if r.strip()))
        if unknown := [name for name in names if name not in RUNTIME_CHOICES]:
            raise ValueError(f"unknown runtime {unknown[0]!r} ({', '.join(RUNTIME_CHOICES)})")
        runtimes = [Runtime(name) for name in names]
        if not runtimes and not args.edge:
            raise ValueError("nothing to evaluate: give --runtimes, --edge or both")
    except (EvaluationInputError, ValueError, OSError) as exc:
        return fail("evaluate", exc)
    images, missing = locate_images(args.images, labels.findings)
    if labels.unknown:
        print("mededge evaluate: ignored label(s) that are not ChestX-ray14 findings: "
              + ", ".join(sorted(labels.unknown)), file=sys.stderr)
    if missing:
        print(f"mededge evaluate: {len(missing)} labelled image(s) not found in {args.images}, e.g. {missing[0]}",
              file=sys.stderr)
    if not images:
        return fail("evaluate", f"none of the labelled images is in {args.images}")
    if args.confidence is None:
        args.confidence = 0.001  # the whole precision-recall curve: AP needs the low-scoring boxes too
    configurations = [(f"local {r.value}", r, None) for r in runtimes]
    if args.edge:  # with PyTorch's stages here: the split is compared with the same reference as every runtime
        configurations.append(("split", Runtime.TORCH, args.edge))
    results = []
    for name, runtime, address in configurations:
        print(f"mededge evaluate: {name} on {len(images)} image(s) …", file=sys.stderr, flush=True)
        try:
            session = analysis_session(args, "evaluate", runtime=runtime, with_edge=address is not None)
            plan = session.prepare(first_radiograph(map(str, images.values())))
            if address:
                name = "split " + ", ".join(f"{kind.value} {model.cut} {model.wire.value}"
                                            for kind, model in plan.items())
            predictions = predict(name, session.analyzer, plan, images)
        except (WeightsError, ValueError, EdgeError, OSError, RuntimeError) as exc:  # e.g. INT8 refused by the gate
            print(f"mededge evaluate: {name}: {exc}", file=sys.stderr)
            results.append({"configuration": name, "error": str(exc)})
            continue
        results.append(score(predictions, labels, boxes) | {"failed_images": predictions.failed})
        del session  # one configuration's models in memory at a time
    scored = with_changes([r for r in results if "error" not in r])  # each one's change from the first scored
    changed = iter(scored)
    results = [r if "error" in r else next(changed) for r in results]
    print(table(scored) if scored else "no configuration ran")
    for r in results:
        if "error" in r:
            print(f"\n{r['configuration']}: not evaluated: {r['error']}")
    if args.json:
        report = {"labels": str(args.labels), "boxes": args.boxes, "images": str(args.images),
                  "labelled": len(labels.findings), "found": len(images), "missing": missing,
                  "ignored_labels": sorted(labels.unknown), "confidence": args.confidence, "configurations": results}
        Path(args.json).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return EXIT_OK if len(scored) == len(results) else EXIT_SOME_FAILED

