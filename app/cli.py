"""Command line: `mededge` / `python main.py` — the viewer, or a subcommand.

Subcommands import only what they need, so `inspect` starts without Qt or torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.models.settings import LOCAL_RUNTIMES, WIRE_FORMATS
from viewer.media import files_to_open

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_SOME_FAILED = 2
EXIT_EDGE_FAILED = 3
COMMANDS = ("inspect", "infer", "evaluate", "edge", "models", "bench")  # anything else opens the viewer with FILES


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


def _model_choice(args: argparse.Namespace, runtime: str | None = None):
    from inference.analysis.analyzer import ModelChoice
    from inference.models.classifier import ClassifierConfig
    from inference.models.detector import DetectorConfig

    given = {"architecture": args.detector_arch, "input_size": args.detector_size,
             "confidence": args.confidence, "iou": args.iou}
    detector = DetectorConfig(**{k: v for k, v in given.items() if v is not None})
    classifier = ClassifierConfig(ten_crop=True) if args.ten_crop else ClassifierConfig()
    return ModelChoice(detector_weights=args.detector_weights, classifier_weights=args.classifier_weights,
                       detector=detector, classifier=classifier, device=args.device,
                       runtime=runtime or args.runtime)


class _JsonLines:
    """`infer` without --out: a JSON line per study on stdout or into --json FILE (Batch's interface)."""

    stopping = interrupted = False
    failed_before = 0

    def __init__(self, target: str) -> None:
        self.target, self.failed, self._out = target, 0, None

    def __enter__(self) -> _JsonLines:
        self._out = sys.stdout if self.target == "-" else open(self.target, "w", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        if self._out is not sys.stdout:
            self._out.close()

    def record(self, record: dict, finished: bool = True, structured_report=None) -> None:
        if structured_report is not None:
            record = dict(record) | structured_report()
        self.failed += "error" in record
        self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._out.flush()


def _session(args: argparse.Namespace, command: str, runtime: str | None = None, with_edge: bool = True):
    """The analysis session for `infer` or `evaluate` (inference/analysis/session.py), on --edge when given and
    `with_edge`; ValueError and friends on bad options. Neither command fetches heat maps."""
    from inference.analysis.analyzer import Analyzer
    from inference.analysis.session import AnalysisSession
    from inference.models.wire import WireFormat
    from inference.planning.plan import parse_split

    edge = _edge(args) if args.edge and with_edge else None
    analyzer = Analyzer(_model_choice(args, runtime=runtime), edge=edge)
    split = args.split or ("auto" if edge else "local")
    plan = parse_split(split, analyzer.stage_counts, WireFormat(args.wire))
    if plan.uses_edge(analyzer.stage_counts) and edge is None:
        raise ValueError(f"--split {args.split} sends stages to an edge server: give its address with --edge")
    return AnalysisSession(analyzer, plan, auto=split == "auto", with_heat_maps=False,
                           progress=lambda message: print(f"mededge {command}: {message}", file=sys.stderr))


def _infer_target(args: argparse.Namespace):
    """(files to analyse, where each study's line goes, SR folder or None): a resumable worklist with --out
    (app/worklist.py), JSON lines otherwise."""
    from app.worklist import SR_FOLDER, Batch

    contents = files_to_open(args.paths, args.recursive)
    for note in contents.notes:  # e.g. a damaged DICOMDIR: its media's files are analysed instead
        print(f"mededge infer: {note}", file=sys.stderr)
    if args.out:
        batch = Batch(Path(args.out), contents.files, retry_failed=args.retry_failed)
        return batch.todo, batch, args.sr or str(Path(args.out) / SR_FOLDER)
    return contents.files, _JsonLines(args.json), args.sr


def _infer(args: argparse.Namespace) -> int:
    from inference.analysis.analyzer import StudyError
    from inference.edge.client import EdgeError
    from inference.models.weights import WeightsError
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    try:
        session = _session(args, "infer")
    except (WeightsError, ValueError, EdgeError) as exc:
        return _fail("infer", exc)
    files, sink, sr_folder = _infer_target(args)
    if session.planner is not None and files:  # several studies: planned for throughput, the series pipelined
        session.prepare(_first_radiograph(files), series=len(files) > 1 or args.recursive)
    analyzer = session.analyzer
    dicom: set[str] = set()  # a worklist writes an SR for DICOM studies only; --sr alone says why not for others

    def studies():  # loaded lazily: loading study i+1 overlaps the edge's work on study i
        for path in files:
            if sink.stopping:
                return  # Ctrl-C: the studies already begun finish and are written; no new one starts
            try:
                radiograph = load_radiograph(path)
            except RadiographError as exc:
                yield StudyError(path, exc)
                continue
            if radiograph.file_format == "DICOM":
                dicom.add(radiograph.path)
            yield radiograph

    def report(result):
        if sr_folder is None or (args.out and result.path not in dicom):
            return None
        return lambda: _write_sr(result, sr_folder, analyzer)

    with sink:
        for result in session.analyze_series(studies(), allow_fallback=not args.no_fallback, planned=True):
            if isinstance(result, StudyError):
                error = result.error
                if isinstance(error, EdgeError):  # only with --no-fallback: the series stops here
                    sink.record({"path": result.path, "error": f"edge: {error}"}, finished=False)
                    return _fail("infer", f"edge failed and --no-fallback was given: {error}", EXIT_EDGE_FAILED)
                unreadable = isinstance(error, RadiographError)  # stays so until the file changes; others retried
                sink.record({"path": result.path, "error": error.reason if unreadable else
                             f"analysis failed ({type(error).__name__}): {error}"}, finished=unreadable)
                continue
            sink.record(result.to_json(), structured_report=report(result))
    if sink.interrupted:
        return 130  # Ctrl-C: every finished study is written; the same command resumes
    return EXIT_SOME_FAILED if sink.failed or sink.failed_before else EXIT_OK


def _write_sr(findings, folder: str, analyzer) -> dict:
    """--sr DIR: the study's DICOM SR; {"sr": path}, or {"sr_error": reason} (e.g. a PNG input)."""
    from inference.reports.structured_report import StructuredReportError, algorithm_names, read_source_header, write_sr

    try:  # the header is read again: analyze_many keeps only the Findings of each study
        path = write_sr(findings, read_source_header(findings.path), folder, model_names=algorithm_names(analyzer))
    except (StructuredReportError, OSError) as exc:
        return {"sr_error": str(exc)}
    return {"sr": str(path)}


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
    )

    try:
        labels = read_labels(args.labels)
        boxes = read_boxes(args.boxes) if args.boxes else None
        if not Path(args.images).is_dir():
            raise ValueError(f"{args.images} is not a folder")
        runtimes = list(dict.fromkeys(r.strip() for r in args.runtimes.split(",") if r.strip()))
        if unknown := [r for r in runtimes if r not in LOCAL_RUNTIMES]:
            raise ValueError(f"unknown runtime {unknown[0]!r} ({', '.join(LOCAL_RUNTIMES)})")
        if not runtimes and not args.edge:
            raise ValueError("nothing to evaluate: give --runtimes, --edge or both")
    except (EvaluationInputError, ValueError, OSError) as exc:
        return _fail("evaluate", exc)
    images, missing = locate_images(args.images, labels.findings)
    if labels.unknown:
        print("mededge evaluate: ignored label(s) that are not ChestX-ray14 findings: "
              + ", ".join(sorted(labels.unknown)), file=sys.stderr)
    if missing:
        print(f"mededge evaluate: {len(missing)} labelled image(s) not found in {args.images}, e.g. {missing[0]}",
              file=sys.stderr)
    if not images:
        return _fail("evaluate", f"none of the labelled images is in {args.images}")
    if args.confidence is None:
        args.confidence = 0.001  # the whole precision-recall curve: AP needs the low-scoring boxes too
    configurations = [(f"local {r}", r, None) for r in runtimes]
    if args.edge:  # its local stages run with PyTorch (a runtime choice applies to whole-model runs only)
        configurations.append(("split", "torch", args.edge))
    results = []
    for name, runtime, address in configurations:
        print(f"mededge evaluate: {name} on {len(images)} image(s) …", file=sys.stderr, flush=True)
        try:
            session = _session(args, "evaluate", runtime=runtime, with_edge=address is not None)
            plan = session.prepare(_first_radiograph(map(str, images.values())))
            if address:
                name = "split " + ", ".join(f"{m} {getattr(plan, m).cut} {getattr(plan, m).wire.value}"
                                            for m in ("detector", "classifier"))
            predictions = predict(name, session.analyzer, plan, images)
        except (WeightsError, ValueError, EdgeError, OSError, RuntimeError) as exc:  # e.g. INT8 refused by the gate
            print(f"mededge evaluate: {name}: {exc}", file=sys.stderr)
            results.append({"configuration": name, "error": str(exc)})
            continue
        results.append(score(predictions, labels, boxes) | {"failed_images": predictions.failed})
        del session  # one configuration's models in memory at a time
    scored = [r for r in results if "error" not in r]
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


def _first_radiograph(paths, tries: int = 10):
    """The first of `paths` that loads (a real study for the planner to measure on), or None."""
    from itertools import islice

    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    for path in islice(paths, tries):
        try:
            return load_radiograph(path)
        except (RadiographError, OSError):
            continue
    return None


def _edge(args: argparse.Namespace):
    """A client of --edge: one server, or a fail-over group for a comma-separated list."""
    from pathlib import Path

    from inference.edge.client import EdgeSettings, connect

    optional = lambda value: Path(value) if value else None  # noqa: E731
    return connect([EdgeSettings(address.strip(), tls=args.tls or bool(args.ca), root_certificate=optional(args.ca),
                                 client_certificate=optional(args.client_cert), client_key=optional(args.client_key),
                                 timeout_s=args.timeout) for address in args.edge.split(",") if address.strip()])


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
    from inference.runtimes.local import STATIC, OnnxModel, model_input, verdict
    from viewer.display import render_8bit
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    greys = []
    if args.images:
        if not Path(args.images).is_dir():
            return _fail("models quantize", f"{args.images} is not a folder")
        for path in files_to_open([args.images]).files:
            try:
                greys.append(render_8bit(load_radiograph(path)))
            except RadiographError as exc:  # e.g. a report or a damaged file among the images: skip it
                print(f"mededge models quantize: skipped {path}: {exc.reason}", file=sys.stderr)
    if args.runtime == STATIC and not greys:
        return _fail("models quantize", "static INT8 is calibrated on radiographs: give a folder of them with "
                     "--images DIR" + (" (none of its files could be read)" if args.images else ""))
    try:
        analyzer = Analyzer(_model_choice(args, runtime="torch"))  # the models only; no runtime choice
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        models = {"detector": (analyzer.detector, analyzer.detector_source),
                  "classifier": (analyzer.classifier, analyzer.classifier_weights.source)}
        if unknown := [n for n in names if n not in models]:
            raise ValueError(f"unknown model {unknown[0]!r} (detector, classifier)")
        folder = data_dir() / "local-onnx"
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            model, weights = models[name]
            inputs = [model_input(model, grey) for grey in greys]
            print(f"mededge models quantize: {name} {args.runtime} on {len(inputs)} image(s) …", file=sys.stderr,
                  flush=True)
            session = OnnxModel(model, weights, folder, args.runtime, calibration=inputs or None)
            result = verdict(model, session, inputs or None)  # the gate on these images (sample input if none)
            print(json.dumps({"model": name, "runtime": args.runtime, "file": str(session.path),
                              "calibration_images": len(inputs) if args.runtime == STATIC else 0} | result),
                  flush=True)
    except (WeightsError, ValueError, OSError) as exc:
        return _fail("models quantize", exc)
    return EXIT_OK


def _add_model_options(parser: argparse.ArgumentParser, runtime: bool = True) -> None:
    parser.add_argument("--detector-weights", metavar="F", help="detector state dict (default: demo weights)")
    parser.add_argument("--classifier-weights", metavar="F", help="classifier weights (default: demo weights)")
    parser.add_argument("--detector-arch", choices=("yolov4-p5", "yolov4-p6", "yolov4-p7"),
                        help="detector network (default from inference/resources/models/models.yaml: yolov4-p5)")
    parser.add_argument("--detector-size", type=int, metavar="PX", help="letterbox size (default 512)")
    parser.add_argument("--confidence", type=float, help="detection threshold (default 0.4)")
    parser.add_argument("--iou", type=float, help="NMS IoU threshold (default 0.5)")
    parser.add_argument("--ten-crop", action="store_true", help="classifier: average the ten 224 px crops")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto (CUDA when present)")
    if runtime:
        parser.add_argument("--runtime", default="auto", choices=LOCAL_RUNTIMES,
                            help="local runtime for whole-model runs (default auto: the fastest here that passes "
                                 "the fidelity gate, measured once; int8-static only after `models quantize`; "
                                 "torch-fp16 is for --device cuda, where auto weighs it against FP32)")


def _add_part_options(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.add_argument("--models", default="detector,classifier", help="which models (default both)")
    parser.add_argument("--cuts", default="default", help="'default' (full offload and the auto cut), 'all', "
                        "or a list like 1,6 (each applied to every model it is valid for)")
    parser.add_argument("--wire", default="fp32,fp16", help="wire formats to export (default fp32,fp16)")


def _add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="gRPC over TLS")
    parser.add_argument("--ca", metavar="PEM", help="CA certificate that signed the edge server's certificate")
    parser.add_argument("--client-cert", metavar="PEM", help="mutual TLS: this workstation's certificate")
    parser.add_argument("--client-key", metavar="PEM", help="mutual TLS: its private key")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="edge request timeout with nothing queued ahead (default 10 s; a request queued "
                             "behind others gets their expected time on top)")


def _fail(command: str, message: object, code: int = EXIT_USAGE) -> int:
    print(f"mededge {command}: {message}", file=sys.stderr)
    return code


def _part_requests(args: argparse.Namespace, analyzer) -> list:
    from inference.edge.repository import PartRequest
    from inference.models.wire import WireFormat
    from inference.planning.plan import AUTO_CUTS

    models = {"detector": (analyzer.detector, analyzer.detector_source),
              "classifier": (analyzer.classifier, analyzer.classifier_weights.source)}
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    # int8+deflate travels to the int8 part: each encoding is exported once
    wires = list(dict.fromkeys(WireFormat(w.strip()).encoding for w in args.wire.split(",") if w.strip()))
    requests = []
    for name in names:
        if name not in models:
            raise ValueError(f"unknown model {name!r} (detector, classifier)")
        model, weights = models[name]
        if args.cuts == "all":
            cuts = list(range(model.stage_count))
        elif args.cuts == "default":
            cuts = [0, AUTO_CUTS[name]]
        else:
            cuts = [int(c) for c in args.cuts.split(",") if c.strip()]
            cuts = [c for c in cuts if 0 <= c < model.stage_count]
            if not cuts:
                raise ValueError(f"none of the cuts {args.cuts} is valid for the {name} (0..{model.stage_count - 1})")
        requests += [PartRequest(model, weights, cut, wire) for cut in cuts for wire in wires]
    return requests


def _edge_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inference.analysis.analyzer import Analyzer
    from inference.edge.repository import write_repository
    from inference.models.weights import WeightsError

    try:
        analyzer = Analyzer(_model_choice(args, runtime="torch"))  # exports only
        requests = _part_requests(args, analyzer)
        specs = write_repository(Path(args.out), requests, gpu=not args.cpu,
                                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (WeightsError, ValueError, OSError) as exc:
        return _fail("edge export", exc)
    print(json.dumps({"repository": str(Path(args.out).resolve()), "parts": [s.name for s in specs]}))
    return EXIT_OK


def _edge_serve(args: argparse.Namespace) -> int:
    import hashlib
    import signal
    import threading
    from pathlib import Path

    from inference.edge.repository import write_repository
    from inference.edge.server import EdgeServer, EdgeServerError, TlsFiles
    from inference.models.weights import WeightsError, data_dir

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            return _fail("edge serve", "TLS needs both --tls-cert and --tls-key")
        tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key), Path(args.tls_client_ca) if args.tls_client_ca else None)
    elif args.tls_client_ca:
        return _fail("edge serve", "mutual TLS (--tls-client-ca) needs TLS: give --tls-cert and --tls-key too")
    base = data_dir() / "edge"
    server = EdgeServer(Path(args.repository or "."), base / f"run-{args.grpc_port}", host=args.host,
                        grpc_port=args.grpc_port, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                        tls=tls, insecure=args.insecure)
    try:
        warnings = server.check_exposure()  # before a long export: a refused address fails at once
        if args.repository:
            if not any(server.repository.glob("*/config.pbtxt")):
                return _fail("edge serve", f"{server.repository} holds no Triton models (*/config.pbtxt)")
        else:
            from inference.analysis.analyzer import Analyzer

            analyzer = Analyzer(_model_choice(args, runtime="torch"))  # exports only
            requests = _part_requests(args, analyzer)
            key = hashlib.sha256(repr(sorted((r.weights, r.cut, r.wire.value, repr(r.model.config))
                                             for r in requests)).encode()).hexdigest()[:12]
            server.repository = base / f"repository-{key}"
            write_repository(server.repository, requests, gpu=False,
                             progress=lambda m: print(m, file=sys.stderr, flush=True))
        for warning in warnings:  # on every start, into the service's journal
            print(f"mededge edge serve: warning: {warning}", file=sys.stderr, flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
    except (EdgeServerError, WeightsError, ValueError, OSError) as exc:
        return _fail("edge serve", exc)
    scheme = "plaintext" if tls is None else ("mutual TLS" if tls.client_ca else "TLS")
    print(f"MedEdge edge server: gRPC for the workstations on {args.host}:{args.grpc_port} ({scheme}); "
          f"metrics on {args.metrics_host}:{args.metrics_port}; Triton itself on {server.triton_grpc_address} "
          "(this user's only)", flush=True)
    print("serving: " + ", ".join(sorted(p.parent.name for p in server.serving_path.glob("*/config.pbtxt"))),
          flush=True)
    print(f"operator: python main.py edge control --grpc-port {args.grpc_port} list|unload PART|load PART", flush=True)
    print("stop with Ctrl-C", flush=True)
    try:
        while not stop.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                return _fail("edge serve", f"tritonserver stopped: {server.log_tail()}")
    finally:
        server.stop()
    print("edge server stopped", flush=True)
    return EXIT_OK


def _edge_control(args: argparse.Namespace) -> int:
    """The operator's calls on a running `edge serve` of this machine, with the credential it wrote."""
    from tritonclient.utils import InferenceServerException

    from inference.edge.server import EdgeServerError, OperatorClient
    from inference.models.weights import data_dir

    if args.action in ("load", "unload") and not args.part:
        return _fail("edge control", f"{args.action} needs the part's name (see: edge control list)")
    try:
        operator = OperatorClient.from_control_file(data_dir() / "edge" / f"run-{args.grpc_port}" / "control.json")
        if args.action == "status":  # e.g. for monitoring on the box: exit 0 only when ready
            ready, version, models = operator.status()
            loaded = [name for name, state in models if state == "READY"]
            print(f"{'ready' if ready else 'NOT READY'}: Triton {version}, {len(loaded)} of {len(models)} parts loaded")
            return EXIT_OK if ready else EXIT_USAGE
        if args.action == "list":
            for name, state in operator.models():
                print(f"{name}\t{state}")
        else:
            getattr(operator, args.action)(args.part)
            print(f"{args.action}ed {args.part}")
    except (EdgeServerError, OSError) as exc:
        return _fail("edge control", exc)
    except InferenceServerException as exc:
        return _fail("edge control", f"the edge server refused: {exc.message()}")
    return EXIT_OK


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inference.edge.client import EdgeError
    from inference.edge.server import EdgeServerError
    from inference.models.weights import WeightsError
    from inference.reports.benchmark import markdown, measure, run_benchmark, save
    from viewer.errors import RadiographError
    from viewer.loader import load_radiograph

    progress = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        radiograph = load_radiograph(args.image)
        if args.edge:  # a server that is already running, e.g. across an emulated link (bench/bench_links.py)
            from inference.analysis.analyzer import Analyzer

            analyzer = Analyzer(_model_choice(args))
            report = measure(analyzer, radiograph, _edge(args), repeats=args.repeats or 10,
                             link=args.link or args.edge, progress=progress)
        else:
            report = run_benchmark(radiograph, quick=args.quick, progress=progress, repeats=args.repeats)
    except (RadiographError, EdgeError, EdgeServerError, WeightsError, ValueError, OSError) as exc:
        return _fail("bench", exc)
    print(markdown(report))
    if args.json:
        save(report, Path(args.json))
    return EXIT_OK


def _gui(args: argparse.Namespace) -> int:
    if args.screenshot:
        import os

        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # a screenshot needs no screen
    from app.main_window import run_viewer

    return run_viewer(args.files, screenshot=args.screenshot)


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
    written = infer.add_mutually_exclusive_group()
    written.add_argument("--json", default="-", metavar="OUT", help="write JSON lines here (default - = stdout)")
    infer.add_argument("--recursive", action="store_true", help="folders: walk their sub-folders too (sorted; "
                       "hidden files and folders are skipped)")
    written.add_argument("--out", metavar="DIR", help="a resumable worklist instead of --json: DIR/results.jsonl "
                       "(a line per study, appended as each ends), DIR/summary.csv (rewritten at the end), a DICOM "
                       "SR per DICOM study in DIR/sr/ (or --sr DIR), and a progress bar. Run it again to resume: "
                       "studies already in results.jsonl are skipped unless their file changed (path, size, mtime). "
                       "A file that could not be read counts as done (see --retry-failed); a study whose analysis "
                       "failed is retried. Ctrl-C stops after the study in progress (exit 130)")
    infer.add_argument("--retry-failed", action="store_true", help="with --out: also retry files that could not "
                       "be read in an earlier run (e.g. after installing a decoder)")
    _add_model_options(infer)
    infer.add_argument("--edge", metavar="HOST:PORT", help="Triton gRPC address of the edge server (several, "
                       "comma-separated: requests are spread over them and fail over)")
    infer.add_argument("--split", metavar="MODE", help="auto (default with --edge: detector cut 6, classifier "
                       "cut 7), local, edge (full offload), K, or detector:K,classifier:K")
    infer.add_argument("--wire", choices=WIRE_FORMATS, default="fp32",
                       help="wire format for fixed splits (auto chooses its own)")
    infer.add_argument("--no-fallback", action="store_true",
                       help="fail (exit 3) instead of finishing a study locally when the edge fails")
    infer.add_argument("--sr", metavar="DIR", help="also write a DICOM Comprehensive SR (TID 1500) per DICOM study "
                       "into DIR, named by its SOP Instance UID")
    _add_tls_client_options(infer)
    infer.set_defaults(run=_infer)

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
                               f"INT8); any of {', '.join(LOCAL_RUNTIMES)}")
    evaluate.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    _add_model_options(evaluate, runtime=False)
    evaluate.add_argument("--edge", metavar="HOST:PORT", help="also evaluate a split run on this edge server")
    evaluate.add_argument("--split", metavar="MODE", help="the split run's cuts: auto (default), edge, K, or "
                          "detector:K,classifier:K")
    evaluate.add_argument("--wire", choices=WIRE_FORMATS, default="fp32",
                          help="wire format of a fixed split (auto chooses its own)")
    _add_tls_client_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    edge = sub.add_parser("edge", help="the edge server: export a Triton repository, or serve one")
    edge_sub = edge.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    export = edge_sub.add_parser("export", help="write a Triton model repository of edge parts (stock container)",
                                 description="One Triton model per edge part: <part>/1/model.onnx + config.pbtxt "
                                             "(onnxruntime_onnx), and a README with the docker command.")
    export.add_argument("--out", required=True, metavar="DIR")
    _add_part_options(export)
    export.add_argument("--cpu", action="store_true", help="instance groups KIND_CPU (default KIND_GPU)")
    export.set_defaults(run=_edge_export)

    serve = edge_sub.add_parser("serve", help="run a real Triton server (nvidia-pytriton's tritonserver, no Docker)",
                                description="Serves the edge parts through onnxruntime in Triton's Python "
                                            "backend until Ctrl-C or SIGTERM.")
    serve.add_argument("--host", default="127.0.0.1", help="where the workstations reach gRPC (default 127.0.0.1: "
                       "this machine only; 0.0.0.0 every interface, which needs TLS or --insecure)")
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-host", default="127.0.0.1", help="Prometheus metrics listen here (default "
                       "127.0.0.1; elsewhere it is plaintext: --insecure)")
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--insecure", action="store_true", help="allow plaintext beyond loopback (a warning on "
                       "every start): gRPC without TLS on another address, or metrics off loopback")
    serve.add_argument("--repository", metavar="DIR", help="serve this exported repository (default: export "
                       "the parts below into the data folder first)")
    _add_part_options(serve)
    serve.add_argument("--tls-cert", metavar="PEM", help="server certificate: gRPC over TLS")
    serve.add_argument("--tls-key", metavar="PEM", help="server private key")
    serve.add_argument("--tls-client-ca", metavar="PEM", help="mutual TLS: accept clients signed by this CA")
    serve.set_defaults(run=_edge_serve)

    control = edge_sub.add_parser("control", help="the operator's calls on a running `edge serve` here: status, "
                                  "list, unload or load a part", description="Uses the credential `edge serve` writes "
                                  "into its data folder (readable by its user only), over loopback.")
    control.add_argument("action", choices=("status", "list", "unload", "load"))
    control.add_argument("part", nargs="?", help="the part's name, e.g. classifier_cut07_fp16")
    control.add_argument("--grpc-port", type=int, default=8001, help="the server's --grpc-port (default 8001)")
    control.set_defaults(run=_edge_control)

    bench = sub.add_parser("bench", help="measure local only, full offload, cuts × wire formats and auto "
                           "against a real Triton on this machine")
    bench.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    bench.add_argument("--quick", action="store_true", help="256 px detector, a few cuts, int8/fp32, 3 repeats")
    bench.add_argument("--repeats", type=int, metavar="N", help="analyses per option after a warm-up "
                       "(default 10; 3 with --quick)")
    bench.add_argument("--edge", metavar="HOST:PORT", help="measure against this running server, over every part "
                       "it serves, instead of starting one on loopback (model options below apply)")
    bench.add_argument("--link", metavar="LABEL", help="with --edge: what the link is, for the report")
    _add_model_options(bench)
    _add_tls_client_options(bench)
    bench.add_argument("--image", required=True, metavar="FILE",
                       help="the chest radiograph to analyse (its tensors decide what int8 and deflate save, so use "
                            "a real one, e.g. ../shared/data/cxr/raster/txv_nih_00027426_000_512px.png here)")
    bench.set_defaults(run=_bench)

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

    quantize = models.add_parser("quantize", help="build an INT8 local runtime (static: calibrated on your images)",
                                 description="Builds onnxruntime INT8 models of the whole detector and classifier "
                                             "from their FP32 ONNX, cached in the data folder, and checks each "
                                             "against PyTorch with the fidelity gate (probabilities within 0.02, "
                                             "boxes at IoU >= 0.9) on the images. `--runtime auto` uses a model "
                                             "only when it passes. One JSON line per model.")
    quantize.add_argument("--images", metavar="DIR", help="calibration radiographs (DICOM, PNG, …); files that are "
                          "not images are skipped. Required for static INT8")
    quantize.add_argument("--runtime", default="onnxruntime-int8-static", choices=LOCAL_RUNTIMES[-2:],
                          help="which INT8 runtime to build (default onnxruntime-int8-static)")
    quantize.add_argument("--models", default="detector,classifier", help="which models (default both)")
    _add_model_options(quantize, runtime=False)
    quantize.set_defaults(run=_quantize)
    return parser


def _gui_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mededge", description="Open the viewer. Commands: inspect, infer, evaluate, "
                                     "edge, models, bench (`mededge COMMAND --help`).")
    parser.add_argument("files", nargs="*", metavar="FILE", help="DICOM, PNG, JPEG or TIFF files or folders to open")
    parser.add_argument("--screenshot", metavar="OUT.png", help="open FILES, analyse the first with the current "
                        "settings, render the window at 1440×900 into OUT.png and exit")
    parser.set_defaults(run=_gui)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help")):
        args = parser.parse_args(argv)
    else:
        args = _gui_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `mededge inspect … | head`
        return EXIT_OK
