"""`bench`: local only, full offload, cuts × wire formats and auto, measured against a real Triton."""

from __future__ import annotations

import argparse
import sys

from app.cli.common import EXIT_OK, add_model_options, add_tls_client_options, edge_client, fail, model_choice


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="measure local only, full offload, cuts × wire formats and auto "
                           "against a real Triton on this machine")
    bench.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    bench.add_argument("--quick", action="store_true", help="256 px detector, a few cuts, int8/fp32, 3 repeats")
    bench.add_argument("--repeats", type=int, metavar="N", help="analyses per option after a warm-up "
                       "(default 10; 3 with --quick)")
    bench.add_argument("--edge", metavar="HOST:PORT", help="measure against this running server, over every part "
                       "it serves, instead of starting one on loopback (model options below apply)")
    bench.add_argument("--link", metavar="LABEL", help="with --edge: what the link is, for the report")
    add_model_options(bench)
    add_tls_client_options(bench)
    bench.add_argument("--image", required=True, metavar="FILE",
                       help="the chest radiograph to analyse (its tensors decide what int8 and deflate save, so use "
                            "a real one, e.g. ../shared/data/cxr/raster/txv_nih_00027426_000_512px.png here)")
    bench.set_defaults(run=_bench)


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

            analyzer = Analyzer(model_choice(args))
            report = measure(analyzer, radiograph, edge_client(args), repeats=args.repeats or 10,
                             link=args.link or args.edge, progress=progress)
        else:
            report = run_benchmark(radiograph, quick=args.quick, progress=progress, repeats=args.repeats)
    except (RadiographError, EdgeError, EdgeServerError, WeightsError, ValueError, OSError) as exc:
        return fail("bench", exc)
    print(markdown(report))
    if args.json:
        save(report, Path(args.json))
    return EXIT_OK

