"""The stateful user API: ``set_image`` runs the encoder once, ``predict`` only decodes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo.boxes import validate_boxes
from edge_sameo.errors import InputError
from edge_sameo.io import to_rgb_uint8
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import boxes_to_model_frame, preprocess, upscale_logits


@dataclass(frozen=True)
class Prediction:
    """Masks for N boxes of one image (H×W).

    masks: (N, H, W) bool — per box the candidate with the highest predicted IoU,
        upsampled bicubically from the low-res logits and thresholded at logit >= 0.
    scores: (N,) float32 — predicted IoU of the chosen mask.
    low_res_logits: (N, 3, L, L) float32 — all candidates, unsorted (L = 256 at 1024 px).
    iou_predictions: (N, 3) float32.
    boxes: (N, 4) float32 XYXY in image pixels — the prompts after clipping/reordering.
    speed: milliseconds per stage (``preprocess``, ``encoder`` from ``set_image``;
        ``decoder``, ``postprocess`` from ``predict``).
    """

    masks: NDArray[np.bool_]
    scores: NDArray[np.float32]
    low_res_logits: NDArray[np.float32]
    iou_predictions: NDArray[np.float32]
    boxes: NDArray[np.float32]
    speed: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.boxes)
        for name in ("masks", "scores", "low_res_logits", "iou_predictions"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows for {n} boxes")

    def __len__(self) -> int:
        return len(self.boxes)


class AmodalPredictor:
    """Box-prompted (amodal with SAMEO decoder weights) segmentation of one image at a time.

    >>> predictor = AmodalPredictor(load_model("efficient_sam_vitt.pt"))
    >>> predictor.set_image(rgb)                 # (H, W, 3) uint8 RGB, encoder runs once
    >>> result = predictor.predict([[x1, y1, x2, y2]])
    """

    def __init__(self, model: EfficientSam, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._embedding: torch.Tensor | None = None
        self._image_hw: tuple[int, int] | None = None
        self._speed: dict[str, float] = {}

    @property
    def img_size(self) -> int:
        return self.model.img_size

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    @property
    def image_embedding(self) -> torch.Tensor:
        """(1, C, h, w) float32 embedding of the current image."""
        if self._embedding is None:
            raise InputError("no image set: call set_image(image) before predict(boxes)")
        return self._embedding

    @torch.inference_mode()
    def set_image(self, image: NDArray[Any]) -> None:
        """Encode an (H, W, 3) uint8 RGB image (gray, RGBA and 16-bit are converted)."""
        rgb = to_rgb_uint8(image)
        t0 = time.perf_counter()
        x = preprocess(rgb, self.img_size, self.device)
        t1 = time.perf_counter()
        self._embedding = self.model.encode(x)
        t2 = time.perf_counter()
        self._image_hw = (rgb.shape[0], rgb.shape[1])
        self._speed = {"preprocess": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3}

    def reset_image(self) -> None:
        self._embedding = None
        self._image_hw = None
        self._speed = {}

    @torch.inference_mode()
    def predict(self, boxes: Any) -> Prediction:
        """Decode all boxes of the current image in one batched call.

        boxes: (N, 4) float XYXY in image pixels; N may be 0. Boxes are clipped to the
        image and reversed corners reordered; NaN/inf or zero-area boxes raise
        ``InputError`` (a ``ValueError``) naming the row.
        """
        embedding = self.image_embedding
        assert self._image_hw is not None
        h, w = self._image_hw
        clean = validate_boxes(boxes, (h, w))
        n = len(clean)
        lr = self.model.config.low_res_size
        speed = dict(self._speed)
        if n == 0:
            return Prediction(
                masks=np.zeros((0, h, w), bool),
                scores=np.zeros(0, np.float32),
                low_res_logits=np.zeros((0, 3, lr, lr), np.float32),
                iou_predictions=np.zeros((0, 3), np.float32),
                boxes=clean,
                speed={**speed, "decoder": 0.0, "postprocess": 0.0},
            )
        t0 = time.perf_counter()
        model_boxes = boxes_to_model_frame(
            torch.from_numpy(clean).to(self.device), (h, w), self.img_size
        )
        logits, iou = self.model.decode_boxes(embedding, model_boxes)
        t1 = time.perf_counter()
        best = iou.argmax(dim=1)
        rows = torch.arange(n, device=logits.device)
        # Only the chosen candidate is upsampled: interpolation is per channel, so the
        # result equals upsampling all three and picking afterwards.
        masks = upscale_logits(logits[rows, best][:, None], (h, w))[:, 0] >= 0
        result = Prediction(
            masks=masks.cpu().numpy(),
            scores=iou[rows, best].float().cpu().numpy(),
            low_res_logits=logits.float().cpu().numpy(),
            iou_predictions=iou.float().cpu().numpy(),
            boxes=clean,
            speed=speed,
        )
        t2 = time.perf_counter()
        speed.update(decoder=(t1 - t0) * 1e3, postprocess=(t2 - t1) * 1e3)
        return result
