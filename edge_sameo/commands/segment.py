"""``edge-sameo segment``: masks for box prompts on one image -> overlay PNG (+ COCO RLE JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.annotators import SEGMENT_RENDERER
from edge_sameo.commands.run import add_amodal_boxes_arg
from edge_sameo.io import atomic_write_json, image_extension, read_image, write_image
from edge_sameo.masks import encode_rle
from edge_sameo.paths import check_outputs
from edge_sameo.predictor import AmodalPredictor, Prediction
from edge_sameo.stream.objects import prediction_objects


def parse_box(text: str) -> list[float]:
    """``"x1,y1,x2,y2"`` -> four floats (argparse ``type``)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box expects x1,y1,x2,y2 numbers, got {text!r}")
    return values


def register(sub: Any) -> None:
    """Add the ``segment`` subcommand to the ``edge-sameo`` subparsers ``sub``."""
    p = sub.add_parser(
        "segment",
        help="segment boxes in one image",
        description="Masks for box prompts on one image (amodal with SAMEO decoder weights).",
    )
    p.add_argument("image", type=Path, help="input image (PNG/JPEG, 8/16-bit, gray/RGB/RGBA)")
    p.add_argument("--checkpoint", required=True, type=Path, help="EfficientSAM/SAMEO checkpoint")
    p.add_argument(
        "--base", type=Path, help="base EfficientSAM checkpoint for a SAMEO decoder-only file"
    )
    p.add_argument(
        "--box",
        action="append",
        type=parse_box,
        required=True,
        metavar="X1,Y1,X2,Y2",
        help="box prompt in image pixels (repeat for several)",
    )
    add_amodal_boxes_arg(
        p, "the boxes are amodal (the whole object's extent, hidden parts included)"
    )
    p.add_argument("--out", type=Path, required=True, help="overlay image to write (.png)")
    p.add_argument("--json", type=Path, help="also write the masks as COCO RLE JSON")
    p.set_defaults(func=run)


def prediction_records(result: Prediction) -> list[dict[str, Any]]:
    """One JSON-ready record per box: box, score, area, candidate IoUs, COCO RLE mask."""
    return [
        {
            "box": [round(float(v), 2) for v in result.boxes[i]],
            "score": float(result.scores[i]),
            "iou_predictions": [float(v) for v in result.iou_predictions[i]],
            "area": int(result.masks[i].sum()),
            "segmentation": encode_rle(result.masks[i]),
        }
        for i in range(len(result))
    ]


def segment_image(
    predictor: AmodalPredictor,
    image: NDArray[np.uint8],
    boxes: NDArray[np.float32] | list[list[float]],
    out: Path,
    json_path: Path | None,
    meta: dict[str, Any],
    amodal_boxes: bool = False,
) -> Prediction:
    """Run the predictor and write the overlay (and JSON), atomically."""
    predictor.set_image(image)
    result = predictor.predict(boxes, amodal_boxes=amodal_boxes)
    write_image(out, SEGMENT_RENDERER.render(image, prediction_objects(result, visible=False)))
    if json_path is not None:
        atomic_write_json(
            json_path,
            {
                **meta,
                "height": image.shape[0],
                "width": image.shape[1],
                "masks": prediction_records(result),
            },
        )
    return result


def print_summary(result: Prediction, out: Path, json_path: Path | None) -> None:
    """Print each box's score and mask area, the per-stage times and what was written."""
    speed = ", ".join(f"{k} {v:.1f} ms" for k, v in result.speed.items())
    for i in range(len(result)):
        print(f"box {i}: score {result.scores[i]:.3f}, mask area {int(result.masks[i].sum())} px")
    print(f"speed: {speed}")
    print(f"wrote {out}" + (f" and {json_path}" if json_path else ""))


def run(args: argparse.Namespace) -> int:
    """``edge-sameo segment``: masks for ``--box`` prompts on one image, written as an
    annotated image (and ``--json``); return 0."""
    from edge_sameo.checkpoint import load_model

    check_outputs(
        {"the input image": args.image, "--checkpoint": args.checkpoint, "--base": args.base},
        {"--out": args.out, "--json": args.json},
    )
    image_extension(args.out)
    image = read_image(args.image)
    model = load_model(args.checkpoint, base=args.base)
    result = segment_image(
        AmodalPredictor(model),
        image,
        args.box,
        args.out,
        args.json,
        {"image": str(args.image), "checkpoint": str(args.checkpoint)},
        amodal_boxes=args.amodal_boxes,
    )
    print_summary(result, args.out, args.json)
    return 0
