"""Where does the detector lose objects? Found and correctly named, per occlusion level.

Regenerates the scenes of a synthetic YOLO set (the same seed and scene indices as
``edge-sameo synth yolo`` / ``train.detector``'s held-out set), runs the detector at the
app's confidence threshold and matches its boxes one to one to the ground-truth visible
boxes (IoU >= 0.5, highest IoU first, class ignored). Per occlusion bucket of the ground
truth (1 - visible / amodal area) it reports how many objects were found, how many of
those got the right class, and what the others were called. Usage::

    python benchmarks/detector_by_occlusion.py [--weights W] --seed 9000 --count 300 --json out.json

(``--weights`` defaults to the bundled detector.)

With ``--video`` the scenes are instead the frames of the synthetic clip of that seed
(``edge-sameo demo --seed``'s video, ``--count`` frames), and its static occluders (the
upright pillars, class "box") are reported as a bucket of their own, "pillar". With
``--pillars P`` the still scenes are those of ``edge-sameo synth yolo --pillars P`` (the same
scenes plus, in a fraction P of them, a pillar in front), also with a "pillar" bucket.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_sameo import bundled
from edge_sameo.data.synth import (
    SynthConfig,
    VideoConfig,
    compose_video,
    generate_scene,
    item_seed,
    video_frame,
)
from edge_sameo.evaluation import BUCKETS
from edge_sameo.io import atomic_write_json
from edge_sameo.train.score import detector_imgsz


def _bucket(occlusion: float) -> str:
    for name, upper in BUCKETS:
        if occlusion <= upper:
            return name
    return BUCKETS[-1][0]


#: Pillar heights (fraction of the frame; pillars are 45–80 % tall) for the found-by-height split.
PILLAR_BINS = (0.55, 0.65, 0.72)


def pillar_bin(height: float) -> str:
    """The height bin of a pillar whose visible box is ``height`` of the frame tall."""
    edges = (0.0, *PILLAR_BINS, 1.0)
    for lo, hi in pairwise(edges):
        if height < hi:
            return f"{lo:.2f}-{hi:.2f}"
    return f"{edges[-2]:.2f}-1.00"


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) x (M, 4) XYXY -> (N, M) IoU."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def ground_truth(
    scene: Any, pillars: Collection[int] = (), min_visible: int = 16
) -> list[tuple[np.ndarray, int, float | str]]:
    """(visible box XYXY, class index, occlusion — or "pillar" for the track ids in
    ``pillars``) per object a detector can see: the instances ``yolo_labels`` writes."""
    out: list[tuple[np.ndarray, int, float | str]] = []
    for inst in scene.instances:
        if np.count_nonzero(inst.visible) < min_visible:
            continue
        ys, xs = np.flatnonzero(inst.visible.any(1)), np.flatnonzero(inst.visible.any(0))
        box = np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], np.float64)
        occ = "pillar" if inst.track_id in pillars else inst.occlusion_rate
        out.append((box, inst.category_id - 1, occ))
    return out


def match(gt: np.ndarray, pred: np.ndarray, thr: float = 0.5) -> dict[int, int]:
    """Greedy one-to-one matching, highest IoU first: {gt index: prediction index}."""
    if not len(gt) or not len(pred):
        return {}
    iou = _iou(gt, pred)
    pairs = sorted(zip(*np.nonzero(iou >= thr), strict=True), key=lambda p: -iou[p])
    used_g: set[int] = set()
    used_p: set[int] = set()
    out: dict[int, int] = {}
    for g, p in pairs:
        if g not in used_g and p not in used_p:
            out[int(g)] = int(p)
            used_g.add(g)
            used_p.add(p)
    return out


def _scenes(
    seed: int, count: int, video: bool, pillars: float = 0.0
) -> Iterator[tuple[Any, set[int]]]:
    """(scene, track ids of static pillars) per scene or clip frame."""
    if not video:
        cfg, plain = SynthConfig(pillars=pillars), SynthConfig()
        for i in range(count):
            scene = generate_scene(item_seed(seed, i), cfg)
            # A pillar is drawn last, on top of the scene without it: its track id is the last.
            n_plain = len(generate_scene(item_seed(seed, i), plain).instances) if pillars else 0
            extra = len(scene.instances) > n_plain if pillars else False
            yield scene, ({scene.instances[-1].track_id} if extra else set())
        return
    # The clip of ``SyntheticVideoSource(count, seed, (640, 480))``, the demo's source.
    bg, tracks = compose_video(
        item_seed(seed, 0), SynthConfig(size=(640, 480)), VideoConfig(), count
    )
    static = {i + 1 for i, tr in enumerate(tracks) if tr.kind == "static"}
    for f in range(count):
        yield video_frame(bg, tracks, f / max(count - 1, 1)), static


def measure(
    weights: Path,
    seed: int,
    count: int,
    imgsz: int,
    conf: float,
    video: bool = False,
    pillars: float = 0.0,
) -> dict[str, Any]:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    from ultralytics import YOLO

    model = YOLO(str(weights))
    cfg = SynthConfig()
    names = cfg.classes
    stats: dict[str, Counter[str]] = defaultdict(Counter)
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    pillar_height: dict[str, Counter[str]] = defaultdict(Counter)
    for scene, static_ids in tqdm(_scenes(seed, count, video, pillars), total=count, unit="scene"):
        objects = ground_truth(scene, static_ids)
        res = model.predict(
            np.ascontiguousarray(scene.image[..., ::-1]), imgsz=imgsz, conf=conf, verbose=False
        )[0]
        boxes = res.boxes.xyxy.cpu().numpy().astype(np.float64)
        classes = res.boxes.cls.cpu().numpy().astype(int)
        gt = np.array([o[0] for o in objects]).reshape(-1, 4)
        pairs = match(gt, boxes)
        for g, (_, cls, occ) in enumerate(objects):
            b = occ if isinstance(occ, str) else _bucket(occ)
            stats[b]["objects"] += 1
            if b == "pillar":
                tall = pillar_bin((gt[g, 3] - gt[g, 1]) / scene.image.shape[0])
                pillar_height[tall]["objects"] += 1
                pillar_height[tall]["found"] += g in pairs
            per_class[names[cls]][f"{b}:objects"] += 1
            if g not in pairs:
                stats[b]["called: not found"] += 1
                continue
            stats[b]["found"] += 1
            called = names[classes[pairs[g]]]
            if called == names[cls]:
                stats[b]["named right"] += 1
                per_class[names[cls]][f"{b}:named right"] += 1
            else:
                stats[b][f"called: {called}"] += 1
    bucket_names = [name for name, _ in BUCKETS] + (["pillar"] if video or pillars else [])
    buckets = {}
    for name in bucket_names:
        s = stats[name]
        n = s["objects"]
        buckets[name] = {
            "objects": n,
            "found": s["found"] / n if n else None,
            "named_right": s["named right"] / n if n else None,
            "others_called": {
                k.split(": ", 1)[1]: v
                for k, v in sorted(s.items(), key=lambda kv: -kv[1])
                if k.startswith("called: ")
            },
        }
    classes_out = {
        c: {
            name: (per_class[c][f"{name}:named right"] / per_class[c][f"{name}:objects"])
            if per_class[c][f"{name}:objects"]
            else None
            for name in bucket_names
        }
        for c in names
    }
    return {
        "weights": str(weights),
        "seed": seed,
        "scenes": count,
        "source": "video clip" if video else "still scenes",
        "pillars": 0.0 if video else pillars,
        "imgsz": imgsz,
        "conf": conf,
        "match_iou": 0.5,
        "per_occlusion": buckets,
        "named_right_per_class": classes_out,
        "pillar_found_by_height": {
            k: {"objects": v["objects"], "found": v["found"] / v["objects"]}
            for k, v in sorted(pillar_height.items())
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=bundled.DETECTOR_WEIGHTS)
    p.add_argument("--seed", type=int, default=9000)
    p.add_argument("--count", type=int, default=300)
    p.add_argument(
        "--imgsz", type=int, help="default: the size it was trained at (its metrics.json), else 320"
    )
    p.add_argument("--conf", type=float, default=0.25, help="the app's default")
    p.add_argument(
        "--video", action="store_true", help="frames of the synthetic clip of --seed (the demo's)"
    )
    p.add_argument(
        "--pillars",
        type=float,
        default=0.0,
        help="still scenes with a pillar occluder in this fraction of them (synth --pillars)",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.video and args.pillars:
        p.error("--pillars is for still scenes; the clip has its own pillars")
    imgsz = args.imgsz or detector_imgsz(args.weights)
    result = measure(
        args.weights, args.seed, args.count, imgsz, args.conf, args.video, args.pillars
    )
    print("| occlusion | objects | found | named right | what the others were called |")
    print("|---|---|---|---|---|")
    for name, b in result["per_occlusion"].items():
        others = ", ".join(f"{k} {v}" for k, v in list(b["others_called"].items())[:4])
        found = "–" if b["found"] is None else f"{b['found']:.3f}"
        right = "–" if b["named_right"] is None else f"{b['named_right']:.3f}"
        print(f"| {name} | {b['objects']} | {found} | {right} | {others} |")
    print(json.dumps(result["named_right_per_class"]))
    for height, v in result["pillar_found_by_height"].items():
        print(f"pillars {height} of the frame tall: {v['found']:.2f} of {v['objects']} found")
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
