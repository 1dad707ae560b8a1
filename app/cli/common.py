"""What the subcommands share: exit codes, the model and TLS options, the analysis session built from them."""

from __future__ import annotations

import argparse
import sys

from inference.config import ModelKind, Runtime, SplitMode, SplitPolicy, WireFormat

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_SOME_FAILED = 2
EXIT_EDGE_FAILED = 3
WIRE_CHOICES = tuple(wire.value for wire in WireFormat)
RUNTIME_CHOICES = tuple(runtime.value for runtime in Runtime)


def fail(command: str, message: object, code: int = EXIT_USAGE) -> int:
    print(f"mededge {command}: {message}", file=sys.stderr)
    return code


def model_choice(args: argparse.Namespace, runtime: Runtime | None = None):
    """The models, weights, device and local runtime the options name (`runtime` overrides --runtime)."""
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


def chosen_models(text: str) -> list[ModelKind]:
    """--models: a comma-separated list of detector, classifier; ValueError naming one that is neither."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if unknown := [name for name in names if name not in {kind.value for kind in ModelKind}]:
        raise ValueError(f"unknown model {unknown[0]!r} (detector, classifier)")
    return [ModelKind(name) for name in dict.fromkeys(names)]


def add_model_options(parser: argparse.ArgumentParser, runtime: bool = True) -> None:
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
        parser.add_argument("--runtime", default="auto", choices=RUNTIME_CHOICES,
                            help="local runtime for whole-model runs (an FP32 one also runs a split's stages here; "
                                 "default auto: the fastest here that passes the fidelity gate, measured once; "
                                 "onnxruntime-int8-static and openvino-int8 only "
                                 "after `models quantize`, pruned after `models prune`; torch-fp16 is for --device "
                                 "cuda, where auto weighs it against FP32)")


EDGE_HELP = ("Triton gRPC address of the edge server (several, comma-separated: requests are spread over them and "
             "fail over)")
SPLIT_HELP = ("auto (default with --edge: the planner measures the link and the edge and chooses; detector cut 6, "
              "classifier cut 7 while it cannot), local, edge (full offload), K (both models cut after stage K: a "
              "model whose cut K the edge does not serve runs here, as local-fallback), or detector:K,classifier:K")


def add_edge_options(parser: argparse.ArgumentParser, edge_help: str = EDGE_HELP,
                     split_help: str = SPLIT_HELP) -> None:
    """--edge, --split, --wire and the TLS client options: the edge server an analysis may split with."""
    parser.add_argument("--edge", metavar="HOST:PORT", help=edge_help)
    parser.add_argument("--split", metavar="MODE", help=split_help)
    parser.add_argument("--wire", choices=WIRE_CHOICES, default="fp32",
                        help="wire format of a fixed split (auto chooses its own)")
    add_tls_client_options(parser)


def add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="gRPC over TLS")
    parser.add_argument("--ca", metavar="PEM", help="CA certificate that signed the edge server's certificate")
    parser.add_argument("--client-cert", metavar="PEM", help="mutual TLS: this workstation's certificate")
    parser.add_argument("--client-key", metavar="PEM", help="mutual TLS: its private key")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="edge request timeout with nothing queued ahead (default 10 s; a request queued "
                             "behind others gets their expected time on top)")


def edge_client(args: argparse.Namespace):
    """A client of --edge: one server, or a fail-over group for a comma-separated list."""
    from inference.edge.client import EdgeSettings, connect
    from security.pem import check_pem_files

    if args.tls or args.ca:
        check_pem_files(args.ca, args.client_cert, args.client_key, "edge")
    return connect(EdgeSettings.each(args.edge.split(","), args.tls or bool(args.ca), args.ca, args.client_cert,
                                     args.client_key, args.timeout))


def analysis_session(args: argparse.Namespace, command: str, runtime: Runtime | None = None, with_edge: bool = True,
                     choose_in_background: bool = False):
    """The analysis session for `infer`, `listen` or `evaluate` (inference/analysis/session.py), on --edge when given
    and `with_edge`; ValueError and friends on bad options. None fetches heat maps. `choose_in_background`: see
    Analyzer."""
    from inference.analysis.analyzer import Analyzer
    from inference.analysis.session import AnalysisSession
    from inference.planning.plan import plan_for

    policy = SplitPolicy.parse(args.split) if args.split else None  # a bad --split fails before models load
    edge = edge_client(args) if args.edge and with_edge else None
    analyzer = Analyzer(model_choice(args, runtime=runtime), edge=edge, choose_in_background=choose_in_background)
    if not analyzer.runtimes_ready.is_set():
        print(f"mededge {command}: choosing this workstation's runtimes in the background (once per machine and "
              "library version); PyTorch meanwhile", file=sys.stderr)
    policy = policy or SplitPolicy(SplitMode.AUTO if edge else SplitMode.LOCAL)
    plan = plan_for(policy, analyzer.stage_counts, WireFormat(args.wire))
    if plan.uses_edge(analyzer.stage_counts) and edge is None:
        raise ValueError(f"--split {args.split} sends stages to an edge server: give its address with --edge")
    return AnalysisSession(analyzer, plan, auto=policy.mode is SplitMode.AUTO, with_heat_maps=False,
                           progress=lambda message: print(f"mededge {command}: {message}", file=sys.stderr))


def first_radiograph(paths, tries: int = 10):
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
