"""Scenes: sprites placed back to front towards sampled occlusion targets, rendered with
exact amodal and visible masks, and dual annotation (the same scene without the occluders
of an occluded instance).

Frames: images (H, W, 3) uint8 RGB, masks (H, W) bool; a sprite's position is the integer
pixel (x, y) of its top-left corner in the image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edge_sameo.data.synth.config import SeedLike, SynthConfig, item_seed, make_rng
from edge_sameo.data.synth.sprites import Sprite, background, make_sprite, pillar_sprite


@dataclass(frozen=True, eq=False)
class Instance:
    """One annotated object of a rendered scene.

    amodal, visible: (H, W) bool, the complete and the visible mask (visible ⊆ amodal;
    both clipped to the image, since leaving the frame is truncation, not occlusion).
    depth: 0 is the backmost object. target_occlusion: the sampled target, if any.
    """

    amodal: NDArray[np.bool_]
    visible: NDArray[np.bool_]
    category_id: int
    track_id: int
    depth: int
    target_occlusion: float | None = None

    @property
    def occlusion_rate(self) -> float:
        """1 - visible area / amodal area (0 for an empty amodal mask)."""
        area = int(self.amodal.sum())
        return 0.0 if area == 0 else 1.0 - int(self.visible.sum()) / area


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene: image (H, W, 3) uint8 RGB and its instances, back to front."""

    image: NDArray[np.uint8]
    instances: tuple[Instance, ...]


@dataclass(frozen=True, eq=False)
class Layout:
    """A composed scene before rendering: background (H, W, 3) uint8 RGB, sprites back to
    front with their top-left ``positions`` (x, y) and optional target occlusions."""

    background: NDArray[np.uint8]
    sprites: tuple[Sprite, ...]
    positions: tuple[tuple[int, int], ...]
    targets: tuple[float | None, ...] = field(default=())
    track_ids: tuple[int, ...] = field(default=())


# --------------------------------------------------------------------------- geometry


def _overlap(
    mask: NDArray[np.bool_],
    pos: tuple[int, int],
    sprite_mask: NDArray[np.bool_],
    at: tuple[int, int],
) -> int:
    """Pixels shared by a full-size (H, W) mask and a sprite mask placed at ``at``."""
    h, w = sprite_mask.shape
    x0, y0 = max(at[0], pos[0]), max(at[1], pos[1])
    x1 = min(at[0] + w, pos[0] + mask.shape[1])
    y1 = min(at[1] + h, pos[1] + mask.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0
    a = mask[y0 - pos[1] : y1 - pos[1], x0 - pos[0] : x1 - pos[0]]
    b = sprite_mask[y0 - at[1] : y1 - at[1], x0 - at[0] : x1 - at[0]]
    return int(np.count_nonzero(a & b))


def paste_mask(
    hw: tuple[int, int], mask: NDArray[np.bool_], at: tuple[int, int]
) -> NDArray[np.bool_]:
    """A full-size (H, W) bool mask with the (h, w) ``mask`` at top-left ``at`` = (x, y),
    clipped to the image."""
    full = np.zeros(hw, bool)
    h, w = mask.shape
    x0, y0 = max(at[0], 0), max(at[1], 0)
    x1, y1 = min(at[0] + w, hw[1]), min(at[1] + h, hw[0])
    if x1 > x0 and y1 > y0:
        full[y0:y1, x0:x1] = mask[y0 - at[1] : y1 - at[1], x0 - at[0] : x1 - at[0]]
    return full


class _Occupancy:
    """Visible masks of the objects placed so far (sprite frames), to score placements."""

    def __init__(self) -> None:
        self.visible: list[NDArray[np.bool_]] = []
        self.pos: list[tuple[int, int]] = []
        self.area: list[int] = []
        self.target: list[float] = []

    def add(self, mask: NDArray[np.bool_], at: tuple[int, int], target: float) -> None:
        # Covering by the new object happens in each earlier object's own frame.
        for i, vis in enumerate(self.visible):
            h, w = mask.shape
            p = self.pos[i]
            x0, y0 = max(at[0], p[0]), max(at[1], p[1])
            x1, y1 = min(at[0] + w, p[0] + vis.shape[1]), min(at[1] + h, p[1] + vis.shape[0])
            if x1 > x0 and y1 > y0:
                vis[y0 - p[1] : y1 - p[1], x0 - p[0] : x1 - p[0]] &= ~mask[
                    y0 - at[1] : y1 - at[1], x0 - at[0] : x1 - at[0]
                ]
        self.visible.append(mask.copy())
        self.pos.append(at)
        self.area.append(max(int(mask.sum()), 1))
        self.target.append(target)

    def occlusion(self, i: int) -> float:
        return 1.0 - int(np.count_nonzero(self.visible[i])) / self.area[i]

    def occlusion_after(self, i: int, mask: NDArray[np.bool_], at: tuple[int, int]) -> float:
        covered = _overlap(self.visible[i], self.pos[i], mask, at)
        return 1.0 - (int(np.count_nonzero(self.visible[i])) - covered) / self.area[i]

    def cost(self, mask: NDArray[np.bool_], at: tuple[int, int]) -> float:
        return sum(
            abs(self.occlusion_after(i, mask, at) - self.target[i]) for i in range(len(self.pos))
        )


def _clamp_pos(
    cx: float, cy: float, hw: tuple[int, int], bounds: tuple[int, int, int, int]
) -> tuple[int, int]:
    """Top-left of an (h, w) sprite centred at (cx, cy), kept inside XYXY ``bounds``."""
    h, w = hw
    x = round(cx - w / 2)
    y = round(cy - h / 2)
    x = min(max(x, bounds[0]), max(bounds[2] - w, bounds[0]))
    y = min(max(y, bounds[1]), max(bounds[3] - h, bounds[1]))
    return int(x), int(y)


def place_occluder(
    target_mask: NDArray[np.bool_],
    target_at: tuple[int, int],
    occluder_mask: NDArray[np.bool_],
    ratio: float,
    rng: np.random.Generator,
    bounds: tuple[int, int, int, int],
    rays: int = 3,
    steps: int = 7,
) -> tuple[tuple[int, int], float]:
    """Place ``occluder_mask`` relative to the target's bounding box so that it covers about
    ``ratio`` of the target (the Amodal-LVIS recipe).

    Along ``rays`` random directions from the target's box centre, bisect the distance
    (the covered fraction falls as the occluder moves out) and keep the best position.
    bounds: XYXY pixels the occluder must stay inside. Returns (top-left (x, y), achieved
    ratio).
    """
    occ = _Occupancy()
    occ.add(target_mask, target_at, ratio)
    th, tw = target_mask.shape
    oh, ow = occluder_mask.shape
    cx, cy = target_at[0] + tw / 2, target_at[1] + th / 2
    reach = 0.5 * math.hypot(tw + ow, th + oh)
    best = (_clamp_pos(cx, cy, (oh, ow), bounds), math.inf, 0.0)
    for _ in range(rays):
        angle = rng.uniform(0, 2 * math.pi)
        dx, dy = math.cos(angle) * reach, math.sin(angle) * reach
        lo, hi = 0.0, 1.0
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            at = _clamp_pos(cx + mid * dx, cy + mid * dy, (oh, ow), bounds)
            got = occ.occlusion_after(0, occluder_mask, at)
            if abs(got - ratio) < best[1]:
                best = (at, abs(got - ratio), got)
            if got > ratio:
                lo = mid
            else:
                hi = mid
    return best[0], best[2]


# --------------------------------------------------------------------------- scenes


def compose_scene(seed: SeedLike, cfg: SynthConfig) -> Layout:
    """Sample a scene layout: K sprites placed back to front so that each instance's
    occlusion approaches its sampled target (see ``place_occluder``)."""
    rng = make_rng(seed)
    w, h = cfg.size
    bg = background(h, w, rng, int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1)))
    k = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    sprites = [make_sprite(rng, cfg) for _ in range(k)]
    targets = [float(t) for t in rng.uniform(cfg.occlusion[0], cfg.occlusion[1], k)]
    targets[-1] = 0.0  # nothing is in front of the frontmost object
    bounds = (0, 0, w, h)
    occ = _Occupancy()
    positions: list[tuple[int, int]] = []
    for n, sp in enumerate(sprites):
        sh, sw = sp.hw
        candidates = [
            (int(rng.integers(0, max(w - sw, 0) + 1)), int(rng.integers(0, max(h - sh, 0) + 1)))
            for _ in range(cfg.placement_tries if n else 1)
        ]
        if n:
            deficits = [occ.target[i] - occ.occlusion(i) for i in range(n)]
            j = int(np.argmax(deficits))
            if deficits[j] > 0.02:
                # Ask for the remaining deficit of the most under-occluded earlier object.
                want = min(occ.occlusion(j) + deficits[j], 0.98)
                ratio_here = 1.0 - (1.0 - want) * occ.area[j] / max(
                    int(np.count_nonzero(occ.visible[j])), 1
                )
                at, _ = place_occluder(
                    occ.visible[j], occ.pos[j], sp.mask, max(ratio_here, 0.0), rng, bounds
                )
                candidates.append(at)
            at = min(candidates, key=lambda c: occ.cost(sp.mask, c))
        else:
            at = candidates[0]
        occ.add(sp.mask, at, targets[n])
        positions.append(at)
    if cfg.pillars > 0.0 and rng.random() < cfg.pillars:
        # Drawn after everything else, so the objects are those of the scene without it.
        pillar = pillar_sprite(rng, cfg)
        ph = pillar.hw[0]
        j = int(rng.integers(k))
        (jx, _), (_, jw) = positions[j], sprites[j].hw
        cx = jx + jw / 2 + rng.uniform(-0.5, 0.5) * jw
        at = _clamp_pos(cx, rng.uniform(ph / 2, h - ph / 2), pillar.hw, bounds)
        sprites.append(pillar)
        positions.append(at)
        targets.append(0.0)
        k += 1
    return Layout(
        background=bg,
        sprites=tuple(sprites),
        positions=tuple(positions),
        targets=tuple(targets),
        track_ids=tuple(range(1, k + 1)),
    )


def render(layout: Layout, keep: Sequence[int] | None = None) -> Scene:
    """Draw a layout (optionally only the sprites with indices in ``keep``) and derive
    every instance's amodal and visible masks from the layer order."""
    h, w = layout.background.shape[:2]
    img = layout.background.copy()
    order = range(len(layout.sprites)) if keep is None else sorted(keep)
    amodals: list[NDArray[np.bool_]] = []
    idx: list[int] = []
    for i in order:
        sp, (x, y) = layout.sprites[i], layout.positions[i]
        sh, sw = sp.hw
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
        if x1 <= x0 or y1 <= y0:
            continue
        m = sp.mask[y0 - y : y1 - y, x0 - x : x1 - x]
        np.copyto(
            img[y0:y1, x0:x1], sp.texture[y0 - y : y1 - y, x0 - x : x1 - x], where=m[..., None]
        )
        full = np.zeros((h, w), bool)
        full[y0:y1, x0:x1] = m
        amodals.append(full)
        idx.append(i)
    covered = np.zeros((h, w), bool)
    visibles: list[NDArray[np.bool_]] = [covered] * len(amodals)
    for n in range(len(amodals) - 1, -1, -1):
        visibles[n] = amodals[n] & ~covered
        covered |= amodals[n]
    targets = layout.targets or (None,) * len(layout.sprites)
    tracks = layout.track_ids or tuple(range(1, len(layout.sprites) + 1))
    instances = tuple(
        Instance(
            amodal=amodals[n],
            visible=visibles[n],
            category_id=layout.sprites[i].category_id,
            track_id=tracks[i],
            depth=i,
            target_occlusion=targets[i],
        )
        for n, i in enumerate(idx)
    )
    return Scene(image=img, instances=instances)


def generate_scene(seed: SeedLike, cfg: SynthConfig | None = None) -> Scene:
    """One synthetic scene (see ``compose_scene`` and ``render``)."""
    return render(compose_scene(seed, cfg or SynthConfig()))


def dual_scenes(layout: Layout, scene: Scene, cfg: SynthConfig) -> list[tuple[Scene, int]]:
    """Dual annotation: for up to ``cfg.dual`` occluded instances (most occluded first),
    the same scene without the objects in front of that instance that overlap it, so the
    instance appears unoccluded with an identical amodal mask. Returns (scene, track_id)."""
    occluded = [inst for inst in scene.instances if inst.occlusion_rate > cfg.dual_min_occlusion]
    occluded.sort(key=lambda inst: -inst.occlusion_rate)
    out: list[tuple[Scene, int]] = []
    for inst in occluded[: cfg.dual]:
        drop = {
            other.depth
            for other in scene.instances
            if other.depth > inst.depth and np.any(other.amodal & inst.amodal)
        }
        keep = [i for i in range(len(layout.sprites)) if i not in drop]
        out.append((render(layout, keep), inst.track_id))
    return out


def iter_scenes(
    seed: int, cfg: SynthConfig | None = None, start: int = 0, stop: int | None = None
) -> Iterator[Scene]:
    """Scenes ``start, start+1, …`` (forever when ``stop`` is None) of the world seeded
    ``seed``, in memory; scene i is ``generate_scene(item_seed(seed, i), cfg)``."""
    cfg = cfg or SynthConfig()
    i = start
    while stop is None or i < stop:
        yield generate_scene(item_seed(seed, i), cfg)
        i += 1
