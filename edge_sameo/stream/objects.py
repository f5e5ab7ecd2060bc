"""Per-object results of a frame: amodal, visible and occluded masks, occlusion ratio, and
the occlusion order between overlapping objects (who is in front)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.masks import encode_rle

if TYPE_CHECKING:
    from edge_sameo.predictor import Prediction


@dataclass
class ObjectResult:
    """One object. box: (4,) float32 XYXY pixels; amodal / visible: (H, W) bool.

    ``order`` is the depth rank among the frame's objects (0 = nothing in front of it);
    ``occluded_by`` lists the track ids of the objects in front of it. ``persisted`` marks
    an object carried over from earlier frames while its detection is missing.
    """

    track_id: int
    class_id: int
    class_name: str
    score: float
    box: NDArray[np.float32]
    amodal: NDArray[np.bool_]
    visible: NDArray[np.bool_]
    order: int = 0
    occluded_by: list[int] = field(default_factory=list)
    persisted: bool = False

    @property
    def occluded(self) -> NDArray[np.bool_]:
        """The hidden part: amodal & ~visible."""
        return self.amodal & ~self.visible

    @property
    def occlusion_ratio(self) -> float:
        """1 - |visible ∩ amodal| / |amodal| (0 when the amodal mask is empty)."""
        area = int(np.count_nonzero(self.amodal))
        if area == 0:
            return 0.0
        return 1.0 - int(np.count_nonzero(self.amodal & self.visible)) / area

    def to_json(self) -> dict[str, Any]:
        return {
            "track_id": int(self.track_id),
            "class_id": int(self.class_id),
            "class_name": self.class_name,
            "score": round(float(self.score), 4),
            "box": [round(float(v), 1) for v in self.box],
            "amodal_rle": encode_rle(self.amodal),
            "visible_rle": encode_rle(self.visible),
            "occlusion_ratio": round(self.occlusion_ratio, 4),
            "order": int(self.order),
            "occluded_by": [int(t) for t in self.occluded_by],
            "persisted": self.persisted,
        }


def prediction_objects(prediction: Prediction, visible: bool = True) -> list[ObjectResult]:
    """A predictor's result as objects (no class, no tracking): id = the box's index, score =
    the predicted IoU, box = the prompt, the amodal mask, and the visible mask when
    ``visible`` and the model has a visible head, else the amodal mask again (occlusion 0;
    an overlay then fills the whole mask). The depth order is left at 0."""
    shown = prediction.visible_masks if visible and prediction.visible_masks is not None else None
    return [
        ObjectResult(
            track_id=i,
            class_id=-1,
            class_name="",
            score=float(prediction.scores[i]),
            box=prediction.boxes[i],
            amodal=prediction.masks[i],
            visible=prediction.masks[i] if shown is None else shown[i],
        )
        for i in range(len(prediction))
    ]


def in_front(a: ObjectResult, b: ObjectResult, min_pixels: int = 20) -> bool | None:
    """Whether ``a`` is in front of ``b`` (``None``: they do not overlap enough to say).

    Where their amodal masks overlap, the object that is *visible* there is in front.
    """
    overlap = a.amodal & b.amodal
    if int(np.count_nonzero(overlap)) < min_pixels:
        return None
    va = int(np.count_nonzero(a.visible & overlap))
    vb = int(np.count_nonzero(b.visible & overlap))
    if va == vb:
        return None
    return va > vb


def assign_order(objects: Sequence[ObjectResult]) -> None:
    """Fill ``order`` and ``occluded_by``: rank = longest chain of objects in front
    (0 = front-most). Pairs are decided independently; a cycle (noisy masks) is broken by
    ignoring the edge that would close it."""
    n = len(objects)
    front: list[set[int]] = [set() for _ in range(n)]  # front[i]: indices in front of i
    for i in range(n):
        for j in range(i + 1, n):
            r = in_front(objects[i], objects[j])
            if r is None:
                continue
            a, b = (i, j) if r else (j, i)  # a is in front of b
            if not _reaches(front, a, b):  # adding b <- a must not create a cycle
                front[b].add(a)
    ranks: dict[int, int] = {}

    def rank(i: int) -> int:
        if i not in ranks:
            ranks[i] = 0 if not front[i] else 1 + max(rank(k) for k in front[i])
        return ranks[i]

    for i, obj in enumerate(objects):
        obj.order = rank(i)
        obj.occluded_by = sorted(objects[k].track_id for k in front[i])


def _reaches(front: list[set[int]], start: int, target: int) -> bool:
    """Whether ``target`` is already (transitively) in front of ``start``."""
    stack, seen = [start], set()
    while stack:
        i = stack.pop()
        if i == target:
            return True
        if i in seen:
            continue
        seen.add(i)
        stack.extend(front[i])
    return False
