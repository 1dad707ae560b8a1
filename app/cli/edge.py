"""`edge export|serve|control`: the edge server's Triton repository, the server, and its operator's calls."""

from __future__ import annotations

import argparse
import json
import sys

from app.cli.common import EXIT_OK, EXIT_USAGE, add_model_options, chosen_models, fail, model_choice
from inference.config import EdgeRuntime, ModelKind, Runtime


def add_parser(sub) -> None:
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
                                description="Serves the edge parts through onnxruntime (or OpenVINO, PyTorch: --runtime) in "
                                            "Triton's Python backend until Ctrl-C or SIGTERM.")
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
    serve.add_argument("--halo-bands", type=int, default=0, metavar="N", help="also the detector's halo part: the "
                       "whole detector on one of N bands of an image, rows swapped with the edges running the others "
                       "after every layer (e.g. 2; default 0: none; see the README)")
    serve.add_argument("--halo-listen", metavar="HOST:PORT", help="where a halo part listens for the other edges "
                       "(beyond loopback: mutual TLS with --tls-cert, --tls-key and --tls-client-ca, the peers' CA)")
    serve.add_argument("--halo-address", metavar="HOST:PORT", help="how the other edges reach --halo-listen, if "
                       "otherwise (a relay, NAT)")
    serve.add_argument("--halo-peers", default="", metavar="HOST:PORT,…", help="the other edges' halo addresses: "
                       "the only ones a halo part connects to")
    serve.set_defaults(run=_edge_serve)

    control = edge_sub.add_parser("control", help="the operator's calls on a running `edge serve` here: status, "
                                  "list, unload or load a part", description="Uses the credential `edge serve` writes "
                                  "into its data folder (readable by its user only), over loopback.")
    control.add_argument("action", choices=("status", "list", "unload", "load"))
    control.add_argument("part", nargs="?", help="the part's name, e.g. classifier_cut07_fp16")
    control.add_argument("--grpc-port", type=int, default=8001, help="the server's --grpc-port (default 8001)")
    control.set_defaults(run=_edge_control)


def _add_part_options(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, runtime=False)  # the models are exported, never run here
    parser.add_argument("--runtime", choices=[str(r) for r in EdgeRuntime], help="what runs the parts on the edge "
                        "(default onnxruntime; openvino: an Intel edge box, Triton's OpenVINO backend in the stock "
                        "container; torch: PyTorch on the edge's GPU, for `edge serve` where onnxruntime has no "
                        "CUDA); recorded in the repository")
    parser.add_argument("--models", default="detector,classifier", help="which models (default both)")
    parser.add_argument("--cuts", default="default", help="'default' (full offload and the auto cut), 'all', "
                        "or a list like 1,6 (each applied to every model it is valid for)")
    parser.add_argument("--wire", default="fp32,fp16", help="wire formats to export (default fp32,fp16)")
    parser.add_argument("--batching", default="on", choices=("on", "off"), help="Triton's dynamic batcher groups "
                        "concurrent requests of many workstations into one run of a part (default on)")
    parser.add_argument("--queue-delay-us", type=int, default=2000, metavar="US", help="how long a request waits "
                        "for others to join its batch (default 2000; see docs/benchmarks.md, shared edge)")
    parser.add_argument("--preferred-batch", default="", metavar="SIZES", help="batch sizes the batcher aims for, "
                        "e.g. 4,8 (default: none, the largest it has)")
    parser.add_argument("--instances", type=int, default=1, metavar="N", help="copies of each part that run side "
                        "by side (default 1: one per part keeps a CPU edge's cores for the batch)")
    parser.add_argument("--bands", type=int, default=0, metavar="N", help="also the detector's band part for a "
                        "spatial split of its first stages over N edges (e.g. 2; default 0: none; see the README)")
    parser.add_argument("--band-cut", type=int, default=None, metavar="K", help="the stages [0, K) a band part runs "
                        "(default the detector's auto cut, 6)")


def _batching(args: argparse.Namespace):
    from inference.edge.repository import Batching

    return Batching.parse(args.batching, args.queue_delay_us, args.preferred_batch, args.instances)


def _part_requests(args: argparse.Namespace, analyzer) -> list:
    from inference.config import WireFormat
    from inference.edge.repository import PartRequest
    from inference.planning.plan import AUTO_CUTS

    kinds = chosen_models(args.models)
    names = [w.strip() for w in args.wire.split(",") if w.strip()]
    if unknown := [name for name in names if name not in {w.value for w in WireFormat}]:
        raise ValueError(f"--wire {','.join(unknown)}: the wire formats are {', '.join(w.value for w in WireFormat)}")
    # int8+deflate travels to the int8 part: each encoding is exported once
    wires = list(dict.fromkeys(WireFormat(name).encoding for name in names))
    asked: list[int] = []
    if args.cuts not in ("all", "default"):
        try:
            asked = [int(c) for c in args.cuts.split(",") if c.strip()]
        except ValueError:
            raise ValueError(f"--cuts {args.cuts}: 'default', 'all' or stage numbers such as 1,6") from None
        stage_counts = {kind: analyzer.model(kind).stage_count for kind in kinds}
        if nowhere := [c for c in asked if not any(0 <= c < n for n in stage_counts.values())]:
            ranges = ", ".join(f"{kind.value} 0..{n - 1}" for kind, n in stage_counts.items())
            raise ValueError(f"--cuts {','.join(map(str, nowhere))}: no model has such a cut ({ranges})")
    requests = []
    for kind in kinds:
        model, weights = analyzer.model(kind), analyzer.weights[kind]
        if args.cuts == "all":
            cuts = list(range(model.stage_count))
        elif args.cuts == "default":
            cuts = [0, AUTO_CUTS[kind]]
        else:  # a cut beyond this model's stages is the other model's
            cuts = [c for c in asked if 0 <= c < model.stage_count]
        requests += [PartRequest(model, weights, cut, wire) for cut in cuts for wire in wires]
    if args.bands and ModelKind.DETECTOR in kinds:
        requests += _band_requests(analyzer, args.bands, AUTO_CUTS[ModelKind.DETECTOR] if args.band_cut is None
                                   else args.band_cut, requests)
    return requests


def _band_requests(analyzer, count: int, cut: int, requests: list) -> list:
    """The detector's band part for `count` bands at `cut`, and its cut-`cut` FP32 part if not yet requested."""
    from inference.config import WireFormat
    from inference.edge.repository import PartRequest
    from inference.models.bands import band_split

    detector, weights = analyzer.detector, analyzer.weights[ModelKind.DETECTOR]
    split = band_split(detector, cut, count, detector.config.input_size) if count >= 2 else None
    if split is None:
        raise ValueError(f"the detector's stages before cut {cut} cannot be split into {count} bands at "
                         f"{detector.config.input_size} px (the receptive field reaches across the image, or the "
                         "size does not divide)")
    rest = PartRequest(detector, weights, cut, WireFormat.FP32)
    return [PartRequest(detector, weights, cut, WireFormat.FP32, band_rows=split.rows),
            *([rest] if rest not in requests else [])]


def _edge_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from inference.analysis.analyzer import Analyzer
    from inference.edge.repository import write_repository
    from inference.models.weights import WeightsError

    try:
        analyzer = Analyzer(model_choice(args, runtime=Runtime.TORCH))  # exports only
        requests = _part_requests(args, analyzer)
        specs = write_repository(Path(args.out), requests, gpu=not args.cpu, batching=_batching(args), exactly=True,
                                 runtime=EdgeRuntime(args.runtime or EdgeRuntime.ONNXRUNTIME),
                                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (WeightsError, ValueError, OSError) as exc:
        return fail("edge export", exc)
    print(json.dumps({"repository": str(Path(args.out).resolve()), "parts": [s.name for s in specs]}))
    return EXIT_OK


def _edge_serve(args: argparse.Namespace) -> int:
    import hashlib
    import signal
    import threading
    from pathlib import Path

    from inference.config import WireFormat
    from inference.edge.client import parse_address
    from inference.edge.repository import PartRequest, write_repository
    from inference.edge.server import EdgeServer, EdgeServerError, TlsFiles
    from inference.models.weights import WeightsError, data_dir

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            return fail("edge serve", "TLS needs both --tls-cert and --tls-key")
        tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key),
                       Path(args.tls_client_ca) if args.tls_client_ca else None)
    elif args.tls_client_ca:
        return fail("edge serve", "mutual TLS (--tls-client-ca) needs TLS: give --tls-cert and --tls-key too")
    base = data_dir() / "edge"
    if (args.halo_address or args.halo_peers) and not args.halo_listen:
        return fail("edge serve", "--halo-address and --halo-peers need --halo-listen")
    peers = tuple(dict.fromkeys(p.strip() for p in args.halo_peers.split(",") if p.strip()))
    try:
        for address in (args.halo_listen, args.halo_address, *peers):
            if address:
                parse_address(address)
    except ValueError as exc:
        return fail("edge serve", f"halo: {exc}")
    server = EdgeServer(Path(args.repository or "."), base / f"run-{args.grpc_port}", host=args.host,
                        grpc_port=args.grpc_port, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                        tls=tls, insecure=args.insecure, halo_listen=(args.halo_listen or "").strip(),
                        halo_address=(args.halo_address or "").strip(), halo_peers=peers)
    try:
        warnings = server.check_exposure()  # before a long export: a refused address fails at once …
        warnings += server.check_tls()  # … TLS files that are not a certificate in date and its key …
        server.check_code()  # … and code others could change
        if args.repository:
            if not server.repository.is_dir():
                return fail("edge serve", f"no repository at {server.repository} (export one with `edge export "
                                          "--out DIR`)")
            if not any(server.repository.glob("*/config.pbtxt")):
                return fail("edge serve", f"{server.repository} holds no Triton models (*/config.pbtxt)")
            if args.halo_bands:
                return fail("edge serve", "--halo-bands exports a part: serve without --repository")
            if args.runtime:
                return fail("edge serve", "a repository is served by the runtime it was exported for: export it "
                                          f"with `edge export --runtime {args.runtime}`, or serve without --repository")
        else:
            from inference.analysis.analyzer import Analyzer

            analyzer = Analyzer(model_choice(args, runtime=Runtime.TORCH))  # exports only
            requests = _part_requests(args, analyzer)
            if args.halo_bands:
                requests.append(PartRequest(analyzer.detector, analyzer.weights[ModelKind.DETECTOR], 0,
                                            WireFormat.FP32, halo_bands=args.halo_bands))
            batching = _batching(args)
            key = hashlib.sha256(repr(sorted((r.weights, r.cut, r.wire.value, r.band_rows, r.halo_bands,
                                              repr(r.model.config)) for r in requests)).encode()).hexdigest()[:12]
            server.repository = base / f"repository-{key}"  # batching and runtime are rewritten into the configs
            write_repository(server.repository, requests, gpu=False, batching=batching,
                             runtime=EdgeRuntime(args.runtime or EdgeRuntime.ONNXRUNTIME),
                             progress=lambda m: print(m, file=sys.stderr, flush=True))
        for warning in warnings:  # on every start, into the service's journal
            print(f"mededge edge serve: warning: {warning}", file=sys.stderr, flush=True)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        server.start()
    except (EdgeServerError, WeightsError, ValueError, OSError) as exc:
        return fail("edge serve", exc)
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
                return fail("edge serve", server.why_stopped())
    finally:
        server.stop()
    print("edge server stopped", flush=True)
    return EXIT_OK


def _edge_control(args: argparse.Namespace) -> int:
    """The operator's calls on a running `edge serve` of this machine, with the credential it wrote."""
    from tritonclient.utils import InferenceServerException

    from inference.edge.repository import served_through
    from inference.edge.server import EdgeServerError, OperatorClient
    from inference.models.weights import data_dir

    if args.action in ("load", "unload") and not args.part:
        return fail("edge control", f"{args.action} needs the part's name (see: edge control list)")
    try:
        operator = OperatorClient.from_control_file(data_dir() / "edge" / f"run-{args.grpc_port}" / "control.json")
        if args.action == "status":  # e.g. for monitoring on the box: exit 0 only when ready
            ready, version, models = operator.status()
            loaded = [name for name, state in models if state == "READY"]
            missing = ", ".join(f"{name} {state}" for name, state in models if state != "READY")
            print(f"{'ready' if ready else 'NOT READY'}: Triton {version}, {len(loaded)} of {len(models)} parts loaded"
                  + (f" (not loaded: {missing})" if missing else ""))
            return EXIT_OK if ready else EXIT_USAGE
        if args.action == "list":
            for name, state in operator.models():
                through = served_through(operator.serving / name / "config.pbtxt")
                print(f"{name}\t{state}" + (f"\tthrough {through}" if through else ""))
        else:
            getattr(operator, args.action)(args.part)
            print(f"{args.action}ed {args.part}")
    except (EdgeServerError, OSError) as exc:
        return fail("edge control", exc)
    except InferenceServerException as exc:
        return fail("edge control", f"the edge server refused: {exc.message()}")
    return EXIT_OK

