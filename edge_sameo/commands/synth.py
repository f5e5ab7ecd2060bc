"""``edge-sameo synth``: write synthetic amodal ground truth.

``synth images`` (COCO-amodal image set with dual annotation), ``synth video`` (an MP4
clip with per-frame, tracked ground truth), ``synth yolo`` (YOLO detection layout) and
``synth from-coco`` (Amodal-LVIS-style pairs from a COCO instance dataset).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from edge_sameo.errors import InputError


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (640, 480) as (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 640x480, got {text!r}") from None
    return w, h


def _parse_range(text: str, kind: Callable[[str], Any]) -> tuple[Any, Any]:
    try:
        lo, hi = (kind(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from None
    return lo, hi


def parse_float_range(text: str) -> tuple[float, float]:
    """``"0,0.7"`` -> (0.0, 0.7)."""
    return _parse_range(text, float)


def parse_int_range(text: str) -> tuple[int, int]:
    """``"2,5"`` -> (2, 5)."""
    return _parse_range(text, int)


def _add_world_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed (output is reproducible)")
    p.add_argument("--size", type=parse_size, default=(640, 480), help="WxH (default 640x480)")
    p.add_argument(
        "--objects", type=parse_int_range, default=(2, 5), help="MIN,MAX objects per scene"
    )
    p.add_argument(
        "--classes",
        type=lambda text: tuple(c.strip() for c in text.split(",") if c.strip()),
        default=None,
        help="comma-separated object classes to draw (default: all of "
        "disc,box,polygon,star,ring,bar,blob)",
    )
    p.add_argument(
        "--pillars",
        type=float,
        default=0.0,
        help="probability that a scene also gets an upright pillar occluder, as the videos "
        "have (default 0)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _world(args: argparse.Namespace, **kwargs: Any) -> Any:
    """The ``SynthConfig`` of the shared world options plus ``kwargs``."""
    from edge_sameo.data import SynthConfig

    if args.classes is not None:
        kwargs["classes"] = args.classes
    return SynthConfig(size=args.size, objects=args.objects, pillars=args.pillars, **kwargs)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``synth`` and its ``images``, ``video``, ``yolo`` and ``from-coco``
    subcommands to the ``edge-sameo`` subparsers."""
    parser = subparsers.add_parser(
        "synth",
        help="write synthetic amodal ground truth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="synth_command", required=True, metavar="KIND")

    images = sub.add_parser("images", help="COCO-amodal image set with dual annotation")
    _add_world_options(images)
    images.add_argument("--count", type=int, required=True, help="number of scenes")
    images.add_argument(
        "--occlusion", type=parse_float_range, default=(0.0, 0.7), help="MIN,MAX target ratio"
    )
    images.add_argument(
        "--dual", type=int, default=1, help="dual (unoccluded) images per scene (0: none)"
    )
    images.set_defaults(func=run_images)

    video = sub.add_parser("video", help="MP4 clip with tracked per-frame ground truth")
    _add_world_options(video)
    video.add_argument("--frames", type=int, required=True, help="number of frames")
    video.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    video.add_argument("--write-frames", action="store_true", help="also write frames/*.png")
    video.set_defaults(func=run_video)

    yolo = sub.add_parser("yolo", help="YOLO detection set (images, labels, data.yaml)")
    _add_world_options(yolo)
    yolo.add_argument("--count", type=int, required=True, help="number of scenes")
    yolo.add_argument(
        "--occlusion", type=parse_float_range, default=(0.0, 0.7), help="MIN,MAX target ratio"
    )
    yolo.add_argument("--val-fraction", type=float, default=0.1, help="share of val images")
    yolo.add_argument(
        "--box", choices=("visible", "amodal"), default="visible", help="box to label"
    )
    yolo.set_defaults(func=run_yolo)

    coco = sub.add_parser("from-coco", help="Amodal-LVIS-style pairs from a COCO dataset")
    coco.add_argument("--coco", type=Path, required=True, help="COCO instances JSON")
    coco.add_argument("--images", type=Path, required=True, help="folder of its images")
    coco.add_argument("--out", type=Path, required=True, help="output folder")
    coco.add_argument("--count", type=int, default=100, help="composites to write")
    coco.add_argument("--seed", type=int, default=0)
    coco.add_argument("--size", type=parse_size, default=(640, 480), help="WxH of composites")
    coco.add_argument(
        "--occlusion", type=parse_float_range, default=(0.1, 0.7), help="MIN,MAX target ratio"
    )
    coco.add_argument(
        "--checkpoint",
        type=Path,
        help="amodal model judging completeness of modal-only (real) input",
    )
    coco.add_argument(
        "--complete-iou",
        type=float,
        default=0.9,
        help="IoU of model amodal vs visible mask above which an object is complete",
    )
    coco.add_argument(
        "--background", choices=("image", "synth"), default="image", help="canvas background"
    )
    coco.add_argument("--quiet", action="store_true", help="no progress bar")
    coco.set_defaults(func=run_from_coco)


def _bar(total: int, args: argparse.Namespace, unit: str) -> tqdm[Any]:
    return tqdm(total=total, unit=unit, disable=bool(args.quiet), file=sys.stderr)


def run_images(args: argparse.Namespace) -> int:
    """``synth images``: write ``--count`` scenes (and their duals) as a COCO-amodal set
    in ``--out``; return 0."""
    from edge_sameo.data import generate_dataset

    cfg = _world(args, occlusion=args.occlusion, dual=args.dual)
    with _bar(args.count, args, "scene") as bar:
        path = generate_dataset(args.out, args.count, args.seed, cfg, progress=bar.update)
    print(f"wrote {args.count} scenes (+ duals) and {path}")
    return 0


def run_video(args: argparse.Namespace) -> int:
    """``synth video``: write ``video.mp4`` of ``--frames`` frames and its tracked
    per-frame ground truth in ``--out``; return 0."""
    from edge_sameo.data import generate_video

    cfg = _world(args)
    with _bar(args.frames, args, "frame") as bar:
        path = generate_video(
            args.out,
            args.frames,
            args.seed,
            cfg,
            fps=args.fps,
            write_frames=args.write_frames,
            progress=bar.update,
        )
    print(f"wrote {args.out / 'video.mp4'} ({args.frames} frames) and {path}")
    return 0


def run_yolo(args: argparse.Namespace) -> int:
    """``synth yolo``: write a YOLO detection set (images, labels, ``data.yaml``) of
    ``--count`` scenes in ``--out``; return 0."""
    from edge_sameo.data import export_yolo

    cfg = _world(args, occlusion=args.occlusion)
    with _bar(args.count, args, "scene") as bar:
        path = export_yolo(
            args.out,
            args.count,
            args.seed,
            cfg,
            val_fraction=args.val_fraction,
            box=args.box,
            progress=bar.update,
        )
    print(f"wrote {args.count} scenes and {path}")
    return 0


def model_amodal_fn(
    checkpoint: Path,
) -> Callable[[NDArray[np.uint8], NDArray[np.float32]], NDArray[np.bool_]]:
    """``amodal_fn`` for stage 1 backed by a checkpoint (``load_model`` and the predictor)."""
    # Imported here: the predictor pulls in torch and the model only when asked for.
    api = importlib.import_module("edge_sameo")
    predictor = api.AmodalPredictor(api.load_model(checkpoint))

    def amodal_fn(image: NDArray[np.uint8], boxes: NDArray[np.float32]) -> NDArray[np.bool_]:
        predictor.set_image(image)
        return np.asarray(predictor.predict(boxes).masks, dtype=bool)

    return amodal_fn


def run_from_coco(args: argparse.Namespace) -> int:
    """``synth from-coco``: pick the complete objects of a COCO set (judged by
    ``--checkpoint`` when it has no visible masks) and write occluded composites with their
    duals; return 0."""
    from edge_sameo.data import FromCocoConfig, load_amodal_coco, select_complete
    from edge_sameo.data.from_coco import synthesize_pairs
    from edge_sameo.paths import check_outputs, same_file

    check_outputs(
        {"--coco": args.coco, "--checkpoint": args.checkpoint},
        {"output annotations.json in --out": args.out / "annotations.json"},
    )
    if same_file(args.images, args.out / "images"):
        raise InputError(
            f"--images {args.images} is the folder the composites are written to "
            f"({args.out / 'images'}): refusing to overwrite the input images"
        )
    cfg = FromCocoConfig(
        size=args.size,
        count=args.count,
        occlusion=args.occlusion,
        complete_iou=args.complete_iou,
        background=args.background,
    )
    dataset = load_amodal_coco(args.coco, image_root=args.images, require_visible=False)
    amodal_fn = None
    if not dataset.has_visible:
        if args.checkpoint is None:
            raise InputError(
                f"{args.coco} has no visible masks (real, modal-only input): pass --checkpoint "
                "so a model can judge which objects are complete"
            )
        amodal_fn = model_amodal_fn(args.checkpoint)
    objects = select_complete(dataset, cfg, amodal_fn)
    print(f"stage 1: {len(objects)} complete objects of {len(dataset.annotations)}")
    with _bar(cfg.count, args, "pair") as bar:
        path = synthesize_pairs(dataset, objects, args.out, args.seed, cfg, progress=bar.update)
    print(f"wrote {cfg.count} composites (+ duals) and {path}")
    return 0
