"""PyTorch runtime: CPU (fp32, bf16) and CUDA (fp32, fp16) straight from a loaded model."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend, DecoderOutput
from edge_sameo.contract import (
    ExportContract,
    decoder_contract,
    encoder_contract,
    refiner_contract,
)
from edge_sameo.errors import InputError
from edge_sameo.modeling import EfficientSam
from edge_sameo.precision import RUNTIME_PRECISIONS
from edge_sameo.preprocess import normalize_resized

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def model_contract(model: EfficientSam) -> ExportContract:
    """The contract a model *would* export with (for runtimes that need no files)."""
    cfg = model.config
    return ExportContract(
        model=cfg,
        encoder=encoder_contract(cfg),
        decoder=decoder_contract(cfg, modal=model.has_modal_decoder),
        opset=0,
        refiner=None if model.refiner is None else refiner_contract(model.refiner.config),
        refiner_config=None if model.refiner is None else model.refiner.config,
    )


class TorchBackend(Backend):
    """Eager PyTorch. ``attention="explicit"`` computes attention exactly as the original
    EfficientSAM code does (the benchmark baseline); ``"sdpa"`` uses fused kernels. The
    decoder keeps the original layout: the token layout of the exported graphs was not
    faster in eager torch (fp32 1575 vs 1533 ms, bf16 1186 vs 922 ms, ViT-Ti N=16)."""

    name = "torch"
    precisions: ClassVar[tuple[str, ...]] = RUNTIME_PRECISIONS["torch"]

    def __init__(
        self,
        model: EfficientSam,
        precision: str = "fp32",
        device: str | torch.device | None = None,
        attention: str = "sdpa",
    ) -> None:
        super().__init__(model_contract(model), precision)
        if attention not in ("sdpa", "explicit"):
            raise InputError(f"attention must be 'sdpa' or 'explicit', not {attention!r}")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "fp16" and dev.type != "cuda":
            raise InputError("torch fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        self.device = dev
        self.dtype = DTYPES[precision]
        self.attention = attention
        self.model = model.to(dev).eval()
        self.model.set_fused_attention(attention == "sdpa")
        if self.model.refiner is not None:
            # Its convolutions have few channels: channels-last runs them about 2x faster
            # on the CPU (oneDNN), same results.
            self.model.refiner.to(memory_format=torch.channels_last)

    def describe(self) -> str:
        """``"torch <precision> (<device type>, <attention> attention)"``."""
        return f"torch {self.precision} ({self.device.type}, {self.attention} attention)"

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.precision != "fp32")

    @torch.inference_mode()
    def encode(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """pixels (1, 3, S, S) float32 RGB in [0, 1] -> image embeddings (1, C, G, G) float32
        (normalised on the device, under autocast for fp16/bf16; returned as float32)."""
        x = torch.from_numpy(pixels).to(self.device)
        with self._autocast():
            emb = self.model.encode(normalize_resized(x, self.img_size))
        return emb.float().cpu().numpy()

    @torch.inference_mode()
    def _decode(self, embedding: NDArray[np.float32], boxes: NDArray[np.float32]) -> DecoderOutput:
        emb = torch.from_numpy(embedding).to(self.device)
        b = torch.from_numpy(boxes).to(self.device)
        with self._autocast():
            logits, iou = self.model.decode_boxes(emb, b)
            modal = self.model.decode_boxes(emb, b, decoder="modal") if self.has_modal else None

        def np32(t: torch.Tensor) -> NDArray[np.float32]:
            return t.float().cpu().numpy()

        return DecoderOutput(
            np32(logits),
            np32(iou),
            None if modal is None else np32(modal[0]),
            None if modal is None else np32(modal[1]),
        )

    @torch.inference_mode()
    def _refine(self, crops: NDArray[np.float32]) -> NDArray[np.float32]:
        assert self.model.refiner is not None
        with self._autocast():
            x = torch.from_numpy(crops).to(self.device)
            out = self.model.refiner(x.contiguous(memory_format=torch.channels_last))
        return out.float().cpu().numpy()
