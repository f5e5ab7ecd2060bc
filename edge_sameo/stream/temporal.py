"""Temporal stability per track: smoothing of amodal masks across frames, a short
persistence of a track's amodal mask while its object is fully hidden, and a shape memory
that completes a partly hidden object with the shape it had when it was best seen.

All three follow the object: the previous mask is shifted by the motion of the track's
amodal mask before it is blended in. A missing object is carried on at its smoothed velocity,
slowing down, with the amodal mask it had when it was best seen (most visible pixels): a
mask completed from a sliver, just before it vanished, is the least reliable one. The shape
memory places that best-seen mask where it holds the object's visible pixels now.
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
    ``persistence``: frames a missing track's amodal mask is kept, 0 = off.
    ``shape_memory``: a track more hidden than when it was best seen gets that best-seen
    amodal mask, aligned to its visible pixels, added to its amodal mask (when the two
    agree; see :func:`align_shape`)."""

    smoothing: float = 0.0
    persistence: int = 0
    shape_memory: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing < 1.0:
            raise InputError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.persistence < 0:
            raise InputError(f"persistence must be >= 0, got {self.persistence}")

    @property
    def enabled(self) -> bool:
        return self.smoothing > 0 or self.persistence > 0 or self.shape_memory


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
    #: The frame (count of updates) the track was first observed in.
    born: int = 0


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
#: A carried track also ends when a track of its class, born since the carried one went
#: missing, has its centre within this many times the carried box's longer side of the
#: carried box's centre: the tracker gave the object back under a new id (0: off).
REBORN_REACH = 1.0
#: Shape memory: applied while a track shows fewer than this share of its most visible
#: pixels; the best-seen mask is searched this many pixels around its predicted place,
#: must hold this share of the visible pixels, and must overlap (IoU) the decoder's amodal
#: mask this much. Chosen on demo seeds 3001-3005 (docs/experiments/streaming.md).
MEMORY_HIDDEN_SHARE = 0.9
MEMORY_SEARCH_PX = 16
MEMORY_COVER = 0.95
MEMORY_AGREE_IOU = 0.6
#: Shifts that hold at least this share of the best shift's visible pixels count as ties,
#: and the one nearest the predicted place wins: a prior on motion against the few pixels a
#: visible edge may be off (exact ties only measured the same on seeds 3001-3005).
MEMORY_TIE = 0.98


def _centre(box: NDArray[np.float32], amodal: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Centre of the amodal mask's box (steady while the object slides behind an occluder,
    where the visible box shrinks), or of ``box`` when the mask is empty."""
    return _box_centre(mask_to_box(amodal) if amodal.any() else box)


def _box_centre(box: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float32)


def _translate(mask: NDArray[np.float32], d: NDArray[np.float32]) -> NDArray[np.float32]:
    if not d.any():
        return mask
    m = np.array([[1, 0, d[0]], [0, 1, d[1]]], np.float32)
    h, w = mask.shape
    return np.asarray(cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_LINEAR), np.float32)


def align_shape(
    ref: NDArray[np.bool_], visible: NDArray[np.bool_], predicted: tuple[int, int], search: int
) -> tuple[tuple[int, int], float] | None:
    """The integer shift (dx, dy) of the (H, W) mask ``ref`` that holds most of the
    ``visible`` pixels, searched within ``search`` pixels of ``predicted`` (the nearest to
    it among shifts within :data:`MEMORY_TIE` of the best), and the share of visible pixels
    it holds; None when either mask is empty."""
    if not visible.any() or not ref.any():
        return None
    h, w = visible.shape
    x0, y0, x1, y1 = (int(v) for v in mask_to_box(visible))
    template = visible[y0:y1, x0:x1].astype(np.float32)
    # ref's pixels under every placement of the template: window (cx0, cy0) + (i, j) is
    # the shift (px + search - i, py + search - j).
    px, py = predicted
    cx0, cy0 = x0 - px - search, y0 - py - search
    window = np.zeros((y1 - y0 + 2 * search, x1 - x0 + 2 * search), np.float32)
    sx0, sy0 = max(cx0, 0), max(cy0, 0)
    sx1, sy1 = min(cx0 + window.shape[1], w), min(cy0 + window.shape[0], h)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - cy0 : sy1 - cy0, sx0 - cx0 : sx1 - cx0] = ref[sy0:sy1, sx0:sx1]
    held = cv2.matchTemplate(window, template, cv2.TM_CCORR)
    best = float(held.max())
    if best <= 0:
        return (px, py), 0.0
    near = np.argwhere(held >= MEMORY_TIE * best)
    j, i = min(near, key=lambda ji: abs(int(ji[0]) - search) + abs(int(ji[1]) - search))
    share = float(held[j, i]) / float(template.sum())
    return (px + search - int(i), py + search - int(j)), share


def shift_mask(mask: NDArray[np.bool_], shift: tuple[int, int]) -> NDArray[np.bool_]:
    """``mask`` moved by the integer (dx, dy), zeros where it came from past the border."""
    dx, dy = shift
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


class TemporalFilter:
    """Stateful per-track filter; call :meth:`update` once per frame in order."""

    def __init__(self, config: TemporalConfig) -> None:
        self.config = config
        self.tracks: dict[int, _Track] = {}
        self.frame = 0

    def update(self, objects: list[ObjectResult]) -> list[ObjectResult]:
        if not self.config.enabled:
            return objects
        self.frame += 1
        seen = set()
        for obj in objects:
            if obj.track_id >= 0:
                seen.add(obj.track_id)
                self._observe(obj)
        out = list(objects)
        claimed: set[int] = set()  # new tracks that ended a carried track this frame
        for tid in list(self.tracks):
            if tid not in seen:
                carried = self._carry(tid, objects, claimed)
                if carried is not None:
                    out.append(carried)
        return out

    def _observe(self, obj: ObjectResult) -> None:
        visible = int(np.count_nonzero(obj.visible))
        tr = self.tracks.get(obj.track_id)
        if tr is not None and self.config.shape_memory:
            self._remember(tr, obj, visible)
        c = _centre(obj.box, obj.amodal)
        cur = obj.amodal.astype(np.float32)
        if tr is None:
            self.tracks[obj.track_id] = _Track(cur, c, obj, cur, c, visible, born=self.frame)
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

    def _remember(self, tr: _Track, obj: ObjectResult, visible: int) -> None:
        """Shape memory: add the track's best-seen amodal mask, aligned to the object's
        visible pixels, to its amodal mask when the object is more hidden than then and the
        two masks agree."""
        if visible >= MEMORY_HIDDEN_SHARE * tr.ref_seen or tr.ref.shape != obj.amodal.shape:
            return
        ref = tr.ref >= 0.5
        dx, dy = (int(v) for v in np.rint(tr.centre + tr.velocity - tr.ref_centre))
        found = align_shape(ref, obj.visible, (dx, dy), MEMORY_SEARCH_PX)
        if found is None or found[1] < MEMORY_COVER:
            return
        memory = shift_mask(ref, found[0])
        if mask_iou(memory, obj.amodal) < MEMORY_AGREE_IOU:
            return
        obj.amodal = obj.amodal | memory | obj.visible

    def _reborn(
        self,
        tr: _Track,
        box: NDArray[np.float32],
        objects: list[ObjectResult],
        claimed: set[int],
    ) -> bool:
        """Whether a current object of the carried track's class, whose track was born
        since the carried one went missing and is not in ``claimed``, lies within
        :data:`REBORN_REACH` of it; the nearest such track is added to ``claimed``."""
        if REBORN_REACH <= 0:
            return False
        last_seen = self.frame - tr.missing
        centre = _box_centre(box)
        reach = REBORN_REACH * float(max(box[2] - box[0], box[3] - box[1]))
        near = []
        for o in objects:
            other = self.tracks.get(o.track_id)
            if (
                other is None
                or other.born <= last_seen
                or o.class_id != tr.last.class_id
                or o.track_id in claimed
            ):
                continue
            distance = float(np.linalg.norm(_centre(o.box, o.amodal) - centre))
            if distance <= reach:
                near.append((distance, o.track_id))
        if not near:
            return False
        claimed.add(min(near)[1])  # one new track ends one carried track
        return True

    def _carry(
        self, tid: int, objects: list[ObjectResult], claimed: set[int]
    ) -> ObjectResult | None:
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
        box = mask_to_box(amodal)
        # Back under another track id: a current object is this one.
        if (
            not amodal.any()
            or any(mask_iou(amodal, o.amodal) > REAPPEARED_IOU for o in objects)
            or self._reborn(tr, box, objects, claimed)
        ):
            del self.tracks[tid]
            return None
        return ObjectResult(
            track_id=tid,
            class_id=tr.last.class_id,
            class_name=tr.last.class_name,
            score=tr.last.score * 0.9**tr.missing,
            box=box,
            amodal=amodal,
            visible=np.zeros_like(amodal),
            persisted=True,
        )
