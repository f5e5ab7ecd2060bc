"""An independent second synthetic world, for evaluation only.

    python benchmarks/second_world.py --out DIR --count N --seed S [--size 640x480]

Writes ``DIR/images/*.png`` and a native COCO-amodal ``DIR/annotations.json`` (the format
of ``edge_sameo.data.generate.generate_dataset``) and prints the JSON path. A model trained
on the first world (``edge_sameo.data.synth``) is scored on this one, never trained on it,
so nothing here comes from the first world's code: shapes, textures, backgrounds,
placement and occluders are drawn by generators of their own.

A scene: a background (two-colour gradient, low-frequency value noise, unannotated line
segments and ellipses), then 2–5 annotated objects back to front (implicit shapes
rasterised on a numpy grid: squircles, crescents, hearts, crosses, arrows, Fourier curves,
capsules, teardrops; longer side 0.2–0.45 of min(W, H)), each with a texture of its own
(value noise, concentric rings, polka dots, hatching, soft two-tone, hue sweep). Every
object gets a target occlusion in [0, 0.7]; later objects are placed (best of a few
tries) so that earlier ones approach it. In 30 % of the scenes an unannotated occluder
(a post, a fence of thin bars, or a large irregular blob) stands in front and hides part
of an object. Masks are exact: amodal = the object's whole shape, visible = amodal minus
every layer in front, both clipped to the image.

Dual annotation: for the most occluded instance of a scene (if its occlusion > 0.05), the
same scene without the layers in front that overlap it is written too, with ``dual_of``
(the scene's image id) and ``dual_track_id`` (the instance now unoccluded).

Scene i is drawn from ``np.random.default_rng([seed, i])`` (PCG64) alone, so a run is a
pure function of the seed and its first scenes equal those of a shorter run.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from edge_sameo.data.coco_amodal import write_amodal_coco
from edge_sameo.data.generate import scene_annotations, write_png

CLASSES: tuple[str, ...] = (
    "squircle", "crescent", "heart", "cross", "arrow", "fourier", "capsule", "teardrop",
)  # fmt: skip
TEXTURES: tuple[str, ...] = ("value_noise", "rings", "dots", "hatch", "two_tone", "hue_sweep")
OCCLUDERS: tuple[str, ...] = ("post", "fence", "blob")

OBJECTS = (2, 5)
#: Longer side of an object, as a fraction of min(W, H).
SCALE = (0.2, 0.45)
#: Per-instance target occlusion.
OCCLUSION = (0.0, 0.7)
#: Placements tried per object (the one nearest the victim's target wins).
PLACEMENT_TRIES = 8
#: Placements avoid pushing any earlier object past this occlusion.
MAX_OCCLUSION = 0.85
OCCLUDER_PROB = 0.3
#: An unannotated occluder is kept only if no instance ends up more hidden than this.
OCCLUDER_MAX_OCCLUSION = 0.9
DUAL_MIN_OCCLUSION = 0.05

Array = NDArray[np.float64]
Implicit = Callable[[Array, Array], NDArray[np.bool_]]
Progress = Callable[[int], object] | None


# --------------------------------------------------------------------------- shapes
#
# A shape is an implicit predicate on canonical coordinates (x, y), roughly within the
# disc of radius 1.5; ``_rasterise`` rotates it, scales it to the wanted longer side and
# samples it at pixel centres.


def _squircle(rng: np.random.Generator) -> Implicit:
    b, n = rng.uniform(0.45, 1.0), rng.uniform(2.5, 6.0)
    return lambda x, y: np.abs(x) ** n + np.abs(y / b) ** n <= 1.0


def _crescent(rng: np.random.Generator) -> Implicit:
    d = rng.uniform(0.35, 0.7)
    r = rng.uniform(max(0.75, 1.05 - d), 1.0)
    return lambda x, y: (x * x + y * y <= 1.0) & ((x - d) ** 2 + y * y > r * r)


def _heart(rng: np.random.Generator) -> Implicit:
    sx = rng.uniform(0.85, 1.15)

    def f(x: Array, y: Array) -> NDArray[np.bool_]:
        u, v = x / sx, -y  # y grows downwards in the image; the heart points down
        q = u * u + v * v - 1.0
        return q * q * q - u * u * v * v * v <= 0.0

    return f


def _cross(rng: np.random.Generator) -> Implicit:
    w = rng.uniform(0.18, 0.35)
    left, right, up, down = rng.uniform(0.55, 1.0, 4)
    return lambda x, y: (
        ((x >= -left) & (x <= right) & (np.abs(y) <= w))
        | ((y >= -up) & (y <= down) & (np.abs(x) <= w))
    )


def _arrow(rng: np.random.Generator) -> Implicit:
    shaft, head, neck = rng.uniform(0.1, 0.25), rng.uniform(0.4, 0.7), rng.uniform(0.0, 0.4)

    def f(x: Array, y: Array) -> NDArray[np.bool_]:
        ay = np.abs(y)
        body = (x >= -1.0) & (x <= neck) & (ay <= shaft)
        tip = (x >= neck) & (x <= 1.0) & (ay <= head * (1.0 - x) / (1.0 - neck))
        return body | tip

    return f


def _fourier(rng: np.random.Generator) -> Implicit:
    k = int(rng.integers(3, 7))
    freqs = np.arange(1, k + 1, dtype=np.float64)
    a = rng.normal(0.0, 1.0, k) / freqs**1.2
    b = rng.normal(0.0, 1.0, k) / freqs**1.2
    total = float(np.abs(a).sum() + np.abs(b).sum())
    amp = rng.uniform(0.3, 0.55) / max(total, 1e-9)
    a, b = a * amp, b * amp
    sy = rng.uniform(0.6, 1.0)

    def f(x: Array, y: Array) -> NDArray[np.bool_]:
        v = y / sy
        phi = np.arctan2(v, x)
        r = 1.0 + sum(
            a[i] * np.cos(freqs[i] * phi) + b[i] * np.sin(freqs[i] * phi) for i in range(k)
        )
        return np.hypot(x, v) <= 0.9 * r

    return f


def _capsule(rng: np.random.Generator) -> Implicit:
    r = rng.uniform(0.2, 0.5)
    half = 1.0 - r
    return lambda x, y: np.hypot(np.maximum(np.abs(x) - half, 0.0), y) <= r


def _teardrop(rng: np.random.Generator) -> Implicit:
    cx, radius = rng.uniform(-0.5, -0.2), rng.uniform(0.4, 0.6)
    dist = 1.0 - cx  # from the tip (1, 0) to the disc's centre
    alpha = math.asin(radius / dist)
    reach = math.sqrt(dist * dist - radius * radius) * math.cos(alpha)
    slope = math.tan(alpha)

    def f(x: Array, y: Array) -> NDArray[np.bool_]:
        along = 1.0 - x
        cone = (along >= 0.0) & (along <= reach) & (np.abs(y) <= along * slope)
        return cone | ((x - cx) ** 2 + y * y <= radius * radius)

    return f


SHAPES: dict[str, Callable[[np.random.Generator], Implicit]] = {
    "squircle": _squircle,
    "crescent": _crescent,
    "heart": _heart,
    "cross": _cross,
    "arrow": _arrow,
    "fourier": _fourier,
    "capsule": _capsule,
    "teardrop": _teardrop,
}

_PROBE = np.linspace(-1.6, 1.6, 97)


def _rasterise(f: Implicit, angle: float, long_side: float) -> NDArray[np.bool_]:
    """(h, w) bool mask, cropped to its box, of shape ``f`` turned by ``angle`` (radians)
    with its longer side about ``long_side`` pixels."""
    c, s = math.cos(angle), math.sin(angle)

    def sample(gx: Array, gy: Array) -> NDArray[np.bool_]:
        xx, yy = np.meshgrid(gx, gy)
        return f(c * xx + s * yy, -s * xx + c * yy)

    probe = sample(_PROBE, _PROBE)
    step = float(_PROBE[1] - _PROBE[0])
    cols, rows = np.flatnonzero(probe.any(axis=0)), np.flatnonzero(probe.any(axis=1))
    x0, x1 = _PROBE[cols[0]] - step, _PROBE[cols[-1]] + step
    y0, y1 = _PROBE[rows[0]] - step, _PROBE[rows[-1]] + step
    extent = max(x1 - x0, y1 - y0) - step
    px = extent / long_side  # canonical units per pixel
    nx, ny = math.ceil((x1 - x0) / px), math.ceil((y1 - y0) / px)
    mask = sample(x0 + (np.arange(nx) + 0.5) * px, y0 + (np.arange(ny) + 0.5) * px)
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return np.ascontiguousarray(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])


# --------------------------------------------------------------------------- textures


def _colour(rng: np.random.Generator, sat: tuple[int, int] = (50, 255)) -> Array:
    """A random RGB colour, (3,) float64 in [0, 255], drawn in HSV."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(*sat), rng.integers(60, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _coords(h: int, w: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates (h, w) float64: x, y."""
    return np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)


def _value_noise(h: int, w: int, rng: np.random.Generator, cells: Sequence[int]) -> Array:
    """(h, w) float64 in [0, 1]: octaves of a random grid upsampled bicubically."""
    total = np.zeros((h, w), np.float32)
    weight = 1.0
    for n in cells:
        grid = rng.random((n, max(2, round(n * w / max(h, 1)))), dtype=np.float32)
        total += weight * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        weight *= 0.5
    lo, hi = float(total.min()), float(total.max())
    return ((total - lo) / max(hi - lo, 1e-6)).astype(np.float64)


def _mix(c1: Array, c2: Array, t: Array) -> Array:
    """(h, w, 3) float64 blend of two colours by weights t (h, w) in [0, 1]."""
    return c1 + t[..., None] * (c2 - c1)


def _texture(kind: str, h: int, w: int, rng: np.random.Generator) -> Array:
    """(h, w, 3) float64 RGB in [0, 255] of texture ``kind``."""
    c1, c2 = _colour(rng), _colour(rng)
    if kind == "value_noise":
        cells = (int(rng.integers(2, 5)), int(rng.integers(6, 12)), int(rng.integers(14, 28)))
        t = _value_noise(h, w, rng, cells)
        return _mix(c1, c2, t)
    x, y = _coords(h, w)
    if kind == "rings":
        cx, cy = rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h
        period, phase = rng.uniform(6.0, 22.0), rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * np.hypot(x - cx, y - cy) / period + phase)
        return _mix(c1, c2, t ** rng.uniform(0.5, 2.0))
    theta = rng.uniform(0, np.pi)
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    if kind == "dots":
        spacing = rng.uniform(9.0, 26.0)
        radius = rng.uniform(0.18, 0.4) * spacing
        du = np.mod(u, spacing) - spacing / 2
        dv = np.mod(v + (np.floor(u / spacing) % 2) * spacing / 2, spacing) - spacing / 2
        return _mix(c1, c2, (np.hypot(du, dv) <= radius).astype(np.float64))
    if kind == "hatch":
        period = rng.uniform(5.0, 14.0)
        duty = rng.uniform(0.15, 0.35)
        lines = np.mod(u, period) < duty * period
        if rng.random() < 0.5:
            lines |= np.mod(v, period) < duty * period
        return _mix(c1, c2, lines.astype(np.float64))
    if kind == "two_tone":
        d = u - rng.uniform(0.3, 0.7) * (abs(w * math.cos(theta)) + abs(h * math.sin(theta)))
        soft = rng.uniform(1.5, 12.0)
        return _mix(c1, c2, 1.0 / (1.0 + np.exp(-np.clip(d / soft, -30, 30))))
    if kind == "hue_sweep":
        span = rng.uniform(40.0, 170.0)
        hue = rng.uniform(0, 180) + span * (u - u.min()) / max(float(np.ptp(u)), 1.0)
        hsv = np.empty((h, w, 3), np.uint8)
        hsv[..., 0] = np.mod(hue, 180).astype(np.uint8)
        hsv[..., 1] = rng.integers(90, 256)
        hsv[..., 2] = rng.integers(110, 256)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float64)
    raise ValueError(f"unknown texture {kind!r}")


def _paint(mask: NDArray[np.bool_], rng: np.random.Generator) -> NDArray[np.uint8]:
    """(h, w, 3) uint8 RGB texture for an object mask (h, w): a random texture, a linear
    light falloff and, for some objects, a darker rim inside the mask."""
    h, w = mask.shape
    tex = _texture(str(rng.choice(TEXTURES)), h, w, rng)
    x, y = _coords(h, w)
    a = rng.uniform(0, 2 * np.pi)
    proj = (x - w / 2) * math.cos(a) + (y - h / 2) * math.sin(a)
    tex *= (1.0 + rng.uniform(0.1, 0.35) * proj / max(h, w))[..., None]
    if rng.random() < 0.4:
        k = int(rng.integers(2, 5))
        inner = cv2.erode(mask.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8))
        tex[mask & ~inner.astype(bool)] *= rng.uniform(0.45, 0.7)
    return np.clip(tex, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- background


def _background(w: int, h: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """(h, w, 3) uint8 RGB: a gradient, low-frequency noise and unannotated clutter."""
    c1, c2 = _colour(rng, (20, 200)), _colour(rng, (20, 200))
    a = rng.uniform(0, 2 * np.pi)
    gx = np.linspace(-0.5, 0.5, w, dtype=np.float32) * math.cos(a)
    gy = np.linspace(-0.5, 0.5, h, dtype=np.float32) * math.sin(a) * h / w
    t = np.clip(gy[:, None] + gx[None, :] + 0.5, 0.0, 1.0)
    noise = _value_noise(h // 4, w // 4, rng, (3, 7)).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR) - 0.5
    img = c1.astype(np.float32) + t[..., None] * (c2 - c1).astype(np.float32)
    img += (rng.uniform(20, 60) * noise)[..., None]
    out = np.clip(img, 0, 255).astype(np.uint8)
    side = min(w, h)
    for _ in range(int(rng.integers(1, 6))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.uniform(0.02, 0.15) * side), int(rng.uniform(0.02, 0.15) * side))
        thick = -1 if rng.random() < 0.5 else int(rng.integers(1, 4))
        colour = tuple(float(v) for v in _colour(rng, (10, 140)))
        cv2.ellipse(out, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, thick,
                    cv2.LINE_AA)  # fmt: skip
    for _ in range(int(rng.integers(3, 11))):
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        colour = tuple(float(v) for v in _colour(rng, (10, 180)))
        cv2.line(out, p, q, colour, int(rng.integers(1, 5)), cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True, eq=False)
class Layer:
    """One drawn layer: mask (h, w) bool and texture (h, w, 3) uint8 RGB with top-left
    ``(x, y)`` in the image (the layer may stick out of it). ``category_id`` 0 is an
    unannotated occluder (``kind`` names it); annotated objects have ``track_id`` 1..K
    (back to front) and a target occlusion."""

    mask: NDArray[np.bool_]
    texture: NDArray[np.uint8]
    x: int
    y: int
    category_id: int
    kind: str
    track_id: int = 0
    target: float | None = None

    def full(self, w: int, h: int) -> NDArray[np.bool_]:
        """(h, w) bool: the layer's mask in the image frame, clipped to it."""
        out = np.zeros((h, w), bool)
        sh, sw = self.mask.shape
        x0, y0, x1, y1 = max(self.x, 0), max(self.y, 0), min(self.x + sw, w), min(self.y + sh, h)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = self.mask[y0 - self.y : y1 - self.y, x0 - self.x : x1 - self.x]
        return out


@dataclass(frozen=True, eq=False)
class WorldInstance:
    """An annotated object of a rendered scene: amodal and visible (H, W) bool masks
    (visible ⊆ amodal, both clipped to the image); depth 0 is the backmost object."""

    amodal: NDArray[np.bool_]
    visible: NDArray[np.bool_]
    category_id: int
    track_id: int
    depth: int
    target_occlusion: float | None

    @property
    def occlusion_rate(self) -> float:
        area = int(np.count_nonzero(self.amodal))
        return 0.0 if area == 0 else 1.0 - int(np.count_nonzero(self.visible)) / area


@dataclass(frozen=True, eq=False)
class WorldScene:
    """A rendered scene: image (H, W, 3) uint8 RGB, instances back to front, and the kinds
    of the unannotated occluders drawn in it."""

    image: NDArray[np.uint8]
    instances: tuple[WorldInstance, ...]
    occluders: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class WorldLayout:
    """A composed scene before drawing: background (H, W, 3) uint8 RGB and layers back to
    front (annotated objects first, then any unannotated occluders)."""

    background: NDArray[np.uint8]
    layers: tuple[Layer, ...]


def render_layout(layout: WorldLayout, keep: Sequence[int] | None = None) -> WorldScene:
    """Draw a layout (optionally only the layers in ``keep``) and derive each annotated
    object's amodal and visible masks from the layer order."""
    h, w = layout.background.shape[:2]
    img = layout.background.copy()
    order = range(len(layout.layers)) if keep is None else sorted(keep)
    fulls: list[NDArray[np.bool_]] = []
    drawn: list[Layer] = []
    for i in order:
        layer = layout.layers[i]
        full = layer.full(w, h)
        if not full.any():
            continue
        sh, sw = layer.mask.shape
        x0, y0 = max(layer.x, 0), max(layer.y, 0)
        x1, y1 = min(layer.x + sw, w), min(layer.y + sh, h)
        tex = layer.texture[y0 - layer.y : y1 - layer.y, x0 - layer.x : x1 - layer.x]
        np.copyto(img[y0:y1, x0:x1], tex, where=full[y0:y1, x0:x1, None])
        fulls.append(full)
        drawn.append(layer)
    covered = np.zeros((h, w), bool)
    instances: list[WorldInstance] = []
    for full, layer in zip(reversed(fulls), reversed(drawn), strict=True):
        if layer.category_id > 0:
            instances.append(
                WorldInstance(
                    amodal=full,
                    visible=full & ~covered,
                    category_id=layer.category_id,
                    track_id=layer.track_id,
                    depth=layer.track_id - 1,
                    target_occlusion=layer.target,
                )
            )
        covered |= full
    occluders = tuple(layer.kind for layer in drawn if layer.category_id == 0)
    return WorldScene(image=img, instances=tuple(reversed(instances)), occluders=occluders)


# --------------------------------------------------------------------------- placement


def _window(
    mask: NDArray[np.bool_], x: int, y: int, w: int, h: int
) -> tuple[NDArray[np.bool_], slice, slice] | None:
    """The part of ``mask`` at (x, y) inside the (h, w) image, with its image slices."""
    sh, sw = mask.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return mask[y0 - y : y1 - y, x0 - x : x1 - x], slice(y0, y1), slice(x0, x1)


def _occlusions_after(
    mask: NDArray[np.bool_],
    x: int,
    y: int,
    visibles: Sequence[NDArray[np.bool_]],
    areas: Sequence[int],
) -> list[float]:
    """Occlusion of each placed object (full-frame visible masks, amodal areas) once
    ``mask`` is drawn at (x, y) in front of them."""
    h, w = visibles[0].shape if visibles else (0, 0)
    win = _window(mask, x, y, w, h)
    out = []
    for vis, area in zip(visibles, areas, strict=True):
        hidden = 0 if win is None else int(np.count_nonzero(vis[win[1], win[2]] & win[0]))
        out.append(1.0 - (int(np.count_nonzero(vis)) - hidden) / max(area, 1))
    return out


def _place(
    mask: NDArray[np.bool_],
    w: int,
    h: int,
    rng: np.random.Generator,
    visibles: Sequence[NDArray[np.bool_]],
    areas: Sequence[int],
    centres: Sequence[tuple[float, float, float]],
    targets: Sequence[float],
) -> tuple[int, int]:
    """Top-left (x, y) for a new object (mask (h', w') bool) in front of the placed ones
    (full-frame visible masks, amodal areas, centres (cx, cy, radius), targets): around
    the placed object furthest below its target occlusion, the best of a few tries."""
    sh, sw = mask.shape
    radius = 0.5 * max(sh, sw)
    current = [
        1.0 - int(np.count_nonzero(v)) / max(a, 1) for v, a in zip(visibles, areas, strict=True)
    ]
    deficits = [t - c for t, c in zip(targets, current, strict=True)]
    victim = int(np.argmax(deficits)) if deficits and max(deficits) > 0.03 else None
    best: tuple[float, int, int] | None = None
    for _ in range(PLACEMENT_TRIES):
        if victim is None:
            cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        else:
            vx, vy, vr = centres[victim]
            dist = rng.uniform(0.15, 1.2) * (vr + radius)
            a = rng.uniform(0, 2 * np.pi)
            cx = float(np.clip(vx + dist * math.cos(a), 0.08 * w, 0.92 * w))
            cy = float(np.clip(vy + dist * math.sin(a), 0.08 * h, 0.92 * h))
        x, y = round(cx - sw / 2), round(cy - sh / 2)
        occ = _occlusions_after(mask, x, y, visibles, areas)
        cost = 0.0 if victim is None else abs(occ[victim] - targets[victim])
        for i, o in enumerate(occ):
            if i != victim:
                cost += max(0.0, o - max(targets[i], current[i]) - 0.05)
            cost += 10.0 * max(0.0, o - MAX_OCCLUSION)
        if best is None or cost < best[0]:
            best = (cost, x, y)
    assert best is not None
    return best[1], best[2]


def _occluder_mask(
    kind: str, w: int, h: int, rng: np.random.Generator, around: tuple[float, float, float]
) -> NDArray[np.bool_]:
    """(h, w) bool mask of an unannotated occluder crossing the object ``around``
    (cx, cy, radius)."""
    out = np.zeros((h, w), np.uint8)
    cx, cy, r = around
    side = min(w, h)
    if kind == "post":
        half = 0.5 * rng.uniform(0.04, 0.1) * w
        x = cx + rng.uniform(-0.5, 0.5) * r
        slant = math.tan(rng.uniform(-0.45, 0.45)) if rng.random() < 0.5 else 0.0
        top = -10.0 if rng.random() < 0.6 else rng.uniform(0.0, max(cy - 0.3 * r, 1.0))
        bottom = h + 10.0
        pts = [
            (x - half + slant * (top - cy), top),
            (x + half + slant * (top - cy), top),
            (x + half + slant * (bottom - cy), bottom),
            (x - half + slant * (bottom - cy), bottom),
        ]
        cv2.fillPoly(out, [np.round(np.array(pts)).astype(np.int32)], 1)
    elif kind == "fence":
        n = int(rng.integers(3, 7))
        gap = rng.uniform(0.05, 0.11) * w
        bar = rng.uniform(0.012, 0.03) * w
        x0 = cx - gap * (n - 1) / 2 + rng.uniform(-0.5, 0.5) * gap
        top = -1 if rng.random() < 0.5 else int(rng.uniform(0.0, 0.3) * h)
        for i in range(n):
            xa = round(x0 + i * gap - bar / 2)
            cv2.rectangle(out, (xa, top), (xa + max(round(bar), 2), h), 1, -1)
        if rng.random() < 0.6:
            rail = max(round(bar * rng.uniform(0.6, 1.2)), 2)
            ya = round(cy + rng.uniform(-0.6, 0.6) * r)
            xl, xr = round(x0 - gap / 2), round(x0 + (n - 0.5) * gap)
            cv2.rectangle(out, (xl, ya), (xr, ya + rail), 1, -1)
    elif kind == "blob":
        size = rng.uniform(0.12, 0.22) * side
        a = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.5, 1.0) * (r + size)
        bx, by = cx + dist * math.cos(a), cy + dist * math.sin(a)
        for _ in range(int(rng.integers(3, 7))):
            ex = bx + rng.normal(0, 0.45) * size
            ey = by + rng.normal(0, 0.45) * size
            axes = (int(rng.uniform(0.3, 0.8) * size), int(rng.uniform(0.3, 0.8) * size))
            cv2.ellipse(out, (round(ex), round(ey)), axes, float(rng.uniform(0, 180)), 0, 360,
                        1, -1)  # fmt: skip
    else:
        raise ValueError(f"unknown occluder {kind!r}")
    return out.astype(bool)


def _occluder_paint(kind: str, mask: NDArray[np.bool_], rng: np.random.Generator) -> Layer:
    """A layer (cropped to its box) for an occluder mask (H, W) bool."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1])
    h, w = crop.shape
    if kind == "blob":
        tex = _mix(_colour(rng), _colour(rng), _value_noise(h, w, rng, (3, 9, 21)))
    else:
        wood = np.array([rng.uniform(90, 170), rng.uniform(55, 110), rng.uniform(20, 70)])
        grain = _value_noise(h, w, rng, (2, 40))
        tex = _mix(wood * 0.6, wood * 1.2, grain)
    return Layer(crop, np.clip(tex, 0, 255).astype(np.uint8), int(x0), int(y0), 0, kind)


def compose_world_scene(rng: np.random.Generator, size: tuple[int, int]) -> WorldLayout:
    """Draw one scene's background, objects (placed for occlusion) and, sometimes, an
    unannotated occluder; ``size`` is (W, H)."""
    w, h = size
    side = min(w, h)
    background = _background(w, h, rng)
    count = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
    layers: list[Layer] = []
    visibles: list[NDArray[np.bool_]] = []
    areas: list[int] = []
    centres: list[tuple[float, float, float]] = []
    targets: list[float] = []
    for k in range(count):
        cat = int(rng.integers(len(CLASSES)))
        shape = SHAPES[CLASSES[cat]](rng)
        angle = rng.uniform(-0.6, 0.6) if CLASSES[cat] == "heart" else rng.uniform(0, 2 * np.pi)
        mask = _rasterise(shape, angle, rng.uniform(*SCALE) * side)
        texture = _paint(mask, rng)
        target = float(rng.uniform(*OCCLUSION))
        if visibles:
            x, y = _place(mask, w, h, rng, visibles, areas, centres, targets)
        else:
            sh, sw = mask.shape
            x = round(rng.uniform(0.15, 0.85) * w - sw / 2)
            y = round(rng.uniform(0.15, 0.85) * h - sh / 2)
        layer = Layer(mask, texture, x, y, cat + 1, CLASSES[cat], k + 1, target)
        full = layer.full(w, h)
        for vis in visibles:
            vis &= ~full
        visibles.append(full.copy())
        areas.append(int(np.count_nonzero(full)))
        sh, sw = mask.shape
        centres.append((x + sw / 2, y + sh / 2, 0.5 * max(sh, sw)))
        targets.append(target)
        layers.append(layer)
    if rng.random() < OCCLUDER_PROB:
        kind = str(rng.choice(OCCLUDERS))
        for _ in range(4):
            around = centres[int(rng.integers(len(centres)))]
            occ_mask = _occluder_mask(kind, w, h, rng, around)
            if not occ_mask.any():
                continue
            before = [int(np.count_nonzero(v)) for v in visibles]
            after = [int(np.count_nonzero(v & ~occ_mask)) for v in visibles]
            worst = max(1.0 - a / max(ar, 1) for a, ar in zip(after, areas, strict=True))
            hides = any(b - a > 0.03 * ar for b, a, ar in zip(before, after, areas, strict=True))
            if hides and worst <= OCCLUDER_MAX_OCCLUSION:
                layers.append(_occluder_paint(kind, occ_mask, rng))
                break
    return WorldLayout(background, tuple(layers))


def world_scene_with_duals(
    layout: WorldLayout, dual: int = 1
) -> tuple[WorldScene, list[tuple[WorldScene, int]]]:
    """Render a layout and its dual scenes: for up to ``dual`` instances with occlusion
    above ``DUAL_MIN_OCCLUSION`` (most occluded first), the scene without the layers in
    front of it that overlap it (objects and occluders). Returns (scene, [(dual, track)])."""
    scene = render_layout(layout)
    h, w = layout.background.shape[:2]
    occluded = [i for i in scene.instances if i.occlusion_rate > DUAL_MIN_OCCLUSION]
    occluded.sort(key=lambda i: (-i.occlusion_rate, i.depth))
    duals = []
    index = {layer.track_id: n for n, layer in enumerate(layout.layers) if layer.track_id}
    for inst in occluded[:dual]:
        n0 = index[inst.track_id]
        drop = {
            n
            for n in range(n0 + 1, len(layout.layers))
            if np.any(layout.layers[n].full(w, h) & inst.amodal)
        }
        keep = [n for n in range(len(layout.layers)) if n not in drop]
        duals.append((render_layout(layout, keep), inst.track_id))
    return scene, duals


def world_scene(seed: int, index: int, size: tuple[int, int] = (640, 480)) -> WorldScene:
    """Scene ``index`` of the world seeded ``seed``, in memory."""
    return render_layout(compose_world_scene(np.random.default_rng([seed, index]), size))


# --------------------------------------------------------------------------- writer


def categories() -> list[dict[str, object]]:
    """COCO ``categories`` of this world (ids 1..len(CLASSES))."""
    return [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]


def generate_second_world(
    out_dir: str | Path,
    count: int,
    seed: int,
    size: tuple[int, int] = (640, 480),
    progress: Progress = None,
) -> Path:
    """Write ``count`` scenes of the second world (plus their dual images) as
    ``images/*.png`` and a native COCO-amodal ``annotations.json`` in ``out_dir``; returns
    the JSON path. ``size`` is (W, H); ``progress`` is called with 1 after each scene."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    w, h = size
    if w < 64 or h < 64:
        raise ValueError(f"size must be at least 64x64, got {w}x{h}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(count):
        layout = compose_world_scene(np.random.default_rng([seed, i]), (w, h))
        scene, duals = world_scene_with_duals(layout)
        items: list[tuple[WorldScene, str, dict[str, Any]]] = [(scene, f"images/{i:06d}.png", {})]
        scene_id = len(images) + 1
        for d, (dual, track) in enumerate(duals):
            extra = {"dual_of": scene_id, "dual_track_id": track}
            items.append((dual, f"images/{i:06d}_dual{d}.png", extra))
        for sc, name, extra in items:
            image_id = len(images) + 1
            write_png(out / name, sc.image)
            images.append(
                {
                    "id": image_id,
                    "file_name": name,
                    "width": w,
                    "height": h,
                    "occluders": list(sc.occluders),
                    **extra,
                }
            )
            # The same COCO-amodal records as the first world's (the format, not the world):
            # its instances carry the fields the writer reads, under the same names.
            first = len(annotations) + 1
            annotations += scene_annotations(sc, image_id, first)  # type: ignore[arg-type]
        if progress is not None:
            progress(1)
    info = {
        "generator": "benchmarks/second_world.py",
        "seed": seed,
        "count": count,
        "size": [w, h],
        "classes": list(CLASSES),
        "textures": list(TEXTURES),
        "occluders": list(OCCLUDERS),
    }
    return write_amodal_coco(out / "annotations.json", images, annotations, categories(), info)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 640x480, got {text!r}") from None
    return w, h


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--count", type=int, required=True, help="number of scenes")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--size", type=_size, default=(640, 480), help="WxH (default 640x480)")
    args = parser.parse_args(argv)
    with tqdm(total=args.count, unit="scene", desc="second world") as bar:
        path = generate_second_world(args.out, args.count, args.seed, args.size, bar.update)
    print(path)


if __name__ == "__main__":
    main()
