"""``edge-sameo eval``: score amodal predictions (COCO results) against COCO-amodal ground
truth: amodal mask AP/AR, mIoU and mIoU_occ overall and per occlusion bucket, next to the
"amodal = visible mask" baseline."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sameo.io import atomic_write_json


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("eval", help="evaluate amodal predictions", description=__doc__)
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth COCO-amodal JSON")
    parser.add_argument("--pred", type=Path, required=True, help="predictions (COCO results)")
    parser.add_argument(
        "--class-agnostic", action="store_true", help="ignore categories (as in SAMEO)"
    )
    parser.add_argument(
        "--match-iou", type=float, default=0.5, help="IoU for a prediction to match (mIoU)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sameo.evaluation import evaluate
    from edge_sameo.paths import check_outputs

    check_outputs({"--gt": args.gt, "--pred": args.pred}, {"--json": args.json})
    report = evaluate(
        args.gt, args.pred, class_agnostic=args.class_agnostic, match_iou=args.match_iou
    )
    print(report.format_table())
    if args.json is not None:
        atomic_write_json(args.json, report.to_dict())
    return 0
