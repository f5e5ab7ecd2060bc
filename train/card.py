"""Render a nano folder's ``MODEL_CARD.md`` (the bundled one: ``edge_sameo/models/nano``)
from the run's ``metrics.json`` (real figures only).

python -m edge_sameo.train.card edge_sameo/models/nano
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_sameo import bundled
from edge_sameo.evaluation import BUCKETS
from edge_sameo.io import atomic_write_bytes
from edge_sameo.train.score import BARS_SECOND_WORLD, bars_line, nano_gate


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}"


def quality_table(test: Mapping[str, Any]) -> list[str]:
    lines = [
        "| figure | amodal head, modal boxes | amodal head, amodal boxes | visible baseline |",
        "|---|---|---|---|",
    ]
    m, a = test["amodal_head_modal_boxes"], test["amodal_head_amodal_boxes"]
    rows = [
        ("mIoU, occluded instances (every instance, occlusion > 0.1)", "inst_mIoU_occluded",
         "inst_baseline_mIoU_occluded"),
        ("mIoU, occluded instances (evaluator, matched)", "mIoU_occluded",
         "baseline_mIoU_occluded"),
        ("mIoU, whole objects (every instance, occlusion < 0.05)", "inst_mIoU_unoccluded", None),
        ("mIoU, all instances (every instance)", "inst_mIoU", None),
        ("mIoU (evaluator, matched)", "mIoU", "baseline_mIoU"),
        ("mIoU_occ (hidden part recovered)", "mIoU_occ", None),
        ("mask AP (class-agnostic)", "AP", None),
    ]  # fmt: skip
    for label, key, base in rows:
        b = _pct(m.get(base)) if base else "–"
        lines.append(f"| {label} | {_pct(m.get(key))} | {_pct(a.get(key))} | {b} |")
    for key, _ in BUCKETS:
        lines.append(
            f"| occlusion {key}: mIoU / mIoU_occ (n = {m.get(f'count[{key}]')}) | "
            f"{_pct(m.get(f'mIoU[{key}]'))} / {_pct(m.get(f'mIoU_occ[{key}]'))} | "
            f"{_pct(a.get(f'mIoU[{key}]'))} / {_pct(a.get(f'mIoU_occ[{key}]'))} | – |"
        )
    return lines


def _refiner_training(metrics: Mapping[str, Any]) -> list[str]:
    r = metrics.get("refiner")
    if not r:
        return []
    return [
        "",
        "### The refiner",
        "",
        "```bash",
        *r["commands"],
        "```",
        "",
        f"* Config: `{json.dumps(r['config'])}` ({r['params']:,} parameters).",
        f"* {r['summary']}",
    ]


def _second_world(metrics: Mapping[str, Any]) -> list[str]:
    w = metrics.get("second_world")
    if not w:
        return []
    m, a = w["amodal_head_modal_boxes"], w["amodal_head_amodal_boxes"]
    return [
        "",
        f"**A second synthetic world, never trained on** ({w['description']}; {w['images']} "
        f"images, {m.get('inst_count_occluded')} occluded instances): occluded mIoU "
        f"{_pct(m.get('inst_mIoU_occluded'))} with modal boxes, "
        f"{_pct(a.get('inst_mIoU_occluded'))} with amodal boxes (visible-mask baseline "
        f"{_pct(m.get('inst_baseline_mIoU_occluded'))}); bars: "
        f"{bars_line(w, BARS_SECOND_WORLD)}.",
    ]


def render(metrics: Mapping[str, Any]) -> str:
    test = metrics["test"]
    passed = nano_gate(test)
    cfg = metrics["model_config"]
    s1, s2 = metrics["stage1"], metrics["stage2"]
    visible = test["modal_head_modal_boxes"]
    data = metrics["data"]
    tr, va, te = data["train"], data["val"], data["test"]
    synth = f", {json.dumps(data['synth'])}" if data["synth"] else ""
    config_file = metrics.get("config_file") or "configs/nano.yaml"
    command = f"python -m edge_sameo.train nano --config {config_file}"
    warm = metrics.get("warm_start")
    if warm:
        command += f" --set warm_start={warm}"
        start = (
            f"from the stage-1 model inside `{warm}` (its encoder and modal decoder; see "
            f"`{config_file}` for where it comes from)"
        )
    else:
        command += "     # or: edge-sameo train nano"
        start = "from random weights"
    out = [
        "# edge-sameo nano",
        "",
        "A small EfficientSAM-architecture model (same code as the original, small config) with",
        "two decoders on one image embedding: an **amodal** mask decoder (SAMEO recipe) and a",
        "**modal** (visible) decoder"
        + (
            ", followed by an object-resolution **refiner** that turns each box's crop of the "
            "frame and both decoders' logits into the final amodal and visible masks."
            if "refiner" in metrics
            else "."
        ),
        "",
        "> **Synthetic world only.** These weights were trained on the procedural shapes of",
        "> `edge-sameo synth`. They know that world, not real photos. For real scenes",
        "> use the original EfficientSAM checkpoints (and SAMEO decoder weights, if you have them)",
        "> with any YOLO weights — see the README.",
        "",
        "## Files",
        "",
        "* `nano.pt` — edge-sameo checkpoint (encoder, prompt encoder, amodal `mask_decoder`,",
        "  modal `modal_decoder`): `edge_sameo.checkpoint.load_model(edge_sameo.bundled.NANO)`.",
        "* `nano_sameo_decoder.pt` — the amodal decoder alone in the SAMEO format",
        '  (`{"decoder": …, "config": …}`), loadable over the stage-1 model.',
        "* `metrics.json` — every figure below, the configs and the timings.",
        *(
            [
                "* The refiner (`refiner.*` weights and its config) is inside `nano.pt`; the",
                "  decoders' weights are the stage-2 model's, unchanged.",
            ]
            if "refiner" in metrics
            else []
        ),
        "",
        "## Config",
        "",
        "```json",
        json.dumps(cfg, indent=1),
        "```",
        "",
        "## Data",
        "",
        f"Synthetic world (`SynthConfig` defaults{synth}: 640×480, 2–5 objects, occlusion",
        "targets 0–0.7, one dual image per scene):",
        f"training seed {tr['seed']} ({tr['scenes']} scenes), validation seed {va['seed']}",
        f"({va['scenes']} scenes, model selection), **held-out test seed {te['seed']}**",
        f"({te['scenes']} scenes, {test['images']} images, {test['instances']} instances; never",
        "used for training or selection).",
        "",
        "## Training",
        "",
        "```bash",
        command,
        "```",
        "",
        f"* Stage 1 (full training {start}, visible masks, modal boxes): "
        f"{s1['summary']['epochs']} epochs × {s1['summary']['steps_per_epoch']} steps, batch "
        f"{s1['config']['batch_size']}, lr {s1['config']['lr']}, "
        f"{s1['summary']['elapsed_s'] / 60:.1f} min.",
        f"* Stage 2 (SAMEO recipe: amodal decoder, frozen encoder from the embedding cache, "
        f"modal/amodal boxes {1 - s2['config']['amodal_box_prob']:.0%}/"
        f"{s2['config']['amodal_box_prob']:.0%}): {s2['summary']['epochs']} epochs × "
        f"{s2['summary']['steps_per_epoch']} steps, batch {s2['config']['batch_size']}, lr "
        f"{s2['config']['lr']}, {s2['summary']['elapsed_s'] / 60:.1f} min.",
        f"* Training time: {metrics['train_s'] / 60:.1f} min on 2 shared CPU cores, one torch "
        "thread (loss Dice + 20 · Focal + 0.05 · IoU-L1; see docs/TRAINING.md).",
        *(f"* {note}" for note in metrics.get("notes", [])),
        *_refiner_training(metrics),
        "",
        "## Quality (held-out test seed)",
        "",
        *quality_table(test),
        "",
        f"Modal head (visible masks, modal boxes): mIoU {_pct(visible.get('inst_mIoU'))} over "
        "every instance.",
        "",
        f"Quality bars (amodal masks through the app's path): {bars_line(test)} — "
        f"**{'all met' if passed else 'NOT all met'}**.",
        *_second_world(metrics),
        "",
        "What was measured on the way (the model without a refiner; the refiner's design at an",
        "equal budget): [docs/experiments/README.md](../../../docs/experiments/README.md).",
        "",
        '"Every instance" figures average the IoU of each prompted ground-truth instance; the',
        "evaluator's figures (`edge_sameo.evaluation`) average matched pairs (IoU ≥ 0.5)",
        "only, which drops the baseline's most occluded instances and so flatters it.",
        "Amodal boxes are passed to the predictor as such (`predict(boxes, amodal_boxes=True)`,",
        "as `edge-sameo run --amodal-boxes` does): no mask pixel outside its box is kept.",
        "",
        "The same table on scenes of any other seed (generated, then scored as above):",
        "",
        "```bash",
        "edge-sameo train test --seed 31337 --only nano",
        "```",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_sameo.train.card", description=__doc__)
    p.add_argument("folder", type=Path, nargs="?", default=bundled.MODELS / "nano")
    args = p.parse_args(argv)
    metrics = json.loads((args.folder / "metrics.json").read_text())
    atomic_write_bytes(args.folder / "MODEL_CARD.md", render(metrics).encode())
    print(f"wrote {args.folder / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
