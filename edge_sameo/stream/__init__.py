"""Live amodal segmentation: sources -> detector -> encoder/decoders -> tracker -> sinks."""

from edge_sameo.stream.detectors import (
    CallableDetector,
    Detections,
    Detector,
    GroundTruthDetector,
    KeyframeDetector,
    ReplayDetector,
    YOLODetector,
)
from edge_sameo.stream.objects import ObjectResult, assign_order
from edge_sameo.stream.pipeline import FrameResult, StreamConfig, stream
from edge_sameo.stream.sources import (
    Frame,
    FrameSource,
    ReconnectPolicy,
    open_source,
)
from edge_sameo.stream.temporal import TemporalConfig

__all__ = [
    "CallableDetector",
    "Detections",
    "Detector",
    "Frame",
    "FrameResult",
    "FrameSource",
    "GroundTruthDetector",
    "KeyframeDetector",
    "ObjectResult",
    "ReconnectPolicy",
    "ReplayDetector",
    "StreamConfig",
    "TemporalConfig",
    "YOLODetector",
    "assign_order",
    "open_source",
    "stream",
]
