"""``edge-sameo calibrate``: fp16 / int8 (Q/DQ) graphs beside an export, with an accuracy
report against fp32 on held-out images; exit 1 when a gate is missed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_sameo.errors import InputError
from edge_sameo.precision import CALIBRATED_PRECISIONS

EXIT_GATE = 1


def register(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate",
        help="build fp16/int8 graphs and check them against fp32",
        description="Write <graph>.fp16.onnx or <graph>.int8.onnx (symmetric Q/DQ, TensorRT "
        "explicit quantization) beside an export, then compare with fp32 on held-out images.",
    )
    p.add_argument("--onnx", type=Path, required=True, metavar="DIR", help="export folder")
    p.add_argument("--precision", required=True, choices=CALIBRATED_PRECISIONS)
    p.add_argument(
        "--source",
        nargs="+",
        metavar="KIND",
        default=["synthetic"],
        help="calibration/held-out images: synthetic | reference | video FILE | folder DIR "
        "(default: synthetic)",
    )
    p.add_argument("--count", type=int, default=32, help="calibration images (default 32)")
    p.add_argument("--eval-count", type=int, default=8, help="held-out images (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--boxes", type=int, default=4, help="box prompts per image (default 4)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = all)")
    p.add_argument(
        "--quantize-attention",
        action="store_true",
        help="int8: also quantize the Q·Kᵀ and attention·V MatMuls (inaccurate at 1024 px)",
    )
    p.add_argument("--gate-emb-rel-err", type=float, metavar="X", help="fail above this")
    p.add_argument("--gate-mask-iou", type=float, metavar="Y", help="fail below this mean IoU")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_source(values: list[str]) -> tuple[str, Path | None]:
    """``["video", "clip.mp4"]`` -> ("video", Path("clip.mp4")); validates the arity."""
    kind, rest = values[0], values[1:]
    if kind in ("video", "folder"):
        if len(rest) != 1:
            raise InputError(f"--source {kind} needs exactly one PATH")
        return kind, Path(rest[0])
    if rest:
        raise InputError(f"--source {kind} takes no PATH")
    return kind, None


def check_paths(args: argparse.Namespace, source: Path | None) -> None:
    """Refuse a ``--json`` that would overwrite the export's files or the source video."""
    from edge_sameo.contract import (
        CALIB_META_FILE,
        CONTRACT_FILE,
        ExportContract,
        precision_onnx_path,
    )
    from edge_sameo.paths import check_outputs

    contract = ExportContract.read(args.onnx)
    files = {f"{CONTRACT_FILE} in --onnx": args.onnx / CONTRACT_FILE, "--source": source}
    for graph in contract.graphs:
        files[f"{graph.file} in --onnx"] = args.onnx / graph.file
        written = precision_onnx_path(args.onnx, graph.file, args.precision)
        files[f"the calibrated {written.name}"] = written
    files[f"{CALIB_META_FILE} in --onnx"] = args.onnx / CALIB_META_FILE
    check_outputs(files, {"--json": args.json})


def run(args: argparse.Namespace) -> int:
    from edge_sameo.calib.batcher import BatcherConfig
    from edge_sameo.calib.build import CalibrateConfig, calibrate
    from edge_sameo.calib.qdq import QdqConfig
    from edge_sameo.calib.report import Gates
    from edge_sameo.io import atomic_write_json

    kind, path = parse_source(args.source)
    check_paths(args, path)
    cfg = CalibrateConfig(
        onnx_dir=args.onnx,
        precision=args.precision,
        data=BatcherConfig(
            source=kind,
            path=path,
            count=args.count,
            seed=args.seed,
            boxes_per_image=args.boxes,
            progress=not args.no_progress,
        ),
        eval_count=args.eval_count,
        gates=Gates(emb_rel_err=args.gate_emb_rel_err, mask_iou=args.gate_mask_iou),
        qdq=QdqConfig(quantize_attention=args.quantize_attention),
        threads=args.threads,
    )
    report = calibrate(cfg)
    print(report.format_table())
    failures = report.failures(cfg.gates)
    if args.json is not None:
        atomic_write_json(args.json, {**report.to_dict(), "gate_failures": failures})
    for line in failures:
        print(f"GATE MISSED: {line}")
    return EXIT_GATE if failures else 0
