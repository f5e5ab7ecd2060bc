"""ONNX export of the encoder, the (dual) decoder and, when the model has one, the refiner.

The graphs wrap the *real* submodules of a loaded model (no vendored copy) and rewrite
only what TensorRT cannot take as is:

* the bicubic ``pos_embed`` resize becomes a constant (TensorRT's Resize has no cubic);
* attention uses the explicit form with Q scaled *before* Q·Kᵀ (fusable by TensorRT);
* the decoder's dense positional encoding becomes a constant;
* for opset < 17 ``LayerNormalization`` is decomposed (TensorRT 8.5 / JetPack 5).

The refiner (convolutions, batch norm, max-pool, nearest upsampling) needs no rewrite: it
is exported as it is, in eval mode, so each batch norm folds into its convolution.
"""

from __future__ import annotations

import copy
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_sameo.contract import (
    BOXES,
    CROPS,
    DEFAULT_BOX_PROFILE,
    DEFAULT_OPSET,
    PIXELS,
    ExportContract,
    GraphContract,
    decoder_contract,
    encoder_contract,
    refiner_contract,
)
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_bytes
from edge_sameo.modeling import EfficientSam, set_token_layout
from edge_sameo.modeling.efficient_sam import PIXEL_MEAN, PIXEL_STD

MIN_OPSET = 13


@dataclass(frozen=True)
class ExportConfig:
    """What ``edge-sameo export`` writes. The decoder graph holds the modal head too when
    the model has one; the box axis' profile is (1, min(8, max_boxes), max_boxes)."""

    out_dir: Path
    opset: int = DEFAULT_OPSET
    max_boxes: int = DEFAULT_BOX_PROFILE[2]
    check: bool = True

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= 21:
            raise InputError(f"--opset must be in {MIN_OPSET}..21, got {self.opset}")
        if self.max_boxes < 1:
            raise InputError(f"--max-boxes must be >= 1, got {self.max_boxes}")

    @property
    def box_profile(self) -> tuple[int, int, int]:
        """(min, opt, max) of the box axis: (1, min(8, max_boxes), max_boxes)."""
        return (1, min(DEFAULT_BOX_PROFILE[1], self.max_boxes), self.max_boxes)


def inference_copy(model: EfficientSam) -> EfficientSam:
    """A deep copy prepared for export: explicit attention, a constant pos_embed and the
    decoders' upscaling in token layout (no channel transposes)."""
    m = copy.deepcopy(model).eval().float()
    m.set_fused_attention(False)
    m.image_encoder.freeze_pos_embed()
    set_token_layout(m, True)
    return m


class EncoderGraph(nn.Module):
    """pixels (1, 3, S, S) float32 in [0, 1] -> image_embeddings (1, C, S/p, S/p)."""

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, model: EfficientSam) -> None:
        super().__init__()
        self.encoder = model.image_encoder
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(PIXEL_STD).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (1, 3, S, S) float32 RGB in [0, 1] -> image_embeddings (1, C, S/p, S/p)
        float32, normalised with the ImageNet mean/std inside the graph."""
        return self.encoder((pixels - self.mean) * self.inv_std)


class DecoderGraph(nn.Module):
    """image_embeddings (1, C, h, w) + boxes (N, 4) -> logits (N, 3, L, L), IoU (N, 3)
    for the main decoder, and the same for the modal decoder when ``modal``."""

    def __init__(self, model: EfficientSam, modal: bool) -> None:
        super().__init__()
        self.model = model
        self.modal = modal
        self.register_buffer("dense_pe", model.prompt_encoder.get_dense_pe().detach().clone())

    def forward(
        self, image_embeddings: torch.Tensor, boxes: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """image_embeddings (1, C, h, w) + boxes (N, 4) float32 XYXY in S×S model-input
        pixels -> (logits (N, 3, L, L), IoU (N, 3)) per head, main first then modal."""
        points, labels = self.model.box_prompts(boxes)
        sparse = self.model.prompt_encoder(points, labels)
        heads = [self.model.mask_decoder]
        if self.modal and self.model.modal_decoder is not None:
            heads.append(self.model.modal_decoder)
        outs: list[torch.Tensor] = []
        for head in heads:
            logits, iou = head(image_embeddings, self.dense_pe, sparse, True)
            outs += [logits, iou]
        return tuple(outs)


class RefinerGraph(nn.Module):
    """crops (N, C_in, R, R) float32 (``edge_sameo.refine.crop_inputs``) -> refined logits
    (N, 2, R, R): the model's own refiner, under the node scope ``/refiner/``."""

    def __init__(self, model: EfficientSam) -> None:
        super().__init__()
        if model.refiner is None:
            raise InputError("this model has no refiner")
        self.refiner = model.refiner

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops (N, C_in, R, R) float32 -> refined amodal and visible logits (N, 2, R, R)."""
        return self.refiner(crops)


def _export(
    module: nn.Module, args: tuple[torch.Tensor, ...], contract: GraphContract, opset: int
) -> bytes:
    buf = io.BytesIO()
    target: Any = buf  # torch accepts file objects; its annotation says paths only
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream but is the one that honours
        # low opsets (LayerNorm decomposed for TensorRT 8.5) and plain dynamic_axes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            target,
            dynamo=False,
            opset_version=opset,
            input_names=contract.input_names,
            output_names=contract.output_names,
            dynamic_axes=contract.dynamic_axes() or None,
            do_constant_folding=True,
        )
    return buf.getvalue()


def export_onnx(model: EfficientSam, cfg: ExportConfig) -> ExportContract:
    """Write ``encoder.onnx``, ``decoder.onnx`` (and ``refiner.onnx`` when the model has a
    refiner) and ``contract.json`` into ``cfg.out_dir``.

    With ``cfg.check`` every graph is run on ONNX Runtime against PyTorch and its
    operators are checked against the TensorRT parser tables (see ``engines.checks``).
    """
    m = inference_copy(model)
    mc = m.config
    modal = m.has_modal_decoder
    if m.refiner is not None and m.refiner.config.use_logits and not modal:
        raise InputError("this refiner takes the modal decoder's logits; the model has none")
    enc_c = encoder_contract(mc)
    dec_c = decoder_contract(mc, modal=modal, box_profile=cfg.box_profile)
    pixels = torch.rand(
        enc_c.input(enc_c.input_names[0]).concrete(), generator=torch.Generator().manual_seed(0)
    )
    encoder = EncoderGraph(m)
    with torch.no_grad():
        emb = encoder(pixels)
    # Three boxes (not one) as the example: the traced graph must not specialise N == 1.
    boxes = (
        torch.tensor([[0.1, 0.1, 0.6, 0.5], [0.3, 0.2, 0.9, 0.95], [0.05, 0.5, 0.4, 0.9]])
        * mc.img_size
    )
    files = {
        enc_c.file: _export(encoder, (pixels,), enc_c, cfg.opset),
        dec_c.file: _export(DecoderGraph(m, modal), (emb, boxes), dec_c, cfg.opset),
    }
    ref_c = None
    if m.refiner is not None:
        ref_c = refiner_contract(m.refiner.config, box_profile=cfg.box_profile)
        crops = torch.randn(
            ref_c.input(ref_c.input_names[0]).concrete(num_boxes=3),
            generator=torch.Generator().manual_seed(0),
        )
        files[ref_c.file] = _export(RefinerGraph(m), (crops,), ref_c, cfg.opset)
    out = Path(cfg.out_dir)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    contract = ExportContract(
        model=mc,
        encoder=enc_c,
        decoder=dec_c,
        opset=cfg.opset,
        sha256={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
        refiner=ref_c,
        refiner_config=None if m.refiner is None else m.refiner.config,
    )
    contract.write(out)
    if cfg.check:
        from edge_sameo.engines.checks import check_export

        check_export(out, model)
    return contract


def export_to(model: EfficientSam, directory: Path) -> None:
    """The checked export of ``model`` (default :class:`ExportConfig`) into ``directory``:
    the ``export`` the CLI hands the runtime (``edge_sameo.backends.registry.Export``)."""
    export_onnx(model, ExportConfig(out_dir=directory))


def reference_inputs(
    contract: ExportContract, seed: int = 0, num_boxes: int = 4
) -> dict[str, np.ndarray]:
    """Deterministic inputs for graph checks, keyed by tensor name: pixels (1, 3, S, S) in
    [0, 1], boxes (N, 4) XYXY in the S×S frame and, with a refiner, crops (N, C, R, R)
    (standard normal: the range of the normalised RGB and logit channels)."""
    rng = np.random.default_rng(seed)
    s = contract.model.img_size
    pixels = rng.random((1, 3, s, s), dtype=np.float32)
    xy = rng.uniform(0, s * 0.6, (num_boxes, 2))
    wh = rng.uniform(s * 0.1, s * 0.4, (num_boxes, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    out = {PIXELS: pixels, BOXES: boxes}
    if contract.refiner is not None:
        shape = contract.refiner.input(CROPS).concrete(num_boxes=num_boxes)
        out[CROPS] = rng.standard_normal(shape, dtype=np.float32)
    return out
