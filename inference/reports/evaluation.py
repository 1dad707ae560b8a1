"""Validation on a site's own labelled radiographs: per-finding AUROC, detection AP at IoU 0.5, and the runs
that produce them (`python main.py evaluate`). No Qt.

Label file: ChestX-ray14 style, a CSV with `Image Index` (file name) and `Finding Labels` (`|`-separated
ChestX-ray14 names, or `No Finding`). Box file: a CSV with `image, x, y, w, h` in original pixels (the NIH
`BBox_List_2017.csv` header, `Image Index, Finding Label, Bbox [x, y, w, h]`, is read too); the detector has a
single class, so every box is an opacity whatever its label.
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.models.classifier import CHESTXRAY14
from inference.models.postprocess import box_iou

NO_FINDING = "No Finding"
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels


class EvaluationInputError(ValueError):
    """A label or box file that cannot be used, with the line at fault."""


def _canonical(name: str) -> str:
    return re.sub(r"[\s_]+", "_", name.strip()).lower()


_FINDINGS = {_canonical(name): name for name in CHESTXRAY14} | {_canonical(NO_FINDING): NO_FINDING}


def _columns(header: Sequence[str] | None, wanted: dict[str, tuple[str, ...]], path: Path) -> dict[str, int]:
    """Column index of each wanted field, matching header names loosely (case, spaces, brackets)."""
    names = [re.sub(r"[^a-z]", "", (h or "").lower().replace("bbox", "")) for h in header or ()]
    found = {}
    for key, spellings in wanted.items():
        matches = [i for i, name in enumerate(names) if name in spellings]
        if not matches:
            raise EvaluationInputError(f"{path}: no {key!r} column in the header {list(header or [])}")
        found[key] = matches[0]
    return found


@dataclass(frozen=True)
class LabelFile:
    findings: dict[str, frozenset[str]]     # image file name → its ChestX-ray14 findings (empty: No Finding)
    unknown: frozenset[str] = frozenset()   # names in the file that are not ChestX-ray14 findings (ignored)


def read_labels(path: str | os.PathLike[str]) -> LabelFile:
    path = Path(path)
    findings: dict[str, frozenset[str]] = {}
    unknown: set[str] = set()
    with open(path, newline="", encoding="utf-8-sig") as source:
        rows = csv.reader(source)
        columns = _columns(next(rows, None), {"Image Index": ("imageindex", "image"),
                                               "Finding Labels": ("findinglabels", "findings", "labels")}, path)
        for line, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row):
                continue
            try:
                image, text = row[columns["Image Index"]].strip(), row[columns["Finding Labels"]]
            except IndexError:
                raise EvaluationInputError(f"{path} line {line}: fewer columns than the header") from None
            if image in findings:
                raise EvaluationInputError(f"{path} line {line}: {image} is listed twice")
            names = set()
            for raw in filter(None, (part.strip() for part in text.split("|"))):
                name = _FINDINGS.get(_canonical(raw))
                if name is None:
                    unknown.add(raw)
                elif name != NO_FINDING:
                    names.add(name)
            findings[image] = frozenset(names)
    if not findings:
        raise EvaluationInputError(f"{path}: no labelled images")
    return LabelFile(findings, frozenset(unknown))


def read_boxes(path: str | os.PathLike[str]) -> dict[str, list[Box]]:
    """Image file name → its boxes as x1, y1, x2, y2 (the file has x, y, w, h)."""
    path = Path(path)
    boxes: dict[str, list[Box]] = {}
    with open(path, newline="", encoding="utf-8-sig") as source:
        rows = csv.reader(source)
        columns = _columns(next(rows, None), {"image": ("image", "imageindex"), "x": ("x",), "y": ("y",),
                                               "w": ("w", "width"), "h": ("h", "height")}, path)
        for line, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row):
                continue
            try:
                x, y, w, h = (float(row[columns[k]]) for k in "xywh")
                image = row[columns["image"]].strip()
            except (IndexError, ValueError):
                raise EvaluationInputError(f"{path} line {line}: expected image, x, y, w, h numbers") from None
            if w < 0 or h < 0:
                raise EvaluationInputError(f"{path} line {line}: negative width or height")
            boxes.setdefault(image, []).append((x, y, x + w, y + h))
    return boxes


# ------------------------------------------------------------------ metrics


def auroc(truth: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve; None when the images hold only one class (it is undefined then)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(truth, dtype=int)
    if labels.size == 0 or labels.min() == labels.max():
        return None
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


def per_finding_auroc(truth: Mapping[str, frozenset[str]], probabilities: Mapping[str, Mapping[str, float]],
                      findings: Iterable[str] = CHESTXRAY14) -> dict[str, float | None]:
    """AUROC of each finding over the images in `probabilities` (image → finding → probability)."""
    images = list(probabilities)
    return {finding: auroc([finding in truth[i] for i in images], [probabilities[i][finding] for i in images])
            for finding in findings if all(finding in probabilities[i] for i in images)}


def mean_auroc(per_finding: Mapping[str, float | None]) -> float | None:
    values = [v for v in per_finding.values() if v is not None]
    return float(np.mean(values)) if values else None


def average_precision(detections: Iterable[tuple[str, float, Box]], truth: Mapping[str, Sequence[Box]],
                      iou_threshold: float = 0.5) -> float | None:
    """AP of one class at an IoU threshold, all-point interpolated (PASCAL VOC 2010 and later).

    `detections`: (image, score, box) over all images; `truth`: image → boxes, for every evaluated image
    (an image with no boxes is a negative: each detection there is a false positive). Detections are taken
    by falling score; each is a true positive when its best-overlapping ground-truth box in the same image
    reaches the threshold and is still unmatched, else a false positive. AP is the area under the
    precision-recall curve after making precision non-increasing. None when there is no ground-truth box.
    """
    total = sum(len(boxes) for boxes in truth.values())
    if total == 0:
        return None
    ranked = sorted((d for d in detections if d[0] in truth), key=lambda d: -d[1])
    matched = {image: np.zeros(len(boxes), dtype=bool) for image, boxes in truth.items()}
    hits = np.zeros(len(ranked))
    for k, (image, _, box) in enumerate(ranked):
        boxes = np.asarray(truth[image], dtype=float).reshape(-1, 4)
        if not len(boxes):
            continue
        overlaps = box_iou(np.asarray(box, dtype=float), boxes)
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold and not matched[image][best]:
            matched[image][best] = True
            hits[k] = 1
    true_positives = np.cumsum(hits)
    recall = true_positives / total
    precision = true_positives / np.arange(1, len(ranked) + 1)
    # Envelope: the precision at recall r is the best precision at any recall >= r.
    recall = np.concatenate(([0.0], recall, [1.0]))
    precision = np.concatenate(([0.0], precision, [0.0]))
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


# ------------------------------------------------------------------ runs


@dataclass
class Predictions:
    """What one configuration produced on the labelled images."""

    name: str
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)  # image → finding → probability
    detections: dict[str, list[tuple[float, Box]]] = field(default_factory=dict)  # image → (score, box)
    modes: dict[str, int] = field(default_factory=dict)   # how the studies ran (local, distributed, fallback…)
    failed: dict[str, str] = field(default_factory=dict)  # image → reason
    seconds: float = 0.0
    runtime: dict[str, str] = field(default_factory=dict)


def locate_images(folder: str | os.PathLike[str], names: Iterable[str]) -> tuple[dict[str, Path], list[str]]:
    """Where each labelled image is: DIR/name, else anywhere below DIR (NIH ships images_001/images/…).

    Returns (name → path, names not found)."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    below: dict[str, Path] | None = None
    missing = []
    for name in names:
        if (folder / name).is_file():
            found[name] = folder / name
            continue
        if below is None:  # walked once, only when some image is not at the top
            below = {}
            for root, _, files in os.walk(folder):
                for file in sorted(files):
                    below.setdefault(file, Path(root) / file)
        if name in below:
            found[name] = below[name]
        else:
            missing.append(name)
    return found, missing


def predict(name: str, analyzer, plan, images: Mapping[str, Path],
            progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Run `analyzer` (with `plan`) over the images, pipelined like `infer`; failures are recorded."""
    from inference.analysis.analyzer import StudyError
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    by_path = {str(path): image for image, path in images.items()}
    out = Predictions(name, runtime=dict(analyzer.runtimes))

    def studies():
        for path in by_path:
            try:
                yield load_radiograph(path)
            except RadiographError as exc:
                yield StudyError(path, exc)

    started = time.perf_counter()
    for done, result in enumerate(analyzer.analyze_many(studies(), plan, with_heat_maps=False), start=1):
        image = by_path[result.path]
        if isinstance(result, StudyError):
            error = result.error
            out.failed[image] = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
        else:
            out.probabilities[image] = dict(result.probabilities)
            out.detections[image] = [(d.score, d.box_xyxy) for d in result.detections]
            out.modes[result.mode.value] = out.modes.get(result.mode.value, 0) + 1
        if progress is not None:
            progress(done, len(by_path))
    out.seconds = time.perf_counter() - started
    return out


def score(predictions: Predictions, labels: LabelFile, boxes: Mapping[str, Sequence[Box]] | None,
          iou_threshold: float = 0.5) -> dict:
    """The metrics of one configuration on the images it analysed.

    Detection AP counts the images with boxes in the box file and the images labelled No Finding (no boxes);
    an image with findings but no box in the file is left out, as its boxes are unknown.
    """
    analysed = {image: predictions.probabilities[image] for image in predictions.probabilities}
    per_finding = per_finding_auroc(labels.findings, analysed)
    result = {"configuration": predictions.name, "images": len(analysed), "failed": len(predictions.failed),
              "modes": dict(predictions.modes), "runtime": dict(predictions.runtime),
              "seconds_per_image": round(predictions.seconds / max(1, len(analysed) + len(predictions.failed)), 4),
              "auroc": {k: None if v is None else round(v, 4) for k, v in per_finding.items()},
              "mean_auroc": None, "map50": None, "box_images": 0}
    if (mean := mean_auroc(per_finding)) is not None:
        result["mean_auroc"] = round(mean, 4)
    if boxes is not None:
        truth = {image: list(boxes.get(image, ())) for image in analysed
                 if image in boxes or not labels.findings[image]}
        detections = [(image, s, box) for image in truth for s, box in predictions.detections[image]]
        ap = average_precision(detections, truth, iou_threshold)
        result["map50"] = None if ap is None else round(ap, 4)  # one class: mAP is its AP
        result["box_images"] = len(truth)
    return result


def with_changes(results: Sequence[dict]) -> list[dict]:
    """Each configuration after the first with its mean AUROC and mAP@0.5 change from the first (the reference,
    e.g. PyTorch FP32 before a pruned or INT8 one), as the seeds reported their accelerated models; None where
    either side has no value."""
    if not results:
        return []
    first = results[0]
    changed = [dict(first)]
    for r in results[1:]:
        change = {f"{key}_change": None if r[key] is None or first[key] is None else round(r[key] - first[key], 4)
                  for key in ("mean_auroc", "map50")}
        changed.append(r | change | {"change_from": first["configuration"]})
    return changed


def table(results: Sequence[dict]) -> str:
    """Configuration × metric (with the change from the first configuration), then the AUROC of each finding per
    configuration (Markdown)."""
    show = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    signed = lambda v: "–" if v is None else f"{v:+.3f}"  # noqa: E731
    lines = ["| configuration | images | failed | mean AUROC | Δ mean AUROC | mAP@0.5 | Δ mAP@0.5 | s/image | modes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        modes = ", ".join(f"{mode} {count}" for mode, count in r["modes"].items())
        lines.append(f"| {r['configuration']} | {r['images']} | {r['failed']} | {show(r['mean_auroc'])} | "
                     f"{signed(r.get('mean_auroc_change'))} | {show(r['map50'])} | {signed(r.get('map50_change'))} | "
                     f"{r['seconds_per_image']:.2f} | {modes} |")
    findings = [f for f in CHESTXRAY14 if any(f in r["auroc"] for r in results)]
    if findings:
        lines += ["", "| finding | " + " | ".join(r["configuration"] for r in results) + " |",
                  "| --- |" + " ---: |" * len(results)]
        lines += [f"| {f} | " + " | ".join(show(r["auroc"].get(f)) for r in results) + " |" for f in findings]
    return "\n".join(lines)
