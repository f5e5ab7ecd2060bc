"""The synthetic amodal world: procedural scenes and videos with exact amodal ground truth.

Scenes are composed layer by layer (background and clutter, then objects back to front),
so every object's complete (amodal) mask and its visible (modal) mask are known exactly.
Object class = shape family (``CLASS_NAMES``), drawn so that a whole shape names its class
(sharp-cornered boxes, triangles and pentagons, lobed blobs, elliptic discs; scenes made
before 2026-12-01 rounded some boxes and polygons and differ); textures are random.
Everything is a pure function of the seed: the same ``(seed, index)`` gives the same
pixels on every machine (only numpy's PCG64 and OpenCV's integer rasteriser are involved).

Coordinate frames: images are (H, W, 3) uint8 RGB; masks (H, W) bool; a sprite's
position is the integer pixel ``(x, y)`` of its top-left corner in the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError

#: Object classes, one per shape family; category ids are 1-based positions in
#: ``SynthConfig.classes``.
CLASS_NAMES: tuple[str, ...] = ("disc", "box", "polygon", "star", "ring", "bar", "blob")
TEXTURES: tuple[str, ...] = ("flat", "gradient", "stripes", "noise", "checker")

Progress = Callable[[int], object] | None
SeedLike = int | np.random.SeedSequence | np.random.Generator


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    if len(value) != 2:
        raise InputError(f"{name} must be a (min, max) pair, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not lo <= hi:
        raise InputError(f"{name} must satisfy min <= max, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class SynthConfig:
    """What the synthetic world draws.

    size: (W, H) image size in pixels.
    objects: (min, max) annotated objects per scene, inclusive.
    occlusion: (min, max) target occlusion ratio sampled per instance (every instance but
        the frontmost one, which nothing can cover); the achieved ratio is recorded.
    object_scale: (min, max) longer side of an object as a fraction of min(W, H).
    classes: object classes to draw, a subset of ``CLASS_NAMES`` (ids follow this order).
    textures: object textures to draw, a subset of ``TEXTURES``.
    clutter: (min, max) unannotated background strokes and dots per scene.
    dual: dual images per scene, each the same scene without the occluders of one
        occluded instance (0 disables dual annotation).
    dual_min_occlusion: an instance counts as occluded for dual annotation above this.
    placement_tries: random placements tried per object besides the occlusion-seeking ones.
    pillars: probability that a scene also gets an upright pillar in front of its objects,
        drawn like the video world's static occluders (``pillar_sprite``, class ``box``) and
        placed across a random object. At 0 (the default) no extra random number is drawn, so
        scenes are pixel-identical to those made before the option existed; above 0 a scene
        is the same scene plus, sometimes, a pillar.
    """

    size: tuple[int, int] = (640, 480)
    objects: tuple[int, int] = (2, 5)
    occlusion: tuple[float, float] = (0.0, 0.7)
    object_scale: tuple[float, float] = (0.2, 0.45)
    classes: tuple[str, ...] = CLASS_NAMES
    textures: tuple[str, ...] = TEXTURES
    clutter: tuple[int, int] = (3, 12)
    dual: int = 1
    dual_min_occlusion: float = 0.05
    placement_tries: int = 4
    pillars: float = 0.0

    def __post_init__(self) -> None:
        w, h = self.size
        if not (isinstance(w, int) and isinstance(h, int)) or w < 32 or h < 32:
            raise InputError(f"size must be integers (W, H) >= 32, got {self.size!r}")
        lo, hi = _pair(self.objects, "objects")
        if lo < 1 or int(lo) != lo or int(hi) != hi:
            raise InputError(f"objects must be integers >= 1, got {self.objects!r}")
        olo, ohi = _pair(self.occlusion, "occlusion")
        if olo < 0.0 or ohi > 0.95:
            raise InputError(f"occlusion must lie in [0, 0.95], got {self.occlusion!r}")
        slo, shi = _pair(self.object_scale, "object_scale")
        if slo < 0.03 or shi > 0.9:
            raise InputError(f"object_scale must lie in [0.03, 0.9], got {self.object_scale!r}")
        if not self.classes or any(c not in CLASS_NAMES for c in self.classes):
            raise InputError(f"classes must be a non-empty subset of {CLASS_NAMES}")
        if len(set(self.classes)) != len(self.classes):
            raise InputError(f"classes has duplicates: {self.classes!r}")
        if not self.textures or any(t not in TEXTURES for t in self.textures):
            raise InputError(f"textures must be a non-empty subset of {TEXTURES}")
        clo, _ = _pair(self.clutter, "clutter")
        if clo < 0:
            raise InputError(f"clutter must be >= 0, got {self.clutter!r}")
        if self.dual < 0 or self.placement_tries < 1:
            raise InputError("dual must be >= 0 and placement_tries >= 1")
        if not 0.0 <= self.pillars <= 1.0:
            raise InputError(f"pillars is a probability in [0, 1], got {self.pillars!r}")

    @property
    def categories(self) -> list[dict[str, object]]:
        """COCO ``categories`` for these classes (ids 1..len(classes))."""
        return [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(self.classes)
        ]


@dataclass(frozen=True)
class VideoConfig:
    """Motion in the synthetic video world (sizes and classes come from ``SynthConfig``).

    moving: (min, max) moving objects. occluders: (min, max) static occluders in front of
    every moving object. full_occlusion: make one small object pass straight behind the
    first static occluder, so the clip contains frames where it is fully hidden.
    """

    moving: tuple[int, int] = (2, 4)
    occluders: tuple[int, int] = (1, 2)
    full_occlusion: bool = True

    def __post_init__(self) -> None:
        lo, _ = _pair(self.moving, "moving")
        olo, _ = _pair(self.occluders, "occluders")
        if lo < 1 or olo < 0:
            raise InputError("moving must be >= 1 and occluders >= 0")
        if self.full_occlusion and self.occluders[1] < 1:
            raise InputError("full_occlusion needs at least one static occluder")


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
class Sprite:
    """An object drawn in its own frame: mask (h, w) bool and texture (h, w, 3) uint8 RGB."""

    mask: NDArray[np.bool_]
    texture: NDArray[np.uint8]
    category_id: int

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])


@dataclass(frozen=True, eq=False)
class Layout:
    """A composed scene before rendering: background (H, W, 3) uint8 RGB, sprites back to
    front with their top-left ``positions`` (x, y) and optional target occlusions."""

    background: NDArray[np.uint8]
    sprites: tuple[Sprite, ...]
    positions: tuple[tuple[int, int], ...]
    targets: tuple[float | None, ...] = field(default=())
    track_ids: tuple[int, ...] = field(default=())


# --------------------------------------------------------------------------- seeding


def make_rng(seed: SeedLike) -> np.random.Generator:
    """A PCG64 generator from an int, a SeedSequence or an existing generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def item_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of item ``index`` of a run seeded ``seed``: independent of the item count
    and of generation order, so any item can be regenerated alone or in parallel."""
    return np.random.SeedSequence([int(seed), int(index)])


# --------------------------------------------------------------------------- shapes


def _chaikin(pts: NDArray[np.float64], iterations: int) -> NDArray[np.float64]:
    """Round a closed polygon (N, 2) by corner cutting."""
    for _ in range(iterations):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], axis=1).reshape(-1, 2)
    return pts


def _rotate(pts: NDArray[np.float64], angle: float) -> NDArray[np.float64]:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _shape_polygons(
    name: str, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Outline (N, 2) and optional hole of a shape of class ``name``, unit scale, centred."""
    theta_rot = rng.uniform(0, 2 * math.pi)
    hole = None
    # The families are drawn so that a whole shape names its class (a detector can learn
    # it): boxes and polygons keep sharp corners, polygons are irregular triangles or
    # pentagons (4 vertices would read as a box, more as a disc), blobs always have visible lobes.
    if name == "disc":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        ry = rng.uniform(0.55, 1.0)
        pts = np.stack([np.cos(t), ry * np.sin(t)], axis=1)
    elif name == "box":
        a = rng.uniform(0.55, 1.0)
        pts = np.array([[-1, -a], [1, -a], [1, a], [-1, a]], np.float64)
    elif name == "polygon":
        n = int(rng.choice([3, 5]))
        step = 2 * math.pi / n
        t = np.arange(n) * step + rng.uniform(-0.2, 0.2, n) * step
        r = rng.uniform(0.8, 1.0, n)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif name == "star":
        n = int(rng.integers(4, 8))
        t = np.linspace(0, 2 * math.pi, 2 * n, endpoint=False)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.35, 0.6))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif name == "ring":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        ry = rng.uniform(0.7, 1.0)
        pts = np.stack([np.cos(t), ry * np.sin(t)], axis=1)
        k = rng.uniform(0.35, 0.6)
        hole = _rotate(k * pts, theta_rot)
    elif name == "bar":
        a = 1.0 / rng.uniform(3.0, 7.0)
        pts = np.array([[-1, -a], [1, -a], [1, a], [-1, a]], np.float64)
        if rng.random() < 0.5:
            pts = _chaikin(pts, 3)
    elif name == "blob":
        t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        r = np.ones_like(t)
        # One dominant lobe frequency (3 or 4 clear lobes) plus a weaker wobble.
        k_main = int(rng.integers(3, 5))
        r += rng.uniform(0.16, 0.24) * np.sin(k_main * t + rng.uniform(0, 2 * math.pi))
        k_side = int(rng.integers(2, 5))
        r += rng.uniform(0.0, 0.08) * np.sin(k_side * t + rng.uniform(0, 2 * math.pi))
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    else:  # pragma: no cover - SynthConfig validates class names
        raise InputError(f"unknown shape {name!r}")
    return _rotate(pts, theta_rot), hole


def shape_mask(name: str, size: int, rng: np.random.Generator) -> NDArray[np.bool_]:
    """A tight (h, w) bool mask of a random shape of class ``name`` whose longer side is
    about ``size`` pixels (rings have a real hole: it is not part of the amodal mask)."""
    outline, hole = _shape_polygons(name, rng)
    lo = outline.min(axis=0)
    extent = float((outline.max(axis=0) - lo).max())
    scale = (size - 1) / max(extent, 1e-6)
    # 4 bits of sub-pixel precision in the rasteriser keep small shapes smooth.
    shift = 4
    to_px = lambda p: np.round((p - lo) * scale * (1 << shift)).astype(np.int32)  # noqa: E731
    o = to_px(outline)
    w, h = (o.max(axis=0) >> shift) + 1
    canvas = np.zeros((int(h), int(w)), np.uint8)
    cv2.fillPoly(canvas, [o], 1, lineType=cv2.LINE_8, shift=shift)
    if hole is not None:
        cv2.fillPoly(canvas, [to_px(hole)], 0, lineType=cv2.LINE_8, shift=shift)
    mask = canvas.astype(bool)
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return np.ascontiguousarray(mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1])


# --------------------------------------------------------------------------- textures


def _colours(rng: np.random.Generator, soften: float) -> tuple[NDArray[np.float32], ...]:
    """Two random RGB colours, pulled towards one random grey by ``soften`` in [0, 1]."""
    c0, c1 = rng.integers(0, 256, (2, 3)).astype(np.float32)
    if soften > 0:
        grey = np.float32(rng.uniform(60, 200))
        c0, c1 = (1 - soften) * c0 + soften * grey, (1 - soften) * c1 + soften * grey
    return c0, c1


def _ramp(u: NDArray[np.float32]) -> NDArray[np.uint8]:
    lo, hi = float(u.min()), float(u.max())
    return ((u - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8)


def texture(
    name: str, h: int, w: int, rng: np.random.Generator, soften: float = 0.0
) -> NDArray[np.uint8]:
    """An (h, w, 3) uint8 RGB texture of kind ``name`` (one of ``TEXTURES``); ``soften``
    lowers its contrast (used for backgrounds).

    Two-colour textures are drawn as an (h, w) uint8 blend weight mapped through a colour
    look-up table, which keeps full-frame textures cheap on a small CPU.
    """
    c0, c1 = _colours(rng, soften)
    if name == "flat":
        return np.broadcast_to(c0.astype(np.uint8), (h, w, 3)).copy()
    if name == "noise":
        # Mixing before the (linear) upsampling is the same blend on far fewer pixels.
        cell = int(rng.integers(3, 12))
        small = rng.integers(0, 256, (max(1, h // cell + 1), max(1, w // cell + 1), 3))
        mix = rng.uniform(0.3, 0.8) * (1 - soften)
        small = ((1 - mix) * c0 + mix * small.astype(np.float32)).astype(np.uint8)
        return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.uint8)
    angle = rng.uniform(0, math.pi)
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    if name == "checker":
        cell = int(rng.integers(4, 16))
        weight = ((((xs // cell) + (ys // cell)) % 2) * 255).astype(np.uint8)
    else:
        u = xs * np.float32(math.cos(angle)) + ys * np.float32(math.sin(angle))
        if name == "gradient":
            weight = _ramp(u)
        else:  # stripes
            period = np.float32(2 * math.pi / rng.uniform(6, 24))
            weight = ((np.sin(u * period) > 0) * np.uint8(255)).astype(np.uint8)
    lut = (c0 + np.arange(256, dtype=np.float32)[:, None] / 255.0 * (c1 - c0)).astype(np.uint8)
    return np.asarray(cv2.LUT(cv2.merge([weight, weight, weight]), lut[:, None, :]), np.uint8)


def make_sprite(
    rng: np.random.Generator, cfg: SynthConfig, size: int | None = None, category: str | None = None
) -> Sprite:
    """A random object: class from ``cfg.classes`` (or ``category``), longer side ``size``
    pixels (or sampled from ``cfg.object_scale``), random texture from ``cfg.textures``."""
    name = category if category is not None else cfg.classes[int(rng.integers(len(cfg.classes)))]
    if size is None:
        lo, hi = cfg.object_scale
        size = round(rng.uniform(lo, hi) * min(cfg.size))
    mask = shape_mask(name, max(int(size), 4), rng)
    h, w = mask.shape
    tex = texture(cfg.textures[int(rng.integers(len(cfg.textures)))], h, w, rng)
    # A darker rim makes the outline of same-coloured overlapping objects readable.
    rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    tex[rim] = (tex[rim] * 0.55).astype(np.uint8)
    return Sprite(mask, tex, cfg.classes.index(name) + 1)


def pillar_sprite(rng: np.random.Generator, cfg: SynthConfig) -> Sprite:
    """An upright pillar: an axis-aligned rectangle 14–22 % of the image wide and 45–80 % tall
    with a random texture, annotated as class ``box`` (the first class if ``box`` is not
    drawn). Videos use pillars as static occluders a smaller object can hide behind."""
    w, h = cfg.size
    pw, ph = round(rng.uniform(0.14, 0.22) * w), round(rng.uniform(0.45, 0.8) * h)
    tex = texture(cfg.textures[int(rng.integers(len(cfg.textures)))], ph, pw, rng)
    cat = cfg.classes.index("box") + 1 if "box" in cfg.classes else 1
    return Sprite(np.ones((ph, pw), bool), tex, cat)


def background(h: int, w: int, rng: np.random.Generator, clutter: int) -> NDArray[np.uint8]:
    """An (h, w, 3) uint8 RGB background: a low-contrast texture plus ``clutter``
    unannotated strokes and dots (thin, so they do not read as objects)."""
    kind = ("gradient", "noise", "stripes", "flat")[int(rng.integers(4))]
    img = texture(kind, h, w, rng, soften=0.65)
    for _ in range(clutter):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.6:
            pts = rng.integers(0, [w, h], (int(rng.integers(2, 5)), 2)).astype(np.int32)
            cv2.polylines(img, [pts], False, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        else:
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.circle(img, centre, int(rng.integers(1, 5)), colour, -1, cv2.LINE_AA)
    return img


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


# --------------------------------------------------------------------------- video


@dataclass(frozen=True)
class Track:
    """A moving (or static) sprite: ``centre(t)`` for t in [0, 1] gives its centre (x, y)."""

    sprite: Sprite
    kind: str
    params: tuple[float, ...]

    def centre(self, t: float) -> tuple[float, float]:
        p = self.params
        if self.kind == "static":
            return p[0], p[1]
        if self.kind == "through":
            # Two straight legs meeting at the occluder centre (p[4], p[5]) at t = p[6].
            tc = p[6]
            if t <= tc:
                s = t / tc
                return p[0] + s * (p[4] - p[0]), p[1] + s * (p[5] - p[1])
            s = (t - tc) / (1 - tc)
            return p[4] + s * (p[2] - p[4]), p[5] + s * (p[3] - p[5])
        # Varying speed: a monotone time warp u(t) with u(0)=0, u(1)=1 (|a| < 1).
        a, f = p[-2], p[-1]
        u = t + a * math.sin(2 * math.pi * f * t) / (2 * math.pi * f)
        if self.kind == "linear":
            return p[0] + u * (p[2] - p[0]), p[1] + u * (p[3] - p[1])
        if self.kind == "curved":
            q = 1 - u
            return (
                q * q * p[0] + 2 * q * u * p[4] + u * u * p[2],
                q * q * p[1] + 2 * q * u * p[5] + u * u * p[3],
            )
        # bouncing: constant velocity reflected inside [lo, hi] per axis.
        x0, y0, vx, vy, lox, hix, loy, hiy = p[:8]
        return _fold(x0 + vx * u, lox, hix), _fold(y0 + vy * u, loy, hiy)


def _fold(v: float, lo: float, hi: float) -> float:
    span = max(hi - lo, 1e-6)
    m = (v - lo) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


def compose_video(
    seed: SeedLike, cfg: SynthConfig, vcfg: VideoConfig, frames: int
) -> tuple[NDArray[np.uint8], list[Track]]:
    """Sample a video world of ``frames`` frames (frame i is at t = i / (frames - 1)):
    background (H, W, 3) uint8 RGB and tracks back to front (moving objects, then static
    occluders in front of all of them)."""
    rng = make_rng(seed)
    w, h = cfg.size
    bg = background(h, w, rng, int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1)))
    n_occ = int(rng.integers(vcfg.occluders[0], vcfg.occluders[1] + 1))
    if vcfg.full_occlusion:
        n_occ = max(n_occ, 1)
    n_mov = int(rng.integers(vcfg.moving[0], vcfg.moving[1] + 1))
    occluders: list[Track] = []
    for _ in range(n_occ):
        # Static occluders are upright pillars: axis-aligned so a smaller object can hide
        # completely behind one.
        pillar = pillar_sprite(rng, cfg)
        ph, pw = pillar.hw
        cx, cy = rng.uniform(pw / 2, w - pw / 2), rng.uniform(ph / 2, h - ph / 2)
        occluders.append(Track(pillar, "static", (cx, cy)))
    tracks: list[Track] = []
    margin_x, margin_y = 0.1 * w, 0.1 * h
    for n in range(n_mov):
        hide = vcfg.full_occlusion and n == 0
        if hide:
            pillar_hw = occluders[0].sprite.hw
            size = int(0.75 * min(pillar_hw))
            sprite = make_sprite(rng, cfg, size=size)
        else:
            sprite = make_sprite(rng, cfg)
        pt = lambda: (rng.uniform(margin_x, w - margin_x), rng.uniform(margin_y, h - margin_y))  # noqa: E731
        (x0, y0), (x1, y1) = pt(), pt()
        warp = (float(rng.uniform(0.0, 0.8)), float(rng.integers(1, 3)))
        kind = "through" if hide else ("linear", "curved", "bouncing")[int(rng.integers(3))]
        if kind == "through":
            ox, oy = occluders[0].params
            # The meeting time falls on a frame, so that frame shows the object fully hidden.
            last = max(frames - 1, 1)
            tc = min(max(round(rng.uniform(0.35, 0.65) * last), 1), last - 1) / last
            params: tuple[float, ...] = (x0, y0, x1, y1, ox, oy, tc if 0 < tc < 1 else 0.5)
        elif kind == "curved":
            cxp, cyp = pt()
            params = (x0, y0, x1, y1, cxp, cyp, *warp)
        elif kind == "bouncing":
            speed = rng.uniform(0.6, 2.0) * max(w, h)
            ang = rng.uniform(0, 2 * math.pi)
            params = (
                x0, y0, speed * math.cos(ang), speed * math.sin(ang),
                margin_x, w - margin_x, margin_y, h - margin_y, *warp,
            )  # fmt: skip
        else:
            params = (x0, y0, x1, y1, *warp)
        tracks.append(Track(sprite, kind, params))
    return bg, tracks + occluders


def video_frame(bg: NDArray[np.uint8], tracks: Sequence[Track], t: float) -> Scene:
    """Render the video world at time t in [0, 1]; instance track ids are 1-based track
    indices (stable over the clip) and objects entirely outside the frame are left out."""
    positions = []
    for tr in tracks:
        cx, cy = tr.centre(t)
        sh, sw = tr.sprite.hw
        positions.append((round(cx - sw / 2), round(cy - sh / 2)))
    layout = Layout(
        background=bg,
        sprites=tuple(tr.sprite for tr in tracks),
        positions=tuple(positions),
        track_ids=tuple(range(1, len(tracks) + 1)),
    )
    return render(layout)
