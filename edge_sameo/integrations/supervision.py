"""Results as ``supervision.Detections``, so supervision's annotators, filters, zones and
exporters work on them. Used by :meth:`FrameResult.to_supervision` and
:meth:`Prediction.to_supervision`; needs ``pip install "edge-sameo[supervision]"``.

The fields (N objects of an H×W frame):

* ``xyxy``: (N, 4) float32 XYXY in image pixels;
* ``mask``: (N, H, W) bool amodal masks (the whole object, hidden parts included);
* ``confidence``: (N,) float32 (detector score for stream results, predicted mask IoU
  for a :class:`Prediction`);
* ``class_id`` / ``tracker_id``: (N,) int (stream results; ``None`` for a prediction);
* ``data["visible_mask"]``: (N, H, W) bool visible masks;
* ``data["occlusion"]``: (N,) float32 occlusion ratio, 1 - |visible ∩ amodal| / |amodal|;
* ``data["order"]``: (N,) int depth rank, 0 = nothing in front;
* ``data["class_name"]``: (N,) str (stream results), the key supervision's label
  annotators read.

Indexing or filtering the Detections (``det[det.confidence > 0.5]``) keeps every
``data`` array in step with the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_sameo.errors import require
from edge_sameo.stream.objects import ObjectResult, assign_order, prediction_objects

if TYPE_CHECKING:
    import supervision as sv

    from edge_sameo.predictor import Prediction
    from edge_sameo.stream.pipeline import FrameResult

#: ``Detections.data`` keys.
VISIBLE_MASK = "visible_mask"
OCCLUSION = "occlusion"
ORDER = "order"
CLASS_NAME = "class_name"


def _sv() -> Any:
    return require("supervision", "supervision")


def objects_to_detections(
    objects: Sequence[ObjectResult], image_hw: tuple[int, int], tracked: bool = True
) -> sv.Detections:
    """Objects of one (H, W) frame -> ``sv.Detections`` (fields in the module docstring);
    ``tracked``: fill ``class_id``, ``tracker_id`` and ``data["class_name"]``."""
    h, w = image_hw
    n = len(objects)
    data: dict[str, Any] = {
        VISIBLE_MASK: np.stack([o.visible for o in objects]) if n else np.zeros((0, h, w), bool),
        OCCLUSION: np.array([o.occlusion_ratio for o in objects], np.float32),
        ORDER: np.array([o.order for o in objects], int),
    }
    if tracked:
        data[CLASS_NAME] = np.array([o.class_name for o in objects], dtype=str)
    return _sv().Detections(
        xyxy=np.array([o.box for o in objects], np.float32).reshape(n, 4),
        mask=np.stack([o.amodal for o in objects]) if n else np.zeros((0, h, w), bool),
        confidence=np.array([o.score for o in objects], np.float32),
        class_id=np.array([o.class_id for o in objects], int) if tracked else None,
        tracker_id=np.array([o.track_id for o in objects], int) if tracked else None,
        data=data,
    )


def frame_to_detections(result: FrameResult) -> sv.Detections:
    """One stream result -> ``sv.Detections`` with class and tracker ids."""
    h, w = result.frame.image.shape[:2]
    return objects_to_detections(result.objects, (h, w), tracked=True)


def prediction_to_detections(prediction: Prediction) -> sv.Detections:
    """A predictor result -> ``sv.Detections`` (no class or tracker ids). Without a modal
    decoder the visible mask is the amodal one (occlusion 0), as in the stream; the depth
    order is decided between the prediction's masks as the stream does."""
    h, w = prediction.masks.shape[1:]
    objects = prediction_objects(prediction)
    assign_order(objects)
    return objects_to_detections(objects, (h, w), tracked=False)
