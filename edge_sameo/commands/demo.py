"""``edge-sameo demo``: the offline demo of the current release.

Until the bundled trained models exist, it runs ``segment`` on the reference image
with the *seeded reference weights* (random numbers drawn by a fixed rule): the run
proves the whole path works — checkpoint loading, preprocessing, encoder, batched
box decoding, overlay and RLE output — but the masks of random weights mean nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from edge_sameo.build import build_model
from edge_sameo.io import write_image
from edge_sameo.seeded import manifest_of, reference_image, seeded_state_dict

#: The reference boxes of shared/reference (XYXY pixels on the 640×480 reference image).
REFERENCE_BOXES = [
    [60.0, 40.0, 300.0, 260.0],
    [250.0, 120.0, 600.0, 450.0],
    [10.0, 300.0, 200.0, 470.0],
]


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the offline demo", description=__doc__)
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="output folder (default: out)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sameo.checkpoint import load_model
    from edge_sameo.commands.segment import print_summary, segment_image
    from edge_sameo.io import atomic_write_bytes
    from edge_sameo.predictor import AmodalPredictor

    out_dir: Path = args.out_dir
    print(
        "NOTE: this demo uses seeded *random* reference weights (no trained model is bundled "
        "yet): the masks mean nothing; it shows the pipeline runs end to end offline."
    )
    model = build_model("vitt")
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=0))
    ckpt = out_dir / "seeded_vitt.pt"
    # Saved in the original EfficientSAM format, so the demo also exercises the loader.
    import io

    buf = io.BytesIO()
    torch.save({"model": model.state_dict()}, buf)
    atomic_write_bytes(ckpt, buf.getvalue())
    image = reference_image(480, 640, seed=0)
    image_path = out_dir / "reference.png"
    write_image(image_path, image)
    out, json_path = out_dir / "demo_overlay.png", out_dir / "demo_masks.json"
    result = segment_image(
        AmodalPredictor(load_model(ckpt)),
        image,
        REFERENCE_BOXES,
        out,
        json_path,
        {"image": str(image_path), "checkpoint": str(ckpt), "weights": "seeded-random"},
    )
    print_summary(result, out, json_path)
    return 0
