"""Named model configurations and the builder (the ``build_sam.py`` of this project)."""

from __future__ import annotations

from edge_sameo.modeling import (
    EfficientSam,
    ImageEncoderViT,
    MaskDecoder,
    ModelConfig,
    PromptEncoder,
    TwoWayTransformer,
)

CONFIGS: dict[str, ModelConfig] = {
    "vitt": ModelConfig(name="vitt", encoder_dim=192, encoder_heads=3),
    "vits": ModelConfig(name="vits", encoder_dim=384, encoder_heads=6),
    # The bundled model (1.4 M parameters with both decoders): 256 px for real time on a
    # 2-core CPU; trained here on the synthetic world (edge_sameo/models/nano/MODEL_CARD.md).
    "nano": ModelConfig(
        name="nano",
        img_size=256,
        encoder_dim=128,
        encoder_depth=4,
        encoder_heads=4,
        pretrain_img_size=256,
        embed_dim=64,
        decoder_depth=2,
        decoder_heads=4,
        decoder_mlp_dim=256,
        upscaling_dims=(32, 16),
        iou_head_hidden_dim=64,
    ),
    # A few-MB model at 128 px for unit tests: same code, every stage exercised.
    "tiny": ModelConfig(
        name="tiny",
        img_size=128,
        encoder_dim=32,
        encoder_depth=2,
        encoder_heads=2,
        pretrain_img_size=64,
        embed_dim=32,
        decoder_depth=1,
        decoder_heads=2,
        decoder_mlp_dim=64,
        upscaling_dims=(16, 8),
        iou_head_hidden_dim=32,
    ),
}


def get_config(name_or_config: str | ModelConfig) -> ModelConfig:
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    try:
        return CONFIGS[name_or_config]
    except KeyError:
        raise ValueError(
            f"unknown model config {name_or_config!r}; choose one of {', '.join(CONFIGS)}"
        ) from None


def build_model(config: str | ModelConfig = "vitt", *, modal_decoder: bool = False) -> EfficientSam:
    """Build an EfficientSAM (randomly initialised) from a named or explicit config.

    The ``state_dict`` keys, shapes and order equal the original checkpoint's. With
    ``modal_decoder`` a second decoder (``modal_decoder.*`` keys) is attached: the
    original visible-mask decoder beside an amodal ``mask_decoder``.
    """
    cfg = get_config(config)
    encoder = ImageEncoderViT(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.encoder_dim,
        depth=cfg.encoder_depth,
        num_heads=cfg.encoder_heads,
        mlp_ratio=cfg.mlp_ratio,
        neck_dim=cfg.embed_dim,
        pretrain_img_size=cfg.pretrain_img_size,
    )
    prompt_encoder = PromptEncoder(
        cfg.embed_dim, (cfg.grid_size, cfg.grid_size), (cfg.img_size, cfg.img_size)
    )
    model = EfficientSam(cfg, encoder, prompt_encoder, build_mask_decoder(cfg))
    if modal_decoder:
        model.modal_decoder = build_mask_decoder(cfg)
    return model.eval()


def build_mask_decoder(cfg: ModelConfig) -> MaskDecoder:
    return MaskDecoder(
        transformer_dim=cfg.embed_dim,
        transformer=TwoWayTransformer(
            cfg.decoder_depth, cfg.embed_dim, cfg.decoder_heads, cfg.decoder_mlp_dim
        ),
        num_multimask_outputs=cfg.num_multimask_outputs,
        iou_head_depth=cfg.iou_head_depth,
        iou_head_hidden_dim=cfg.iou_head_hidden_dim,
        upscaling_layer_dims=cfg.upscaling_dims,
    )
