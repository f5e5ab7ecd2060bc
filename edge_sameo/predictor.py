"""The stateful user API: ``set_image`` runs the encoder once, ``predict`` only decodes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend
from edge_sameo.boxes import validate_boxes
from edge_sameo.errors import InputError
from edge_sameo.io import to_rgb_uint8
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import resize_pixels, upscale_masks
from edge_sameo.refine import paste_masks, refiner_crops

if TYPE_CHECKING:
    import supervision as sv

    from edge_sameo.backends.registry import Export
    from edge_sameo.backends.tensorrt_backend import EngineBuild


@dataclass(frozen=True)
class Prediction:
    """Masks for N boxes of one image (H×W).

    masks: (N, H, W) bool — per box the candidate with the highest predicted IoU,
        upsampled bicubically from the low-res logits and thresholded at logit >= 0
        (amodal with SAMEO decoder weights); with a refiner, its amodal mask instead.
    scores: (N,) float32 — predicted IoU of the chosen mask.
    low_res_logits: (N, 3, L, L) float32 — all candidates, unsorted (L = 256 at 1024 px).
    iou_predictions: (N, 3) float32.
    boxes: (N, 4) float32 XYXY in image pixels — the prompts after clipping/reordering.
    visible_masks / visible_scores: (N, H, W) bool / (N,) float32 from the modal
        decoder when the model has one (``None`` otherwise); with a refiner, its visible
        mask (kept inside the amodal one).
    speed: milliseconds per stage (``preprocess``, ``encoder`` from ``set_image``;
        ``decoder``, ``refiner`` (0 without one), ``postprocess`` from ``predict``).
    """

    masks: NDArray[np.bool_]
    scores: NDArray[np.float32]
    low_res_logits: NDArray[np.float32]
    iou_predictions: NDArray[np.float32]
    boxes: NDArray[np.float32]
    visible_masks: NDArray[np.bool_] | None = None
    visible_scores: NDArray[np.float32] | None = None
    speed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.boxes)
        for name in ("masks", "scores", "low_res_logits", "iou_predictions"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows for {n} boxes")

    def __len__(self) -> int:
        return len(self.boxes)

    def to_supervision(self) -> sv.Detections:
        """The masks as ``supervision.Detections``: amodal masks as ``mask``, scores as
        ``confidence``, visible masks, occlusion ratios and depth order in ``data`` (see
        :mod:`edge_sameo.integrations.supervision`)."""
        from edge_sameo.integrations.supervision import prediction_to_detections

        return prediction_to_detections(self)


def cut_to_boxes(masks: NDArray[np.bool_], boxes: NDArray[np.float32]) -> None:
    """Clear, in place, every pixel of (N, H, W) ``masks`` that lies wholly outside its
    (N, 4) XYXY box (pixel i covers [i, i+1): a pixel the box edge crosses is kept)."""
    _, h, w = masks.shape
    lo = np.clip(np.floor(boxes[:, :2]).astype(np.int64), 0, [w, h])
    hi = np.clip(np.ceil(boxes[:, 2:]).astype(np.int64), 0, [w, h])
    for m, (x0, y0), (x1, y1) in zip(masks, lo, hi, strict=True):
        m[:y0] = False
        m[y1:] = False
        m[:, :x0] = False
        m[:, x1:] = False


def best_masks(
    logits: NDArray[np.float32], iou: NDArray[np.float32], image_hw: tuple[int, int]
) -> tuple[NDArray[np.bool_], NDArray[np.float32]]:
    """(N, 3, L, L) logits + (N, 3) IoU -> (N, H, W) best masks and their (N,) scores.

    Only the chosen candidate is upsampled: interpolation is per channel, so this
    equals upsampling all three and picking afterwards, at a third of the cost.
    """
    rows = np.arange(len(iou))
    best = iou.argmax(axis=1)
    masks = upscale_masks(np.ascontiguousarray(logits[rows, best], np.float32), image_hw)
    return masks, iou[rows, best].astype(np.float32)


class AmodalPredictor:
    """Box-prompted (amodal with SAMEO decoder weights) segmentation of one image at a time.

    ``model_or_artifacts``: a model, a checkpoint path, an export folder, or a ready
    :class:`Backend`. ``backend``: ``torch``, ``onnxruntime``, ``openvino``,
    ``tensorrt`` or ``auto`` (the fastest available; :attr:`backend` says which).
    The default is ``torch`` for a model or checkpoint (the original numerics, on
    ``device``) and ``auto`` for an export folder. The runtimes only load: ``export`` /
    ``build`` (``**edge_sameo.engines.on_demand.on_demand()``) export a model for an ONNX
    runtime and build TensorRT engines on first use; without them ``auto`` on a model with
    no cached export runs torch.

    >>> predictor = AmodalPredictor(load_model("efficient_sam_vitt.pt"))
    >>> predictor.set_image(rgb)                 # (H, W, 3) uint8 RGB, encoder runs once
    >>> result = predictor.predict([[x1, y1, x2, y2]])
    """

    def __init__(
        self,
        model_or_artifacts: EfficientSam | Backend | str | Path,
        backend: str | None = None,
        precision: str | None = None,
        device: str | torch.device | None = None,
        *,
        export: Export | None = None,
        build: EngineBuild | None = None,
    ) -> None:
        if isinstance(model_or_artifacts, Backend):
            self.backend = model_or_artifacts
        else:
            from edge_sameo.backends.registry import create_backend
            from edge_sameo.contract import CONTRACT_FILE

            is_export = (
                isinstance(model_or_artifacts, (str, Path))
                and (Path(model_or_artifacts) / CONTRACT_FILE).is_file()
            )
            name = backend or ("auto" if is_export else "torch")
            options: dict[str, Any] = {"device": device} if name == "torch" and device else {}
            self.backend = create_backend(
                model_or_artifacts, name, precision, export=export, build=build, **options
            )
        self._embedding: NDArray[np.float32] | None = None
        self._image: NDArray[np.uint8] | None = None
        self._image_hw: tuple[int, int] | None = None
        self._speed: dict[str, float] = {}

    @property
    def img_size(self) -> int:
        """S, the side of the square model input in pixels."""
        return self.backend.img_size

    @property
    def is_image_set(self) -> bool:
        """Whether :meth:`set_image` has encoded an image (and no reset since)."""
        return self._embedding is not None

    @property
    def image_embedding(self) -> NDArray[np.float32]:
        """(1, C, h, w) float32 embedding of the current image."""
        if self._embedding is None:
            raise InputError("no image set: call set_image(image) before predict(boxes)")
        return self._embedding

    def set_image(self, image: NDArray[Any]) -> None:
        """Encode an (H, W, 3) uint8 RGB image (gray, RGBA and 16-bit are converted)."""
        rgb = to_rgb_uint8(image)
        t0 = time.perf_counter()
        pixels = resize_pixels(rgb, self.img_size)
        t1 = time.perf_counter()
        self._embedding = self.backend.encode(pixels)
        t2 = time.perf_counter()
        self._image_hw = (rgb.shape[0], rgb.shape[1])
        self._image = rgb
        self._speed = {"preprocess": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3}

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self._embedding = None
        self._image = None
        self._image_hw = None
        self._speed = {}

    def _current_image(self) -> tuple[NDArray[np.float32], tuple[int, int]]:
        """The current image's embedding and (H, W); ``InputError`` when none is set."""
        embedding = self.image_embedding
        assert self._image_hw is not None
        return embedding, self._image_hw

    def predict(self, boxes: Any, amodal_boxes: bool = False) -> Prediction:
        """Decode all boxes of the current image in one batched call.

        boxes: (N, 4) float XYXY in image pixels; N may be 0. Boxes are clipped to the
        image and reversed corners reordered; NaN/inf or zero-area boxes raise
        ``InputError`` (a ``ValueError``) naming the row.

        amodal_boxes: the boxes are **amodal** boxes (each the extent of the whole object,
        hidden parts included: ground truth, or a detector trained on amodal boxes), so no
        part of an object lies outside its box and both masks are cut to it
        (:func:`cut_to_boxes`). Leave it off for visible (modal) boxes, such as the
        bundled detector's: the hidden parts of an object reach beyond those.
        """
        _, image_hw = self._current_image()
        return self.predict_valid(validate_boxes(boxes, image_hw), amodal_boxes)

    def predict_valid(self, boxes: NDArray[np.float32], amodal_boxes: bool = False) -> Prediction:
        """``predict`` for boxes already checked: (N, 4) float32 XYXY in image pixels as
        ``validate_boxes`` or ``clip_boxes`` return them (reordered, clipped, non-empty).
        Nothing is checked again: the stream loop checks its detector's boxes once, and
        counts and drops the bad ones."""
        embedding, (h, w) = self._current_image()
        clean = np.asarray(boxes, np.float32).reshape(-1, 4)
        n, s = len(clean), self.img_size
        lr = self.backend.contract.model.low_res_size
        modal = self.backend.has_modal
        speed = dict(self._speed)
        if n == 0:
            return Prediction(
                masks=np.zeros((0, h, w), bool),
                scores=np.zeros(0, np.float32),
                low_res_logits=np.zeros((0, 3, lr, lr), np.float32),
                iou_predictions=np.zeros((0, 3), np.float32),
                boxes=clean,
                visible_masks=np.zeros((0, h, w), bool) if modal else None,
                visible_scores=np.zeros(0, np.float32) if modal else None,
                speed={**speed, "decoder": 0.0, "refiner": 0.0, "postprocess": 0.0},
            )
        t0 = time.perf_counter()
        scale = np.array([s / w, s / h, s / w, s / h], np.float32)
        out = self.backend.decode(embedding, clean * scale)
        t1 = time.perf_counter()
        refine_ms = 0.0
        visible: NDArray[np.bool_] | None = None
        visible_scores: NDArray[np.float32] | None = None
        if self.backend.has_refiner:
            masks, scores, visible, visible_scores, refine_ms = self._refined(clean, out)
        else:
            masks, scores = best_masks(out.low_res_logits, out.iou_predictions, (h, w))
            if out.modal_low_res_logits is not None and out.modal_iou_predictions is not None:
                visible, visible_scores = best_masks(
                    out.modal_low_res_logits, out.modal_iou_predictions, (h, w)
                )
        if amodal_boxes:
            cut_to_boxes(masks, clean)
            if visible is not None:
                cut_to_boxes(visible, clean)
        t2 = time.perf_counter()
        speed.update(
            decoder=(t1 - t0) * 1e3, refiner=refine_ms, postprocess=(t2 - t1) * 1e3 - refine_ms
        )
        return Prediction(
            masks=masks,
            scores=scores,
            low_res_logits=out.low_res_logits,
            iou_predictions=out.iou_predictions,
            boxes=clean,
            visible_masks=visible,
            visible_scores=visible_scores,
            speed=speed,
        )

    def _refined(
        self, boxes: NDArray[np.float32], out: Any
    ) -> tuple[
        NDArray[np.bool_], NDArray[np.float32], NDArray[np.bool_], NDArray[np.float32], float
    ]:
        """The refiner's amodal and visible masks for the decoded boxes, the decoders'
        chosen IoU predictions as their scores, and the refiner's own time (ms)."""
        assert self._image is not None and self._image_hw is not None
        cfg = self.backend.contract.refiner_config
        assert cfg is not None
        rows = np.arange(len(boxes))
        best = out.iou_predictions.argmax(axis=1)
        amodal_lr = out.low_res_logits[rows, best]
        scores = out.iou_predictions[rows, best].astype(np.float32)
        if out.modal_low_res_logits is not None:
            vbest = out.modal_iou_predictions.argmax(axis=1)
            visible_lr = out.modal_low_res_logits[rows, vbest]
            visible_scores = out.modal_iou_predictions[rows, vbest].astype(np.float32)
        elif cfg.use_logits:
            raise InputError("this refiner needs a model with a modal (visible) decoder")
        else:
            visible_lr, visible_scores = None, scores
        windows, crops = refiner_crops(self._image, boxes, cfg, amodal_lr, visible_lr)
        t0 = time.perf_counter()
        logits = self.backend.refine(crops)
        ms = (time.perf_counter() - t0) * 1e3
        amodal, visible = paste_masks(logits, windows, self._image_hw)
        return amodal, scores, visible, visible_scores, ms
