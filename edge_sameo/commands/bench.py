"""``edge-sameo bench``: per-stage latency, throughput, memory and mask agreement per runtime."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from edge_sameo.bench import BenchConfig
    from edge_sameo.modeling import EfficientSam


from edge_sameo.bench_peers import PEERS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark every available runtime against the original-code baseline",
        description="Per stage (preprocess, encoder, decoder for N boxes, refiner for N boxes "
        "when the model has one, postprocess) and per runtime × precision: p50 latency and "
        "its spread (IQR), throughput, memory added and agreement of the final masks with "
        "torch eager fp32 (the original code's computation). Runtimes are set up once and "
        "timed in rounds taken in turn, so machine noise falls on all alike (use --iters 5 "
        "or more to rank them). With --baseline, instead: the "
        "two models side by side on each runtime, whole frames (set_image + predict of N boxes) "
        "taken in turn, and the ratio of --model's cost to --baseline's.",
    )
    p.add_argument("--model", default="vitt", help="checkpoint or config name (seeded weights)")
    p.add_argument("--onnx", type=Path, help="export folder to use (default: export the model)")
    p.add_argument("--image", type=Path, help="input image (default: the 640×480 reference image)")
    p.add_argument("--boxes", default="1,4,16", help="box counts (default 1,4,16)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--only", nargs="*", help="runtimes to include (substring match)")
    p.add_argument("--threads", type=int, help="threads for every runtime (default: all cores)")
    p.add_argument(
        "--baseline",
        metavar="MODEL",
        help="checkpoint to compare --model with, side by side in this run (writes "
        "compare.json and compare.md; --onnx applies to --model only)",
    )
    p.add_argument(
        "--peers",
        nargs="?",
        const="all",
        choices=["all", *PEERS],
        help="also time the pipelines users assemble elsewhere, in the same rounds: "
        "ultralytics-mobilesam (ultralytics' SAM predictor, MobileSAM architecture, random "
        "weights, torch fp32); reports each runtime's frame speed-up over them",
    )
    p.add_argument("--out-dir", type=Path, default=Path("out/bench"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sameo.bench import BenchConfig, markdown_table, run_bench, write_report
    from edge_sameo.checkpoint import load_model_or_config
    from edge_sameo.engines.on_demand import on_demand
    from edge_sameo.errors import InputError
    from edge_sameo.io import read_image
    from edge_sameo.seeded import reference_image

    try:
        counts = tuple(int(x) for x in args.boxes.split(","))
        cfg = BenchConfig(box_counts=counts, iters=args.iters, warmup=args.warmup)
    except ValueError as exc:
        raise InputError(f"bad --boxes/--iters/--warmup: {exc}") from None
    check_paths(args)
    model, label = load_model_or_config(args.model)
    image = read_image(args.image) if args.image else reference_image(480, 640, seed=0)
    if args.baseline:
        return compare(args, model, label, image, cfg)
    print(f"model: {label}; image {image.shape[1]}x{image.shape[0]}")
    peers = PEERS if args.peers == "all" else (args.peers,) if args.peers else ()
    report = run_bench(
        model, image, cfg, args.onnx, args.only, threads=args.threads, peers=peers, **on_demand()
    )
    paths = write_report(report, args.out_dir)
    print(markdown_table(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def check_paths(args: argparse.Namespace) -> None:
    """Refuse report files in ``--out-dir`` that would overwrite an input file."""
    from edge_sameo.bench import COMPARE_FILES, REPORT_FILES
    from edge_sameo.paths import check_outputs

    inputs = {"--model": args.model, "--baseline": args.baseline, "--image": args.image}
    names = COMPARE_FILES if args.baseline else REPORT_FILES
    for name in names:
        check_outputs(
            {k: v for k, v in inputs.items() if v is not None and Path(v).exists()},
            {f"output {name} in --out-dir": args.out_dir / name},
        )


def compare(
    args: argparse.Namespace,
    model: EfficientSam,
    label: str,
    image: NDArray[np.uint8],
    cfg: BenchConfig,
) -> int:
    """``--baseline``: both models side by side on each runtime (see ``run_compare``)."""
    from edge_sameo.bench import compare_table, run_compare, write_compare
    from edge_sameo.checkpoint import load_model_or_config
    from edge_sameo.engines.on_demand import on_demand

    baseline, base_label = load_model_or_config(args.baseline)
    print(f"model: {label}; baseline: {base_label}; image {image.shape[1]}x{image.shape[0]}")
    report = run_compare(
        model,
        baseline,
        image,
        cfg,
        args.onnx,
        args.only,
        threads=args.threads,
        labels=(label, base_label),
        **on_demand(),
    )
    paths = write_compare(report, args.out_dir)
    print(compare_table(report))
    print("ratios: model / baseline p50 (frame: set_image + predict; enc+dec+ref: the network)")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if report["results"] else 1
