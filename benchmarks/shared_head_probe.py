"""Probe (2026-12-07): can a box head on the nano encoder's frozen embedding replace YOLO?

A CenterNet-style head (dilated 3x3 convolutions on the 16x16x64 embedding) predicts, per
cell, an objectness heat map at the visible box's centre, the visible and the amodal box
(distances to the four sides, in cells) and the class. If it detected as well as the
bundled YOLO, the app would save the whole detect stage and could prompt with amodal boxes.

    P=benchmarks/shared_head_probe.py D=runs/shead
    python $P gen --seed 1000 --stop 8000 --out $D/tr0.npz &   # two processes, ~4 min
    python $P gen --seed 1000 --start 8000 --stop 16000 --out $D/tr1.npz
    python $P gen --seed 9000 --stop 300 --out $D/test.npz
    python $P train --train $D/tr0.npz,$D/tr1.npz --test $D/test.npz --minutes 8
    python $P yolo --test $D/test.npz

Both report class-agnostic box AP50 (COCO's 101-point interpolation) on the same held-out
scenes (seed 9000, 20 % with a pillar). Result: docs/experiments/streaming.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

W, H, G = 640.0, 480.0, 16
CW, CH = W / G, H / G  # a cell in frame pixels (the encoder input is the stretched frame)
Det = tuple[float, list[float], list[float], int]


def _box(mask: Any) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def gen(seed: int, start: int, stop: int, out: str, pillars: float) -> None:
    """Scenes -> embeddings (float16) and rows (visible xyxy, amodal xyxy, class, occlusion)."""
    from edge_sameo.bundled import NANO
    from edge_sameo.checkpoint import load_model
    from edge_sameo.data.synth.config import SynthConfig, item_seed
    from edge_sameo.data.synth.layout import generate_scene
    from edge_sameo.preprocess import image_to_tensor, normalize_resized

    model = load_model(NANO).eval()
    cfg = SynthConfig(pillars=pillars)
    embs: list[Any] = []
    rows: list[Any] = []
    batch: list[Any] = []

    def flush() -> None:
        x = torch.cat([normalize_resized(image_to_tensor(im), 256) for im in batch])
        with torch.inference_mode():
            embs.append(model.encode(x).to(torch.float16).numpy())
        batch.clear()

    for i in range(start, stop):
        scene = generate_scene(item_seed(seed, i), cfg)
        batch.append(scene.image)
        r = [
            _box(o.visible) + _box(o.amodal) + [o.category_id, o.occlusion_rate]
            for o in scene.instances
            if o.visible.sum() >= 20  # an object nothing of which shows cannot be detected
        ]
        rows.append(np.array(r, np.float32).reshape(-1, 10))
        if len(batch) == 16:
            flush()
    if batch:
        flush()
    np.savez(out, emb=np.concatenate(embs), boxes=np.array(rows, dtype=object))


class Head(nn.Module):
    def __init__(self, width: int = 96, depth: int = 4, classes: int = 9) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 64
        for i in range(depth):
            d = (1, 2, 4)[i % 3]
            layers += [nn.Conv2d(c, width, 3, padding=d, dilation=d), nn.BatchNorm2d(width)]
            layers.append(nn.ReLU(inplace=True))
            c = width
        self.trunk = nn.Sequential(*layers)
        self.heat = nn.Conv2d(width, 1, 1)
        self.box = nn.Conv2d(width, 8, 1)  # visible ltrb, amodal ltrb, in cells
        self.cls = nn.Conv2d(width, classes, 1)
        nn.init.constant_(self.heat.bias, -2.19)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.trunk(x)
        return self.heat(f), F.softplus(self.box(f)), self.cls(f)


def targets(rows: Any) -> tuple[Any, Any, Any, Any]:
    """Gaussian heat at each visible box's centre cell; boxes and classes on the cells
    where that Gaussian is > 0.3 (the nearer object wins), weighted by it."""
    heat = np.zeros((G, G), np.float32)
    box = np.zeros((8, G, G), np.float32)
    wgt = np.zeros((G, G), np.float32)
    cls = np.zeros((G, G), np.int64)
    yy, xx = np.mgrid[0:G, 0:G] + 0.5
    for r in rows:
        vx0, vy0, vx1, vy1 = r[:4]
        cx, cy = math.floor((vx0 + vx1) / 2 / CW) + 0.5, math.floor((vy0 + vy1) / 2 / CH) + 0.5
        sx, sy = max(0.5, (vx1 - vx0) / CW / 6), max(0.5, (vy1 - vy0) / CH / 6)
        g = np.exp(-((xx - cx) ** 2) / (2 * sx * sx) - ((yy - cy) ** 2) / (2 * sy * sy))
        heat = np.maximum(heat, g)
        take = (g > 0.3) & (g > wgt)
        for k in (0, 4):
            x0, y0, x1, y1 = r[k : k + 4]
            sides = (xx - x0 / CW, yy - y0 / CH, x1 / CW - xx, y1 / CH - yy)
            for j, s in enumerate(sides):
                box[k + j][take] = s[take]
        wgt[take] = g[take]
        cls[take] = int(r[8])
    return heat[None], box, wgt, cls


def focal(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss."""
    p = torch.sigmoid(pred).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p**2 * (1 - gt) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def decode(
    heat: torch.Tensor, box: torch.Tensor, cls: torch.Tensor, thr: float = 0.05
) -> list[Det]:
    """Peaks of one image's heat map (3x3 maxima above ``thr``, the best 20)."""
    h = torch.sigmoid(heat)
    peaks = (F.max_pool2d(h[None], 3, 1, 1)[0] == h) & (h > thr)
    ys, xs = torch.nonzero(peaks[0], as_tuple=True)
    s = h[0, ys, xs]
    out: list[Det] = []
    for i in torch.argsort(-s)[:20].tolist():
        y, x = int(ys[i]), int(xs[i])
        b = box[:, y, x].tolist()
        cx, cy = x + 0.5, y + 0.5
        xyxy = [
            [(cx - b[k]) * CW, (cy - b[k + 1]) * CH, (cx + b[k + 2]) * CW, (cy + b[k + 3]) * CH]
            for k in (0, 4)
        ]
        out.append((float(s[i]), xyxy[0], xyxy[1], int(cls[:, y, x].argmax())))
    return out


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / u if u > 0 else 0.0


def ap50(dets: list[list[Det]], gts: list[Any], amodal: bool) -> float:
    """Class-agnostic AP at IoU 0.5, COCO's 101-point interpolation."""
    k = 4 if amodal else 0
    scored: list[tuple[float, bool]] = []
    for d, g in zip(dets, gts, strict=True):
        gt_boxes = [list(r[k : k + 4]) for r in g]
        used = [False] * len(gt_boxes)
        for s, vis, amo, _ in sorted(d, key=lambda t: -t[0]):
            cand = [
                (iou(amo if amodal else vis, q), j) for j, q in enumerate(gt_boxes) if not used[j]
            ]
            best = max(cand, default=(0.0, -1))
            if best[0] >= 0.5:
                used[best[1]] = True
            scored.append((s, best[0] >= 0.5))
    scored.sort(key=lambda t: -t[0])
    hit = np.array([h for _, h in scored], bool)
    tp, fp = np.cumsum(hit), np.cumsum(~hit)
    recall = tp / max(1, sum(len(g) for g in gts))
    precision = np.maximum.accumulate((tp / np.maximum(tp + fp, 1))[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in idx]))


def _load(path: str) -> tuple[Any, list[Any]]:
    d = np.load(path, allow_pickle=True)
    return d["emb"], list(d["boxes"])


def evaluate(model: Head, emb: Any, gts: list[Any]) -> tuple[float, float]:
    model.eval()
    dets: list[list[Det]] = []
    with torch.inference_mode():
        for i in range(0, len(emb), 64):
            hm, bx, cl = model(torch.from_numpy(emb[i : i + 64].astype(np.float32)))
            dets += [decode(hm[j], bx[j], cl[j]) for j in range(len(hm))]
    model.train()
    return ap50(dets, gts, False), ap50(dets, gts, True)


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    parts = [_load(p) for p in args.train.split(",")]
    emb = np.concatenate([e for e, _ in parts])
    boxes = [b for _, bs in parts for b in bs]
    test_emb, test_boxes = _load(args.test)
    heat, box, wgt, cls = (
        torch.from_numpy(np.stack(t)) for t in zip(*map(targets, boxes), strict=True)
    )
    x = torch.from_numpy(emb)
    model = Head(args.width, args.depth)
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    t0, step, log, next_eval, budget = time.time(), 0, [], 60.0, args.minutes * 60
    while time.time() - t0 < budget:
        for group in opt.param_groups:  # cosine over the wall-clock budget
            group["lr"] = 1e-3 * (1 + math.cos(math.pi * min(1.0, (time.time() - t0) / budget)))
        idx = torch.randint(0, len(x), (64,))
        hm, b, c = model(x[idx].float())
        w = wgt[idx]
        n = w.sum().clamp(min=1)
        reg = (F.smooth_l1_loss(b, box[idx], reduction="none", beta=0.2).sum(1) * w).sum() / n
        ce = (F.cross_entropy(c, cls[idx], reduction="none") * w).sum() / n
        loss = focal(hm, heat[idx]) + 0.5 * reg + 0.3 * ce
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if time.time() - t0 > next_eval or time.time() - t0 >= budget:
            next_eval += 60
            vis, amo = evaluate(model, test_emb, test_boxes)
            log.append(
                {
                    "s": round(time.time() - t0),
                    "step": step,
                    "ap50_visible": vis,
                    "ap50_amodal": amo,
                }
            )
            print(json.dumps(log[-1]), flush=True)


def yolo(args: argparse.Namespace) -> None:
    from edge_sameo.bundled import DETECTOR
    from edge_sameo.data.synth.config import SynthConfig, item_seed
    from edge_sameo.data.synth.layout import generate_scene
    from edge_sameo.stream.detectors import YOLODetector
    from edge_sameo.stream.sources import Frame

    _, gts = _load(args.test)
    det = YOLODetector(DETECTOR, conf=0.01, tracker=None)
    dets: list[list[Det]] = []
    for i in range(len(gts)):
        image = generate_scene(item_seed(9000, i), SynthConfig(pillars=0.2)).image
        r = det(Frame(index=i, timestamp=0.0, image=image))
        dets.append(
            [
                (float(s), [*map(float, b)], [*map(float, b)], 0)
                for b, s in zip(r.boxes, r.scores, strict=True)
            ]
        )
    print(
        json.dumps(
            {
                "ap50_visible": ap50(dets, gts, False),
                "ap50_amodal_from_visible_boxes": ap50(dets, gts, True),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--start", type=int, default=0)
    g.add_argument("--stop", type=int, required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--pillars", type=float, default=0.2)
    t = sub.add_parser("train")
    t.add_argument("--train", required=True)
    t.add_argument("--test", required=True)
    t.add_argument("--minutes", type=float, default=8.0)
    t.add_argument("--width", type=int, default=96)
    t.add_argument("--depth", type=int, default=4)
    y = sub.add_parser("yolo")
    y.add_argument("--test", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "gen":
        gen(args.seed, args.start, args.stop, args.out, args.pillars)
    elif args.cmd == "train":
        train(args)
    else:
        yolo(args)


if __name__ == "__main__":
    main()
