"""Temporal stability per track: smoothing of amodal masks across frames, and a short
persistence of a track's amodal mask while its object is fully hidden.

Both follow the object: the previous mask is shifted by the motion of the track's box
before it is blended in (or carried on at the last velocity while the object is missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError
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
    velocity: NDArray[np.float32]
    last: ObjectResult
    missing: int = 0
    shift: NDArray[np.float32] = field(default_factory=lambda: np.zeros(2, np.float32))


def _centre(box: NDArray[np.float32]) -> NDArray[np.float32]:
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
        a = self.config.smoothing
        seen = set()
        for obj in objects:
            if obj.track_id < 0:
                continue
            seen.add(obj.track_id)
            c = _centre(obj.box)
            cur = obj.amodal.astype(np.float32)
            tr = self.tracks.get(obj.track_id)
            if tr is None:
                self.tracks[obj.track_id] = _Track(cur, c, np.zeros(2, np.float32), obj)
                continue
            d = c - tr.centre
            if a > 0 and tr.soft.shape == cur.shape:
                soft = (a * _translate(tr.soft, d) + (1 - a) * cur).astype(np.float32)
                obj.amodal = soft >= 0.5
            else:
                soft = cur
            tr.velocity = (d / max(tr.missing + 1, 1)).astype(np.float32)
            tr.soft, tr.centre, tr.last, tr.missing = soft, c, obj, 0
        out = list(objects)
        for tid in list(self.tracks):
            if tid in seen:
                continue
            tr = self.tracks[tid]
            tr.missing += 1
            if tr.missing > self.config.persistence:
                del self.tracks[tid]
                continue
            # Carry the hidden object on at its last velocity: fully occluded, so its
            # visible mask is empty and the whole amodal mask is the occluded part.
            tr.soft = _translate(tr.soft, tr.velocity)
            tr.centre = tr.centre + tr.velocity
            box = tr.last.box + np.concatenate([tr.velocity, tr.velocity])
            amodal = tr.soft >= 0.5
            out.append(
                ObjectResult(
                    track_id=tid,
                    class_id=tr.last.class_id,
                    class_name=tr.last.class_name,
                    score=tr.last.score * 0.9**tr.missing,
                    box=box.astype(np.float32),
                    amodal=amodal,
                    visible=np.zeros_like(amodal),
                    persisted=True,
                )
            )
        return out
