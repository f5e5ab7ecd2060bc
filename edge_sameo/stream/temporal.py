"""Temporal stability per track: smoothing of amodal masks across frames, and a short
persistence of a track's amodal mask while its object is fully hidden.

Both follow the object: the previous mask is shifted by the motion of the track's amodal
mask before it is blended in. A missing object is carried on at its smoothed velocity,
slowing down, with the amodal mask it had when it was best seen (most visible pixels): a
mask completed from a sliver, just before it vanished, is the least reliable one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError
from edge_sameo.masks import mask_iou, mask_to_box
from edge_sameo.stream.objects import ObjectResult


@dataclass(frozen=True)
class TemporalConfig:
    """``smoothing``: weight of the (motion-compensated) previous soft mask, 0 = off.
    ``persistence``: frames a missing track's amodal mask is kept, 0 = off."""

    smoothing: float = 0.0
    persistence: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise InputError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.persistence < 0:
            raise InputError(f"persistence must be >= 0, got {self.persistence}")

    @property
    def enabled(self) -> bool:
        return self.smoothing > 0 or self.persistence > 0


@dataclass
class _Track:
    soft: NDArray[np.float32]
    centre: NDArray[np.float32]
    last: ObjectResult
    #: The amodal mask (soft) when the object was best seen, its centre, and the most
    #: visible pixels the object had.
    ref: NDArray[np.float32]
    ref_centre: NDArray[np.float32]
    ref_seen: int
    velocity: NDArray[np.float32] = field(default_factory=lambda: np.zeros(2, np.float32))
    missing: int = 0
    steps: int = 0
    #: The centre at the last reliable observation and the frames since: motion is measured
    #: from there (``centre`` may be a prediction).
    anchor: NDArray[np.float32] | None = None
    since: int = 0


#: Weight of the previous velocity in a track's smoothed per-frame motion.
VELOCITY_MOMENTUM = 0.6
#: Per-frame factor on a hidden track's velocity while it is carried.
VELOCITY_DECAY = 0.98
#: A track's carried mask is its latest one with at least this share of the most visible
#: pixels it ever had: from when it was (about) best seen, yet following changes of shape.
FRESH_SHARE = 0.9
#: Below this share of its most visible pixels, a track's motion is not measured from its
#: mask (the track moves on at its velocity).
RELIABLE_SHARE = 0.5
#: A carried track ends when a current object's amodal mask overlaps its mask this much.
REAPPEARED_IOU = 0.5


def _centre(box: NDArray[np.float32], amodal: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Centre of the amodal mask's box (steady while the object slides behind an occluder,
    where the visible box shrinks), or of ``box`` when the mask is empty."""
    if amodal.any():
        box = mask_to_box(amodal)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)


def _translate(mask: NDArray[np.float32], d: NDArray[np.float32]) -> NDArray[np.float32]:
    if not d.any():
        return mask
    m = np.array([[1, 0, d[0]], [0, 1, d[1]]], np.float32)
    h, w = mask.shape
    return np.asarray(cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR), np.float32)


class TemporalFilter:
    """Stateful per-track filter; call :meth:`update` once per frame in order."""

    def __init__(self, config: TemporalConfig) -> None:
        self.config = config
        self.tracks: dict[int, _Track] = {}

    def update(self, objects: list[ObjectResult]) -> list[ObjectResult]:
        if not self.config.enabled:
            return objects
        seen = set()
        for obj in objects:
            if obj.track_id >= 0:
                seen.add(obj.track_id)
                self._observe(obj)
        out = list(objects)
        for tid in list(self.tracks):
            if tid not in seen:
                carried = self._carry(tid, objects)
                if carried is not None:
                    out.append(carried)
        return out

    def _observe(self, obj: ObjectResult) -> None:
        c = _centre(obj.box, obj.amodal)
        cur = obj.amodal.astype(np.float32)
        visible = int(np.count_nonzero(obj.visible))
        tr = self.tracks.get(obj.track_id)
        if tr is None:
            self.tracks[obj.track_id] = _Track(cur, c, obj, cur, c, visible)
            return
        a = self.config.smoothing
        if a > 0 and tr.soft.shape == cur.shape:
            soft = (a * _translate(tr.soft, c - tr.centre) + (1 - a) * cur).astype(np.float32)
            obj.amodal = soft >= 0.5
        else:
            soft = cur
        anchor = tr.centre if tr.anchor is None else tr.anchor
        if visible >= RELIABLE_SHARE * tr.ref_seen:
            step = (c - anchor) / (tr.since + 1)
            # Smoothed over frames (one frame's step is noisy where the mask changes); the
            # first step sets it.
            keep = VELOCITY_MOMENTUM if tr.steps else 0.0
            tr.velocity = (keep * tr.velocity + (1 - keep) * step).astype(np.float32)
            tr.steps += 1
            tr.centre, tr.anchor, tr.since = c, c, 0
        else:
            # Mostly hidden: a mask completed from few pixels says little about where the
            # object is; move it on at its velocity (``centre`` is last frame's estimate).
            tr.centre = tr.centre + tr.velocity
            tr.anchor, tr.since = anchor, tr.since + 1
        if visible >= FRESH_SHARE * tr.ref_seen or tr.ref.shape != cur.shape:
            tr.ref, tr.ref_centre, tr.ref_seen = soft, c, max(visible, tr.ref_seen)
        tr.soft, tr.last, tr.missing = soft, obj, 0

    def _carry(self, tid: int, objects: list[ObjectResult]) -> ObjectResult | None:
        tr = self.tracks[tid]
        tr.missing += 1
        tr.since += 1
        if tr.missing > self.config.persistence:
            del self.tracks[tid]
            return None
        # Carry the hidden object on at its velocity, slowing down (what is behind an
        # occluder tends to stay there): fully occluded, so its visible mask is empty and
        # the whole amodal mask is the occluded part.
        tr.velocity = (tr.velocity * VELOCITY_DECAY).astype(np.float32)
        tr.centre = tr.centre + tr.velocity
        shift = tr.centre - tr.ref_centre
        tr.soft = _translate(tr.ref, shift)
        amodal = tr.soft >= 0.5
        # Back under another track id: a current object is this one.
        if not amodal.any() or any(mask_iou(amodal, o.amodal) > REAPPEARED_IOU for o in objects):
            del self.tracks[tid]
            return None
        return ObjectResult(
            track_id=tid,
            class_id=tr.last.class_id,
            class_name=tr.last.class_name,
            score=tr.last.score * 0.9**tr.missing,
            box=mask_to_box(amodal),
            amodal=amodal,
            visible=np.zeros_like(amodal),
            persisted=True,
        )
