"""Drawing masks and boxes over images (overlay PNGs of ``segment``)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

#: A colour-blind-friendly palette (Okabe-Ito), RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)


def color(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def draw_masks(
    image: NDArray[np.uint8],
    masks: NDArray[np.bool_],
    boxes: NDArray[np.float32] | None = None,
    labels: Sequence[str] | None = None,
    alpha: float = 0.45,
) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB + (N, H, W) bool masks -> a new overlay image.

    Each mask is filled translucently and outlined; boxes (N, 4) XYXY pixels and
    labels are drawn when given.
    """
    out = image.astype(np.float32)
    for i, m in enumerate(masks):
        out[m] = out[m] * (1 - alpha) + np.array(color(i), np.float32) * alpha
    canvas = np.ascontiguousarray(out.round().astype(np.uint8))
    for i, m in enumerate(masks):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, color(i), 2)
    if boxes is not None:
        for i, b in enumerate(boxes):
            x1, y1, x2, y2 = (round(float(v)) for v in b)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color(i), 1)
            if labels is not None:
                cv2.putText(
                    canvas,
                    labels[i],
                    (x1 + 2, max(y1 - 4, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.45,
                    color(i),
                    1,
                    cv2.LINE_AA,
                )
    return canvas
