"""``edge-sameo export``: ONNX graphs (encoder, decoder, dual decoder, refiner) + the I/O
contract."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edge_sameo.build import CONFIGS


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export ONNX graphs and their I/O contract",
        description="Export encoder.onnx + decoder.onnx (+ the modal head when the model has "
        "one, + refiner.onnx when it has a refiner) and contract.json; each graph is checked on "
        "ONNX Runtime against PyTorch and against the TensorRT parser's operator tables.",
    )
    p.add_argument(
        "--model",
        required=True,
        help=f"a checkpoint path, or a config name ({', '.join(CONFIGS)}) with seeded "
        "reference weights (for graph and latency work only)",
    )
    p.add_argument("--base", type=Path, help="base checkpoint for a SAMEO decoder-only file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (< 17 decomposes LayerNorm)")
    p.add_argument("--max-boxes", type=int, default=64, help="largest box count of the profile")
    p.add_argument("--no-check", action="store_true", help="skip the ORT/TensorRT-ops checks")
    p.set_defaults(func=run)


def check_paths(out: Path, inputs: dict[str, Any]) -> None:
    """Refuse an export folder whose files would overwrite an input (``--model``, ``--base``)."""
    from edge_sameo.contract import CONTRACT_FILE, DECODER_FILE, ENCODER_FILE, REFINER_FILE
    from edge_sameo.paths import check_outputs

    existing = {k: v for k, v in inputs.items() if v is not None and Path(v).exists()}
    for name in (ENCODER_FILE, DECODER_FILE, REFINER_FILE, CONTRACT_FILE):
        check_outputs(existing, {f"output {name} in --out": out / name})


def run(args: argparse.Namespace) -> int:
    from edge_sameo.engines.checks import check_export
    from edge_sameo.engines.export import ExportConfig, export_onnx

    check_paths(args.out, {"--model": args.model, "--base": args.base})
    cfg = ExportConfig(out_dir=args.out, opset=args.opset, max_boxes=args.max_boxes, check=False)
    from edge_sameo.checkpoint import load_model_or_config

    model, label = load_model_or_config(args.model, args.base)
    contract = export_onnx(model, cfg)
    print(f"exported {label} to {args.out} (opset {cfg.opset}, boxes {cfg.box_profile})")
    for graph in contract.graphs:
        shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in graph.outputs)
        print(f"  {graph.file}: {shapes}")
    if not args.no_check:
        report = check_export(args.out, model)
        errs = ", ".join(f"{k} {v:.1e}" for k, v in report.rel_err.items())
        print(f"  ONNX Runtime vs PyTorch rel err: {errs}")
        print(f"  TensorRT parser ops OK for: {', '.join(report.trt_versions)}")
    return 0
