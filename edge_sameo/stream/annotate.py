"""Annotated frames: amodal outline, visible part filled, occluded part hatched, labels, FPS."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.render import color
from edge_sameo.stream.objects import ObjectResult


@lru_cache(maxsize=4)
def _hatch(h: int, w: int, spacing: int = 7) -> NDArray[np.bool_]:
    """Diagonal stripes (H, W) bool used to draw occluded parts."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.asarray((xx + yy) % spacing < 2)


def annotate(
    image: NDArray[np.uint8],
    objects: Sequence[ObjectResult],
    fps: float | None = None,
    alpha: float = 0.45,
) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB -> annotated copy. Visible parts are filled translucently,
    occluded parts hatched in the same colour, the amodal mask outlined; each object is
    labelled with its id, class and occlusion percentage."""
    out = image.copy()
    h, w = image.shape[:2]
    hatch = _hatch(h, w)
    # Back to front, so front objects' fills land on top.
    for obj in sorted(objects, key=lambda o: -o.order):
        fill = np.array(color(max(obj.track_id, 0)), np.float32)
        vis = obj.visible & obj.amodal if obj.amodal.any() else obj.visible
        if vis.any():
            out[vis] = (out[vis].astype(np.float32) * (1 - alpha) + fill * alpha).astype(np.uint8)
        occ = obj.occluded & hatch
        if occ.any():
            out[occ] = fill.astype(np.uint8)
    for obj in objects:
        c = color(max(obj.track_id, 0))
        if obj.amodal.any():
            contours, _ = cv2.findContours(
                obj.amodal.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(out, contours, -1, c, 2 if not obj.persisted else 1, cv2.LINE_AA)
        x1, y1 = int(obj.box[0]), int(obj.box[1])
        label = f"#{obj.track_id} {obj.class_name} {obj.occlusion_ratio * 100:.0f}% occ"
        cv2.putText(
            out,
            label,
            (x1 + 1, max(y1 - 5, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (0, 0, 0),
            3,
            cv2.LINE_AA,
        )
        cv2.putText(
            out, label, (x1 + 1, max(y1 - 5, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, c, 1, cv2.LINE_AA
        )
    if fps is not None:
        text = f"{fps:.1f} FPS"
        cv2.putText(out, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(
            out, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out
