"""The bundled models, shipped inside the package (``edge_sameo/models/``) and found with
:mod:`importlib.resources`, so a wheel installed anywhere runs offline. They are small
models trained on the project's synthetic world (see each folder's ``MODEL_CARD.md``),
not the EfficientSAM / SAMEO weights.

- ``NANO``: the nano SAM (encoder, amodal and visible decoders, refiner), ``nano.pt``;
- ``DETECTOR``: the YOLOv8n detector's OpenVINO export (the faster one on CPUs);
- ``DETECTOR_WEIGHTS``: the same detector as ultralytics weights (``.pt``);
- ``DETECTOR_INT8``: its INT8 OpenVINO export (``--detector int8``): a faster detect stage,
  the same held-out box AP50 (its model card).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The folder of the bundled models inside the installed package.
MODELS = Path(str(resources.files("edge_sameo").joinpath("models")))
NANO = MODELS / "nano" / "nano.pt"
DETECTOR = MODELS / "detector" / "yolov8n_synth_openvino_model"
DETECTOR_WEIGHTS = MODELS / "detector" / "yolov8n_synth.pt"
DETECTOR_INT8 = MODELS / "detector" / "yolov8n_synth_int8_openvino_model"
