"""Pure ``nn.Module`` definitions of EfficientSAM (no I/O, no device choice)."""

from edge_sameo.modeling.config import ModelConfig
from edge_sameo.modeling.efficient_sam import EfficientSam, set_token_layout
from edge_sameo.modeling.image_encoder import ImageEncoderViT
from edge_sameo.modeling.mask_decoder import MaskDecoder
from edge_sameo.modeling.prompt_encoder import PromptEncoder
from edge_sameo.modeling.refiner import MaskRefiner, RefinerConfig
from edge_sameo.modeling.transformer import TwoWayTransformer

__all__ = [
    "EfficientSam",
    "ImageEncoderViT",
    "MaskDecoder",
    "MaskRefiner",
    "ModelConfig",
    "PromptEncoder",
    "RefinerConfig",
    "TwoWayTransformer",
    "set_token_layout",
]
