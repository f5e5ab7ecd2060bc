"""Videos: sprites moving over a fixed background behind static pillar occluders.

Every track's centre is a function of the clip time t in [0, 1] (frame i of n is at
t = i / (n - 1)), given by its motion: ``Static``, ``Linear``, ``Curved``, ``Bouncing`` or
``Through`` (straight to a point behind an occluder and on, so the object is fully hidden
on one frame). Centres are (x, y) in image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from edge_sameo.data.synth.config import SeedLike, SynthConfig, VideoConfig, make_rng
from edge_sameo.data.synth.layout import Layout, Scene, render
from edge_sameo.data.synth.sprites import Sprite, background, make_sprite, pillar_sprite

#: (x, y) in image pixels.
Point = tuple[float, float]


@dataclass(frozen=True)
class TimeWarp:
    """Varying speed along a path: u(t) = t + amplitude · sin(2π·cycles·t) / (2π·cycles),
    monotone with u(0) = 0 and u(1) = 1 for |amplitude| < 1; cycles > 0."""

    amplitude: float
    cycles: float

    def __call__(self, t: float) -> float:
        f = self.cycles
        return t + self.amplitude * math.sin(2 * math.pi * f * t) / (2 * math.pi * f)


@dataclass(frozen=True)
class Static:
    """Standing still at ``at``."""

    kind: ClassVar[str] = "static"
    at: Point

    def centre(self, t: float) -> Point:
        """``at`` at every clip time ``t``."""
        return self.at


@dataclass(frozen=True)
class Linear:
    """A straight line from ``start`` (t = 0) to ``end`` (t = 1) at a warped speed."""

    kind: ClassVar[str] = "linear"
    start: Point
    end: Point
    warp: TimeWarp

    def centre(self, t: float) -> Point:
        """The centre (x, y) in image pixels at clip time ``t`` in [0, 1]."""
        u = self.warp(t)
        (x0, y0), (x1, y1) = self.start, self.end
        return x0 + u * (x1 - x0), y0 + u * (y1 - y0)


@dataclass(frozen=True)
class Curved:
    """A quadratic Bézier curve from ``start`` to ``end`` pulled towards ``control``, at a
    warped speed."""

    kind: ClassVar[str] = "curved"
    start: Point
    end: Point
    control: Point
    warp: TimeWarp

    def centre(self, t: float) -> Point:
        """The centre (x, y) in image pixels at clip time ``t`` in [0, 1]."""
        u = self.warp(t)
        q = 1 - u
        (x0, y0), (x1, y1), (cx, cy) = self.start, self.end, self.control
        return q * q * x0 + 2 * q * u * cx + u * u * x1, q * q * y0 + 2 * q * u * cy + u * u * y1


@dataclass(frozen=True)
class Bouncing:
    """Constant ``velocity`` (pixels per clip) from ``start``, reflected at the edges of
    ``box`` (XYXY pixels), at a warped speed."""

    kind: ClassVar[str] = "bouncing"
    start: Point
    velocity: Point
    box: tuple[float, float, float, float]
    warp: TimeWarp

    def centre(self, t: float) -> Point:
        """The centre (x, y) in image pixels at clip time ``t`` in [0, 1]."""
        u = self.warp(t)
        (x0, y0), (vx, vy), (lox, loy, hix, hiy) = self.start, self.velocity, self.box
        return _fold(x0 + vx * u, lox, hix), _fold(y0 + vy * u, loy, hiy)


@dataclass(frozen=True)
class Through:
    """Two straight legs, ``start`` to ``via`` and ``via`` to ``end``, meeting at ``via``
    (an occluder's centre) at time ``t_via`` in (0, 1), each at constant speed."""

    kind: ClassVar[str] = "through"
    start: Point
    end: Point
    via: Point
    t_via: float

    def centre(self, t: float) -> Point:
        """The centre (x, y) in image pixels at clip time ``t`` in [0, 1] (``via`` at
        ``t_via``)."""
        (x0, y0), (x1, y1), (vx, vy), tc = self.start, self.end, self.via, self.t_via
        if t <= tc:
            s = t / tc
            return x0 + s * (vx - x0), y0 + s * (vy - y0)
        s = (t - tc) / (1 - tc)
        return vx + s * (x1 - vx), vy + s * (y1 - vy)


Motion = Static | Linear | Curved | Bouncing | Through


@dataclass(frozen=True)
class Track:
    """A sprite and its motion: ``centre(t)`` for t in [0, 1] gives its centre (x, y)."""

    sprite: Sprite
    motion: Motion

    @property
    def kind(self) -> str:
        """The motion's name: static, linear, curved, bouncing or through."""
        return self.motion.kind

    def centre(self, t: float) -> Point:
        """The sprite's centre (x, y) in image pixels at clip time ``t`` in [0, 1]."""
        return self.motion.centre(t)


def _fold(v: float, lo: float, hi: float) -> float:
    """``v`` reflected into [lo, hi] (a point bouncing between two walls)."""
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
        occluders.append(Track(pillar, Static((cx, cy))))
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
        start, end = pt(), pt()
        # Drawn for every moving object (the stream of random numbers depends on it).
        warp = TimeWarp(float(rng.uniform(0.0, 0.8)), float(rng.integers(1, 3)))
        kind = "through" if hide else ("linear", "curved", "bouncing")[int(rng.integers(3))]
        motion: Motion
        if kind == "through":
            # The meeting time falls on a frame, so that frame shows the object fully hidden.
            last = max(frames - 1, 1)
            tc = min(max(round(rng.uniform(0.35, 0.65) * last), 1), last - 1) / last
            via = occluders[0].centre(0.0)
            motion = Through(start, end, via, tc if 0 < tc < 1 else 0.5)
        elif kind == "curved":
            motion = Curved(start, end, pt(), warp)
        elif kind == "bouncing":
            speed = rng.uniform(0.6, 2.0) * max(w, h)
            ang = rng.uniform(0, 2 * math.pi)
            box = (margin_x, margin_y, w - margin_x, h - margin_y)
            motion = Bouncing(start, (speed * math.cos(ang), speed * math.sin(ang)), box, warp)
        else:
            motion = Linear(start, end, warp)
        tracks.append(Track(sprite, motion))
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
