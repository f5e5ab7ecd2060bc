"""EfficientSAM: ViT image encoder + point/box prompt encoder + mask decoder.

A pure ``nn.Module`` (no file I/O, no device choice). Its ``state_dict`` keys and
order equal the original checkpoints' (``pixel_mean``/``pixel_std`` are not stored).
"""

from __future__ import annotations

import torch
from torch import nn

from edge_sameo.modeling.config import ModelConfig
from edge_sameo.modeling.image_encoder import Block, ImageEncoderViT
from edge_sameo.modeling.mask_decoder import MaskDecoder
from edge_sameo.modeling.prompt_encoder import (
    LABEL_BOX_BOTTOM_RIGHT,
    LABEL_BOX_TOP_LEFT,
    LABEL_PAD,
    PromptEncoder,
)
from edge_sameo.modeling.refiner import MaskRefiner

PIXEL_MEAN = (0.485, 0.456, 0.406)
PIXEL_STD = (0.229, 0.224, 0.225)


class EfficientSam(nn.Module):
    """EfficientSAM: ViT image encoder, prompt encoder and mask decoder, optionally a
    second (modal) decoder and the object-resolution refiner.

    Images enter :meth:`encode` as (B, 3, S, S) float32 RGB already normalised with the
    ImageNet mean/std (``preprocess.normalize_resized``); boxes as (N, 4) float32 XYXY in
    S×S model-input pixels."""

    pixel_mean: torch.Tensor
    pixel_std: torch.Tensor

    def __init__(
        self,
        config: ModelConfig,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.max_num_points = config.max_num_points
        #: Optional second decoder reading the same embedding: the original (modal,
        #: visible-mask) decoder kept beside a SAMEO (amodal) ``mask_decoder``. Absent
        #: from the original checkpoints, so the default state_dict stays identical.
        self.modal_decoder: MaskDecoder | None = None
        #: Optional object-resolution refiner (``modeling.refiner``): per box, a crop of the
        #: frame and both decoders' logits -> amodal and visible logits in that window.
        #: Absent from the original checkpoints (``refiner.*`` keys when present).
        self.refiner: MaskRefiner | None = None
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    @property
    def img_size(self) -> int:
        """S, the side of the square model input in pixels."""
        return self.image_encoder.img_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, C, S/p, S/p) image embeddings."""
        return self.image_encoder(images)

    def box_prompts(self, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4) XYXY boxes in model-input pixels -> points (N, T, 2), labels (N, T).

        Each box is two points labelled 2 and 3, padded to ``max_num_points`` slots
        with coordinate -1 and label -1, exactly as the original pads its prompts.
        """
        n = boxes.shape[0]
        pad = self.max_num_points - 2
        points = torch.cat([boxes.reshape(n, 2, 2), boxes.new_full((n, pad, 2), -1.0)], dim=1)
        labels = torch.tensor(
            [LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT] + [LABEL_PAD] * pad,
            dtype=torch.float32,
            device=boxes.device,
        ).expand(n, -1)
        return points, labels

    @property
    def has_modal_decoder(self) -> bool:
        """Whether a modal (visible-mask) decoder sits beside ``mask_decoder``."""
        return self.modal_decoder is not None

    @property
    def has_refiner(self) -> bool:
        """Whether the model has an object-resolution refiner."""
        return self.refiner is not None

    def decode_boxes(
        self,
        image_embeddings: torch.Tensor,
        boxes: torch.Tensor,
        multimask_output: bool = True,
        decoder: str = "mask",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode N boxes against one image embedding in a single batched call.

        image_embeddings: (1, C, h, w); boxes: (N, 4) float32 XYXY in model-input
        pixels (the S×S resized frame); ``decoder``: ``"mask"`` (the main, amodal
        with SAMEO weights) or ``"modal"``. Returns low-res logits (N, 3, 4h, 4w)
        and IoU predictions (N, 3), candidates unsorted, as the original returns them.
        """
        points, labels = self.box_prompts(boxes)
        sparse = self.prompt_encoder(points, labels)
        head = self.mask_decoder if decoder == "mask" else self.modal_decoder
        if head is None:
            raise ValueError(f"this model has no {decoder!r} decoder")
        return head(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, multimask_output)

    def set_fused_attention(self, fused: bool) -> None:
        """Switch the encoder's attention between ``scaled_dot_product_attention`` (fused
        kernels, fast in eager torch) and the original explicit softmax(QK^T)V, which the
        export uses (TensorRT fuses that pattern itself). The same function either way."""
        for blk in self.image_encoder.blocks:
            assert isinstance(blk, Block)
            blk.attn.fused = fused


def set_token_layout(model: EfficientSam, on: bool) -> None:
    """Switch every mask decoder between the original code path and the token layout
    (``MaskDecoder.set_token_layout``): the same numbers, without the channel transposes
    that dominate the CPU runtimes' decoders. Export switches it on."""
    for decoder in (model.mask_decoder, model.modal_decoder):
        if decoder is not None:
            decoder.set_token_layout(on)
