"""Drawing results onto frames: small annotators behind one base class, and the stacks the app
and ``segment`` draw with.

An annotator draws one aspect of a frame's objects (the hidden part, the visible part, the
outline, the box, the label, the frame rate) onto a scene *in place* and returns it, as
``supervision``'s annotators do; a :class:`Renderer` draws a stack of them, in order, onto a
copy of the frame. Objects are :class:`~edge_sameo.stream.objects.ObjectResult` (``segment``
adapts its predictions to them); an object's colour follows its track id.

Scenes are (H, W, 3) uint8 RGB, C-contiguous; masks (H, W) bool in the same pixels; boxes
(4,) XYXY in image pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # annotators only read attributes; importing the stream package is not needed
    from edge_sameo.stream.objects import ObjectResult

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

Scene = NDArray[np.uint8]
_Crop = tuple[slice, slice]


def color(track_id: int) -> tuple[int, int, int]:
    """The RGB colour of a track id (negative ids, i.e. untracked, share the first)."""
    return PALETTE[max(track_id, 0) % len(PALETTE)]


class BaseAnnotator(ABC):
    """Draws one aspect of ``objects`` onto ``scene``."""

    @abstractmethod
    def annotate(self, scene: Scene, objects: Sequence[ObjectResult]) -> Scene:
        """Draw onto ``scene`` ((H, W, 3) uint8 RGB, C-contiguous) in place and return it."""


@dataclass(frozen=True)
class AmodalAnnotator(BaseAnnotator):
    """The hidden part (amodal & ~visible) in solid colour through diagonal stripes ``width``
    pixels wide every ``spacing`` pixels (``width == spacing``: a solid fill), back to front.

    Put it before :class:`MaskAnnotator`, so that a front object's translucent fill lies
    over the stripes of what it hides.
    """

    spacing: int = 7
    width: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.width <= self.spacing:
            raise ValueError(f"hatch: need 1 <= width <= spacing, got {self.width}/{self.spacing}")

    def annotate(self, scene: Scene, objects: Sequence[ObjectResult]) -> Scene:
        """Hatch each object's hidden part ((H, W) bool amodal & ~visible) in its colour,
        back to front, onto the (H, W, 3) uint8 RGB ``scene`` in place; return it."""
        hatch = _hatch(scene.shape[0], scene.shape[1], self.spacing, self.width)
        for obj in _back_to_front(objects):
            crop = _bounds(obj.amodal)
            if crop is None:
                continue
            hidden = obj.amodal[crop] & ~obj.visible[crop] & hatch[crop]
            np.copyto(scene[crop], np.array(color(obj.track_id), np.uint8), where=hidden[..., None])
        return scene


@dataclass(frozen=True)
class MaskAnnotator(BaseAnnotator):
    """The visible part (visible ∩ amodal; the visible mask alone where the amodal one is
    empty) blended with the object's colour at ``alpha``, back to front, so that front
    objects' fills lie on top."""

    alpha: float = 0.45

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"mask alpha must be in [0, 1], got {self.alpha}")

    def annotate(self, scene: Scene, objects: Sequence[ObjectResult]) -> Scene:
        """Blend each object's visible part in its colour, back to front, onto the
        (H, W, 3) uint8 RGB ``scene`` in place; return it."""
        for obj in _back_to_front(objects):
            crop = _bounds(obj.amodal)
            if crop is not None:
                visible = obj.visible[crop] & obj.amodal[crop]
            else:
                crop = _bounds(obj.visible)
                if crop is None:
                    continue
                visible = obj.visible[crop]
            region = scene[crop]
            lut = _blend_lut(color(obj.track_id), self.alpha)
            np.copyto(region, cv2.LUT(region, lut), where=visible[..., None])
        return scene


@dataclass(frozen=True)
class OutlineAnnotator(BaseAnnotator):
    """The amodal mask's boundary, ``thickness`` pixels (``persisted_thickness`` for objects
    carried over from earlier frames). ``holes``: outline holes too, not only outer
    boundaries; ``antialias``: anti-aliased lines."""

    thickness: int = 2
    persisted_thickness: int = 1
    antialias: bool = True
    holes: bool = False

    def __post_init__(self) -> None:
        if self.thickness < 1 or self.persisted_thickness < 1:
            raise ValueError("outline thickness must be >= 1")

    def annotate(self, scene: Scene, objects: Sequence[ObjectResult]) -> Scene:
        """Draw each object's amodal-mask contours onto the (H, W, 3) uint8 RGB ``scene``
        in place; return it."""
        mode = cv2.RETR_LIST if self.holes else cv2.RETR_EXTERNAL
        line = cv2.LINE_AA if self.antialias else cv2.LINE_8
        for obj in objects:
            # One pixel of margin: the tracer then sees the same neighbourhood as on the full
            # frame, so the contours are the same, at a fraction of the cost.
            crop = _bounds(obj.amodal, pad=1)
            if crop is None:
                continue
            rows, cols = crop
            contours, _ = cv2.findContours(
                obj.amodal[crop].view(np.uint8),
                mode,
                cv2.CHAIN_APPROX_SIMPLE,
                offset=(cols.start, rows.start),
            )
            width = self.persisted_thickness if obj.persisted else self.thickness
            cv2.drawContours(scene, contours, -1, color(obj.track_id), width, line)
        return scene


@dataclass(frozen=True)
class BoxAnnotator(BaseAnnotator):
    """Each object's box, ``thickness`` pixels."""

    thickness: int = 1

    def annotate(self, scene: Scene, objects: Sequence[ObjectResult]) -> Scene:
        """Draw each object's XYXY image-pixel box onto the (H, W, 3) uint8 RGB ``scene``
        in place; return it."""
        for obj in objects:
            x1, y1, x2, y2 = (round(float(v)) for v in obj.box)
            cv2.rectangle(scene, (x1, y1), (x2, y2), color(obj.track_id), self.thickness)
        return scene


def occlusion_label(obj: ObjectResult) -> str:
    """``#<track id> <class> <occlusion>% occ``: the app's label."""
    return f"#{obj.track_id} {obj.class_name} {obj.occlusion_ratio * 100:.0f}% occ"


def score_label(obj: ObjectResult) -> str:
    """``#<id> iou <score>``: ``segment``'s label (the score is the predicted IoU)."""
    return f"#{obj.track_id} iou {obj.score:.2f}"


@dataclass(frozen=True)
class LabelAnnotator(BaseAnnotator):
    """``text(obj)`` in the object's colour just above its box's top-left corner (kept
    inside the frame). ``halo``: a black outline under the text, readable on any background."""

    text: Callable[[ObjectResult], str] = occlusion_label
    font_scale: float = 0.45
    halo: bool = True

    def annotate(self, scene: Scene, objects: Sequence[ObjectResult]) -> Scene:
        """Write each object's label above its box onto the (H, W, 3) uint8 RGB ``scene``
        in place; return it."""
        for obj in objects:
            at = (int(obj.box[0]) + 1, max(int(obj.box[1]) - 5, 12))
            _text(scene, self.text(obj), at, self.font_scale, color(obj.track_id), self.halo)
        return scene


@dataclass(frozen=True)
class FPSAnnotator(BaseAnnotator):
    """``<fps> FPS`` in white with a black halo at the top-left corner; nothing without a
    rate."""

    font_scale: float = 0.6

    def annotate(
        self, scene: Scene, objects: Sequence[ObjectResult], fps: float | None = None
    ) -> Scene:
        """Write ``fps`` (when given) onto the (H, W, 3) uint8 RGB ``scene`` in place;
        return it. ``objects`` is unused."""
        if fps is not None:
            _text(scene, f"{fps:.1f} FPS", (8, 22), self.font_scale, (255, 255, 255), True)
        return scene


@dataclass(frozen=True)
class Renderer:
    """A stack of annotators drawn in order onto a copy of a frame, then the frame rate."""

    annotators: tuple[BaseAnnotator, ...]
    fps_annotator: FPSAnnotator | None = None

    def render(
        self,
        image: NDArray[np.uint8],
        objects: Sequence[ObjectResult],
        fps: float | None = None,
    ) -> NDArray[np.uint8]:
        """(H, W, 3) uint8 RGB frame + its objects (masks in the frame's pixels) -> a new
        annotated (H, W, 3) uint8 RGB image; ``image`` is left as it is."""
        scene = np.array(image, dtype=np.uint8, order="C", copy=True)
        for annotator in self.annotators:
            scene = annotator.annotate(scene, objects)
        if self.fps_annotator is not None:
            scene = self.fps_annotator.annotate(scene, objects, fps=fps)
        return scene


#: The app's look (``run``, ``demo``, the live view): hidden parts hatched under the visible
#: parts' fills, amodal outlines (thinner for carried-over objects), ``#id class N% occ``
#: labels, the frame rate.
STREAM_RENDERER = Renderer(
    (AmodalAnnotator(), MaskAnnotator(), OutlineAnnotator(), LabelAnnotator()),
    FPSAnnotator(),
)

#: ``segment``'s overlay: each mask filled and outlined (holes too), its box prompt, and
#: ``#i iou S`` labels.
SEGMENT_RENDERER = Renderer(
    (
        MaskAnnotator(),
        OutlineAnnotator(antialias=False, holes=True),
        BoxAnnotator(),
        LabelAnnotator(text=score_label, halo=False),
    )
)


def _back_to_front(objects: Sequence[ObjectResult]) -> list[ObjectResult]:
    """Objects sorted by depth rank, deepest first (stable for equal ranks)."""
    return sorted(objects, key=lambda o: -o.order)


def _bounds(mask: NDArray[np.bool_], pad: int = 0) -> _Crop | None:
    """(rows, cols) slices of the bounding rectangle of ``mask`` ((H, W) bool), grown by
    ``pad`` pixels and clipped to the frame; ``None`` for an empty mask."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    if w == 0 or h == 0:
        return None
    height, width = mask.shape
    rows = slice(max(y - pad, 0), min(y + h + pad, height))
    return rows, slice(max(x - pad, 0), min(x + w + pad, width))


@lru_cache(maxsize=4)
def _hatch(height: int, width: int, spacing: int, stripe: int) -> NDArray[np.bool_]:
    """(H, W) bool diagonal stripes, fixed to the frame so that they line up across
    objects and frames."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.asarray((xx + yy) % spacing < stripe)


@lru_cache(maxsize=64)
def _blend_lut(rgb: tuple[int, int, int], alpha: float) -> NDArray[np.uint8]:
    """(1, 256, 3) uint8 lookup table: channel value v -> v * (1 - alpha) + rgb * alpha,
    computed in float32 and truncated."""
    v = np.arange(256, dtype=np.float32)[:, None]
    fill = np.array(rgb, np.float32)
    return (v * (1 - alpha) + fill * alpha).astype(np.uint8).reshape(1, 256, 3)


def _text(
    scene: Scene,
    text: str,
    at: tuple[int, int],
    scale: float,
    rgb: tuple[int, int, int],
    halo: bool,
) -> None:
    """Draw ``text`` with its baseline starting at ``at`` (x, y pixels)."""
    if halo:
        cv2.putText(scene, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(scene, text, at, cv2.FONT_HERSHEY_SIMPLEX, scale, rgb, 1, cv2.LINE_AA)
