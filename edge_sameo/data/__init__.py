"""Ground truth for amodal segmentation: the synthetic world, the COCO-amodal format and
its loaders, and Amodal-LVIS-style synthesis from COCO instance datasets."""

from __future__ import annotations

from edge_sameo.data.coco_amodal import (
    FORMAT,
    AmodalAnnotation,
    AmodalDataset,
    AmodalImage,
    annotation_record,
    load_amodal_coco,
    parse_amodal_coco,
    write_amodal_coco,
)
from edge_sameo.data.from_coco import (
    AmodalFn,
    CompleteObject,
    FromCocoConfig,
    select_complete,
    synthesize_from_coco,
    synthesize_pairs,
)
from edge_sameo.data.generate import export_yolo, generate_dataset, generate_video
from edge_sameo.data.synth import (
    CLASS_NAMES,
    TEXTURES,
    Instance,
    Scene,
    SynthConfig,
    VideoConfig,
    generate_scene,
    item_seed,
    iter_scenes,
)

__all__ = [
    "CLASS_NAMES",
    "FORMAT",
    "TEXTURES",
    "AmodalAnnotation",
    "AmodalDataset",
    "AmodalFn",
    "AmodalImage",
    "CompleteObject",
    "FromCocoConfig",
    "Instance",
    "Scene",
    "SynthConfig",
    "VideoConfig",
    "annotation_record",
    "export_yolo",
    "generate_dataset",
    "generate_scene",
    "generate_video",
    "item_seed",
    "iter_scenes",
    "load_amodal_coco",
    "parse_amodal_coco",
    "select_complete",
    "synthesize_from_coco",
    "synthesize_pairs",
    "write_amodal_coco",
]
