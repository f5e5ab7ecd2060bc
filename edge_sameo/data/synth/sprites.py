"""Objects drawn in their own frame: shape masks of the object classes, textures, sprites
(a shape with a texture and a darker rim), upright pillars, and backgrounds with clutter.

Frames: masks are (h, w) bool, textures and images (h, w, 3) uint8 RGB; every function
draws from the generator it is given, in a fixed order (the seeding contract).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.data.synth.config import FREE_CLASS, SynthConfig
from edge_sameo.errors import InputError


@dataclass(frozen=True, eq=False)
class Sprite:
    """An object drawn in its own frame: mask (h, w) bool and texture (h, w, 3) uint8 RGB."""

    mask: NDArray[np.bool_]
    texture: NDArray[np.uint8]
    category_id: int

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.mask.shape[0]), int(self.mask.shape[1])


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


def free_outlines(rng: np.random.Generator) -> list[NDArray[np.float64]]:
    """Closed outlines (each (N, 2), unit scale, centred) whose union is a free-form shape:
    deep radial lobes (beans, kidneys, claws), a jagged polygon with vertices at random radii,
    or the union of two random ellipses or rectangles (L, T and plus-like shapes). Most are
    non-convex: the classes' shapes are nearly all convex, and a refiner trained on them
    alone learns to fill every concavity."""
    theta_rot = rng.uniform(0, 2 * math.pi)
    kind = int(rng.integers(3))
    if kind == 0:
        t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        r = np.ones_like(t)
        for k in rng.choice(np.arange(1, 6), size=int(rng.integers(1, 4)), replace=False):
            r += rng.uniform(0.15, 0.5) * np.sin(k * t + rng.uniform(0, 2 * math.pi))
        r = np.maximum(r, 0.15)
        outlines = [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]
    elif kind == 1:
        n = int(rng.integers(5, 13))
        # Angles at random: where two neighbours are more than half a turn apart (about one
        # polygon in ten) the outline may cross itself (a bow-tie, about 0.6 % of all free
        # shapes). Kept as it is: the bundled refiner's training shards were drawn this way.
        t = np.sort(rng.uniform(0, 2 * math.pi, n))
        r = rng.uniform(0.25, 1.0, n)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
        outlines = [_chaikin(pts, 3) if rng.random() < 0.5 else pts]
    else:
        outlines = []
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        centre = np.zeros(2)
        for _ in range(2):
            a, b = rng.uniform(0.15, 0.35), rng.uniform(0.5, 1.0)
            if rng.random() < 0.5:
                part = np.stack([b * np.cos(t), a * np.sin(t)], axis=1)
            else:
                part = np.array([[-b, -a], [b, -a], [b, a], [-b, a]], np.float64)
            angle = rng.uniform(0, math.pi)
            outlines.append(_rotate(part, angle) + centre)
            # the second part is centred on the first one's long axis: the union is connected
            # (also drawn, unused, after the second part: the seeding of the bundled shards)
            centre = _rotate(np.array([[rng.uniform(-0.8, 0.8) * b, 0.0]]), angle)[0]
    return [_rotate(o, theta_rot) for o in outlines]


def _rasterise(
    outlines: list[NDArray[np.float64]], hole: NDArray[np.float64] | None, size: int
) -> NDArray[np.bool_]:
    """A tight (h, w) bool mask of the union of ``outlines`` minus ``hole``, scaled so that
    its longer side is about ``size`` pixels."""
    lo = np.min([o.min(axis=0) for o in outlines], axis=0)
    extent = float((np.max([o.max(axis=0) for o in outlines], axis=0) - lo).max())
    scale = (size - 1) / max(extent, 1e-6)
    # 4 bits of sub-pixel precision in the rasteriser keep small shapes smooth.
    shift = 4
    to_px = lambda p: np.round((p - lo) * scale * (1 << shift)).astype(np.int32)  # noqa: E731
    px = [to_px(o) for o in outlines]
    w, h = (np.max([o.max(axis=0) for o in px], axis=0) >> shift) + 1
    canvas = np.zeros((int(h), int(w)), np.uint8)
    for o in px:  # one call per outline: overlapping outlines are a union, not an even-odd fill
        cv2.fillPoly(canvas, [o], 1, lineType=cv2.LINE_8, shift=shift)
    if hole is not None:
        cv2.fillPoly(canvas, [to_px(hole)], 0, lineType=cv2.LINE_8, shift=shift)
    mask = canvas.astype(bool)
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return np.ascontiguousarray(mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1])


def shape_mask(name: str, size: int, rng: np.random.Generator) -> NDArray[np.bool_]:
    """A tight (h, w) bool mask of a random shape of class ``name`` whose longer side is
    about ``size`` pixels (rings have a real hole: it is not part of the amodal mask);
    ``name`` ``free``: a free-form shape (:func:`free_outlines`)."""
    if name == FREE_CLASS:
        return _rasterise(free_outlines(rng), None, size)
    outline, hole = _shape_polygons(name, rng)
    return _rasterise([outline], hole, size)


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
    if category is None and cfg.free_shapes > 0.0 and rng.random() < cfg.free_shapes:
        name = FREE_CLASS
    elif name not in cfg.category_names:
        raise InputError(
            f"category {name!r} is not drawn by this SynthConfig: {cfg.category_names} "
            f"({FREE_CLASS!r} needs free_shapes > 0)"
        )
    if size is None:
        lo, hi = cfg.object_scale
        size = round(rng.uniform(lo, hi) * min(cfg.size))
    mask = shape_mask(name, max(int(size), 4), rng)
    h, w = mask.shape
    tex = texture(cfg.textures[int(rng.integers(len(cfg.textures)))], h, w, rng)
    # A darker rim makes the outline of same-coloured overlapping objects readable.
    rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    tex[rim] = (tex[rim] * 0.55).astype(np.uint8)
    return Sprite(mask, tex, cfg.category_names.index(name) + 1)


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
