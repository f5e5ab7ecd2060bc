"""edge-sameo: amodal segmentation (SAMEO on EfficientSAM) for live video on edge devices."""

from edge_sameo.build import CONFIGS, build_model
from edge_sameo.checkpoint import load_model, save_model
from edge_sameo.modeling import EfficientSam, ModelConfig
from edge_sameo.predictor import AmodalPredictor, Prediction

__version__ = "0.1.0"

__all__ = [
    "CONFIGS",
    "AmodalPredictor",
    "EfficientSam",
    "ModelConfig",
    "Prediction",
    "build_model",
    "load_model",
    "save_model",
]
