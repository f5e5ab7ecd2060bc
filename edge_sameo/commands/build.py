"""``edge-sameo build``: TensorRT engines from an export folder (reused from the engine cache
when the graph, TensorRT, GPU and options are unchanged)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_sameo.precision import ENGINE_PRECISIONS, RUNTIME_PRECISIONS


def register(sub: Any) -> None:
    from edge_sameo.engines.tensorrt_build import GRAPHS

    p = sub.add_parser(
        "build",
        help="build TensorRT engines from exported ONNX graphs",
        description="Build (or reuse from the engine cache) the TensorRT engines of an export "
        "folder: encoder, decoder and, when the export has one, refiner. fp16/int8 use "
        "<graph>.fp16.onnx / <graph>.int8.onnx (from edge-sameo calibrate) where present, else "
        "TensorRT's builder flags.",
    )
    p.add_argument("--onnx", required=True, type=Path, help="export folder (contract.json)")
    p.add_argument(
        "--precision", choices=ENGINE_PRECISIONS, default=RUNTIME_PRECISIONS["tensorrt"][0]
    )
    p.add_argument(
        "--graphs", choices=GRAPHS, default="all", help="what to build (default: all graphs)"
    )
    p.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit (MiB)")
    p.add_argument("--timing-cache", type=Path, metavar="PATH", help="TensorRT timing cache file")
    p.add_argument("--max-aux-streams", type=int, metavar="N", help="auxiliary streams (0: one)")
    p.add_argument(
        "--calib-cache", type=Path, metavar="DIR", help="folder of <graph>.int8.calib caches"
    )
    p.add_argument(
        "--keep-fp32",
        default=None,
        metavar="GROUPS",
        help="comma list of layer groups pinned to FP32 (LayerNorm,Softmax,Add; '' for none)",
    )
    p.add_argument("--rebuild", action="store_true", help="ignore cached engines")
    p.add_argument("--out", type=Path, help="engine folder (default: the export folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sameo.engines.fp32_layers import DEFAULT_KEEP_FP32
    from edge_sameo.engines.tensorrt_build import BuildConfig, build_engines

    keep = (
        DEFAULT_KEEP_FP32
        if args.keep_fp32 is None
        else tuple(k.strip() for k in args.keep_fp32.split(",") if k.strip())
    )
    cfg = BuildConfig(
        onnx_dir=args.onnx,
        precision=args.precision,
        out_dir=args.out,
        graphs=args.graphs,
        workspace_mib=args.workspace,
        timing_cache=args.timing_cache,
        max_aux_streams=args.max_aux_streams,
        calib_cache=args.calib_cache,
        keep_fp32=keep,
        rebuild=args.rebuild,
    )
    for engine in build_engines(cfg):
        action = "built" if engine.built else "reused"
        why = f" ({engine.reason})" if engine.built else ""
        print(f"{engine.graph}: {action} {engine.path}{why}")
        print(f"  {engine.plan.describe()}")
    return 0
