"""The annotators draw the right pixels: fills inside visible parts, stripes only on hidden
parts, outlines on boundaries, labels above boxes; the stacks the app and ``segment`` use."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from edge_sameo import Prediction
from edge_sameo.annotators import (
    PALETTE,
    SEGMENT_RENDERER,
    STREAM_RENDERER,
    AmodalAnnotator,
    BoxAnnotator,
    FPSAnnotator,
    LabelAnnotator,
    MaskAnnotator,
    OutlineAnnotator,
    Renderer,
    color,
    occlusion_label,
)
from edge_sameo.stream.objects import ObjectResult, prediction_objects

H, W = 120, 160


def rect(x1: int, y1: int, x2: int, y2: int) -> NDArray[np.bool_]:
    """(H, W) bool, True on [y1, y2) x [x1, x2)."""
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


def obj(
    track_id: int,
    amodal: NDArray[np.bool_],
    visible: NDArray[np.bool_],
    order: int = 0,
    persisted: bool = False,
) -> ObjectResult:
    ys, xs = np.nonzero(amodal | visible)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    return ObjectResult(
        track_id, 0, "box", 0.9, box, amodal, visible, order=order, persisted=persisted
    )


def noise(seed: int = 0) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB covering every channel value."""
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def blend(under: NDArray[np.uint8], rgb: tuple[int, int, int], alpha: float = 0.45) -> NDArray:
    """What a translucent fill makes of ``under``: float32, truncated (the app's look)."""
    return (under.astype(np.float32) * (1 - alpha) + np.array(rgb, np.float32) * alpha).astype(
        np.uint8
    )


def changed(before: NDArray[np.uint8], after: NDArray[np.uint8]) -> NDArray[np.bool_]:
    return np.any(before != after, axis=2)


def test_colours_follow_track_ids() -> None:
    assert color(0) == color(-1) == PALETTE[0]
    assert color(len(PALETTE) + 2) == PALETTE[2]


@pytest.mark.parametrize("alpha", [0.0, 0.45, 1.0])
def test_mask_fills_the_visible_part_only(alpha: float) -> None:
    image = noise()
    amodal, visible = rect(20, 10, 100, 90), rect(60, 30, 140, 110)
    o = obj(3, amodal, visible)
    out = MaskAnnotator(alpha).annotate(image.copy(), [o])
    inside = amodal & visible
    np.testing.assert_array_equal(out[inside], blend(image[inside], color(3), alpha))
    # Outside the amodal mask (the visible mask's overhang) and on the hidden part: as before.
    np.testing.assert_array_equal(out[~inside], image[~inside])


def test_mask_without_amodal_fills_the_visible_mask() -> None:
    image = noise(1)
    visible = rect(5, 5, 50, 40)
    out = MaskAnnotator().annotate(image.copy(), [obj(1, np.zeros((H, W), bool), visible)])
    np.testing.assert_array_equal(out[visible], blend(image[visible], color(1)))
    np.testing.assert_array_equal(out[~visible], image[~visible])


def test_mask_fills_back_to_front() -> None:
    image = noise(2)
    back, front = rect(10, 10, 90, 90), rect(50, 50, 150, 110)
    # Listed front first: the depth rank, not the list order, decides what lies on top.
    objects = [obj(1, front, front, order=0), obj(2, back, back, order=1)]
    out = MaskAnnotator().annotate(image.copy(), objects)
    both = back & front
    np.testing.assert_array_equal(out[both], blend(blend(image[both], color(2)), color(1)))


@pytest.mark.parametrize(("spacing", "width"), [(7, 2), (4, 1), (5, 5)])
def test_hatch_only_on_hidden_parts(spacing: int, width: int) -> None:
    image = np.zeros((H, W, 3), np.uint8)
    amodal, visible = rect(20, 10, 120, 100), rect(20, 10, 70, 100)
    out = AmodalAnnotator(spacing, width).annotate(image.copy(), [obj(4, amodal, visible)])
    yy, xx = np.mgrid[0:H, 0:W]
    stripes = (xx + yy) % spacing < width
    hidden = amodal & ~visible
    drawn = changed(image, out)
    np.testing.assert_array_equal(drawn, hidden & stripes)
    assert drawn.any() and (out[drawn] == color(4)).all()


def test_stream_draws_the_front_fill_over_the_hidden_stripes() -> None:
    image = np.full((H, W, 3), 128, np.uint8)
    back_amodal = rect(10, 20, 100, 100)
    front = rect(60, 0, 150, 120)
    back = obj(1, back_amodal, back_amodal & ~front, order=1)
    out = STREAM_RENDERER.render(image, [obj(2, front, front, order=0), back])
    yy, xx = np.mgrid[0:H, 0:W]
    # Away from outlines and labels, inside the part of ``back`` hidden by ``front``.
    core = rect(70, 40, 90, 90) & back_amodal & front
    stripe = core & ((xx + yy) % 7 < 2)
    gap = core & ((xx + yy) % 7 >= 2)
    back_colour = np.full((int(stripe.sum()), 3), color(1), np.uint8)
    np.testing.assert_array_equal(out[stripe], blend(back_colour, color(2)))
    np.testing.assert_array_equal(out[gap], blend(image[gap], color(2)))


def test_outline_matches_the_full_frame_contours() -> None:
    # Touching the frame's edge and with a hole: the cropped tracing must not change them.
    amodal = rect(0, 30, 90, 120)
    amodal[60:80, 30:50] = False
    for holes, mode in ((False, cv2.RETR_EXTERNAL), (True, cv2.RETR_LIST)):
        for antialias, line in ((True, cv2.LINE_AA), (False, cv2.LINE_8)):
            image = noise(3)
            out = OutlineAnnotator(antialias=antialias, holes=holes).annotate(
                image.copy(), [obj(5, amodal, amodal)]
            )
            contours, _ = cv2.findContours(amodal.astype(np.uint8), mode, cv2.CHAIN_APPROX_SIMPLE)
            want = cv2.drawContours(image.copy(), contours, -1, color(5), 2, line)
            np.testing.assert_array_equal(out, want)


def test_outline_marks_the_boundary_thinner_when_persisted() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    amodal = rect(30, 30, 110, 100)
    drawn = {
        persisted: changed(
            image,
            OutlineAnnotator(antialias=False).annotate(
                image.copy(), [obj(2, amodal, amodal, persisted=persisted)]
            ),
        )
        for persisted in (False, True)
    }
    edge = amodal & ~cv2.erode(amodal.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert drawn[True][edge].all() and drawn[False][edge].all()
    assert not drawn[False][rect(40, 40, 100, 90)].any()  # the inside stays as it was
    assert drawn[True].sum() < drawn[False].sum()


def test_holes_are_outlined_only_when_asked() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    amodal = rect(10, 10, 150, 110)
    amodal[40:80, 50:110] = False
    hole_edge = rect(50, 40, 110, 80) & ~rect(52, 42, 108, 78)
    for holes in (False, True):
        out = OutlineAnnotator(holes=holes).annotate(image.copy(), [obj(1, amodal, amodal)])
        assert changed(image, out)[hole_edge].any() == holes


def test_box_is_drawn_on_its_edges() -> None:
    image = np.zeros((H, W, 3), np.uint8)
    o = obj(6, rect(20, 30, 80, 90), rect(20, 30, 80, 90))
    out = BoxAnnotator().annotate(image.copy(), [o])
    drawn = changed(image, out)
    ring = rect(20, 30, 81, 91) & ~rect(21, 31, 80, 90)
    np.testing.assert_array_equal(drawn, ring)
    assert (out[ring] == color(6)).all()


def test_label_is_drawn_above_the_box() -> None:
    image = np.full((H, W, 3), 255, np.uint8)
    amodal = rect(20, 50, 140, 110)
    o = obj(2, amodal, rect(20, 50, 80, 110))
    assert occlusion_label(o) == "#2 box 50% occ"
    out = LabelAnnotator().annotate(image.copy(), [o])
    drawn = changed(image, out)
    assert drawn.any() and not drawn[rect(0, 50, W, H)].any()  # nothing inside the box
    assert not drawn[:, :18].any()  # starts at the box's left edge
    ys = np.nonzero(drawn)[0]
    assert ys.min() >= 50 - 5 - 16 and ys.max() <= 50 - 5 + 4
    near = np.abs(out[drawn].astype(int) - np.array(color(2))).max(axis=1) <= 16
    assert near.sum() > 20  # the text in the object's colour...
    assert (out[drawn].max(axis=1) <= 100).sum() > 20  # ...over a black halo
    # The text is the label: another occlusion is another picture.
    other = obj(2, amodal, amodal)
    assert not np.array_equal(LabelAnnotator().annotate(image.copy(), [other]), out)


def test_label_text_and_halo_are_configurable() -> None:
    image = np.full((H, W, 3), 255, np.uint8)
    o = obj(1, rect(20, 50, 140, 110), rect(20, 50, 140, 110))
    plain = LabelAnnotator(text=lambda _: "hello", halo=False).annotate(image.copy(), [o])
    assert not (plain.max(axis=2) <= 100).any()  # no black halo
    assert changed(image, plain).any()


def test_fps_is_drawn_only_with_a_rate() -> None:
    image = np.full((H, W, 3), 64, np.uint8)
    assert not changed(image, FPSAnnotator().annotate(image.copy(), [], fps=None)).any()
    out = FPSAnnotator().annotate(image.copy(), [], fps=29.97)
    drawn = changed(image, out)
    assert drawn[:30, :100].sum() == drawn.sum() > 0
    assert (out == 255).all(axis=2).sum() > 20


def test_renderer_draws_on_a_copy() -> None:
    image = noise(4)
    before = image.copy()
    o = obj(1, rect(20, 30, 80, 90), rect(20, 30, 60, 90))
    flipped = image[:, ::-1]  # a non-contiguous view is fine too
    out = STREAM_RENDERER.render(flipped, [o], fps=12.0)
    np.testing.assert_array_equal(image, before)
    assert out.flags.c_contiguous and out.dtype == np.uint8 and out.shape == image.shape
    assert changed(flipped, out).any()
    assert np.array_equal(Renderer(()).render(image, [o]), image)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MaskAnnotator(alpha=1.5),
        lambda: AmodalAnnotator(spacing=3, width=4),
        lambda: AmodalAnnotator(width=0),
        lambda: OutlineAnnotator(thickness=0),
    ],
)
def test_bad_settings_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_segment_overlay_fills_outlines_and_labels_each_mask() -> None:
    image = np.full((H, W, 3), 200, np.uint8)
    masks = np.stack([rect(10, 40, 70, 100), rect(90, 30, 150, 110)])
    boxes = np.array([[10, 40, 70, 100], [90, 30, 150, 110]], np.float32)
    result = Prediction(
        masks=masks,
        scores=np.array([0.91, 0.42], np.float32),
        low_res_logits=np.zeros((2, 3, 8, 8), np.float32),
        iou_predictions=np.zeros((2, 3), np.float32),
        boxes=boxes,
    )
    objects = prediction_objects(result, visible=False)
    assert [o.track_id for o in objects] == [0, 1]
    assert [round(o.score, 2) for o in objects] == [0.91, 0.42]
    out = SEGMENT_RENDERER.render(image, objects)
    for i, m in enumerate(masks):
        core = cv2.erode(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
        np.testing.assert_array_equal(out[core], blend(image[core], color(i)))
        edge = m & ~cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert (out[edge] == color(i)).all()  # outlined (no anti-aliasing in segment)
        x1, y1 = int(boxes[i, 0]), int(boxes[i, 1])
        label = changed(image, out)[max(y1 - 20, 0) : y1 - 1, x1 : x1 + 60]
        assert label.sum() > 20  # the "#i iou S" label above the box
