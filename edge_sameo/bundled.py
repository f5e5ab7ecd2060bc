"""The bundled models, shipped inside the package (``edge_sameo/models/``) and found with
:mod:`importlib.resources`, so a wheel installed anywhere runs offline. They are small
models trained on the project's synthetic world (see each folder's ``MODEL_CARD.md``),
not the EfficientSAM / SAMEO weights.

- ``NANO``: the nano SAM (encoder, amodal and visible decoders, refiner), ``nano.pt``;
- ``DETECTOR``: the YOLOv8n detector's OpenVINO export (the faster one on CPUs);
- ``DETECTOR_WEIGHTS``: the same detector as ultralytics weights (``.pt``);
- ``DETECTOR_INT8``: its INT8 OpenVINO export (``--detector int8``): a faster detect stage,
  the same held-out box AP50 (its model card);
- :func:`default_detector`: which of the two exports ``run`` and ``demo`` use on this CPU.
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


def default_detector() -> tuple[Path, str]:
    """The bundled detector export for this CPU, and why: the INT8 export on x86 CPUs
    without AVX-512 (the AVX2 class), where the float export runs in fp32 and INT8 takes
    about 0.7x its time for the same figures; the float export elsewhere, where OpenVINO
    runs it in bf16 or the INT8 export loses demo accuracy (docs/BENCHMARKS.md, "x86 AVX2,
    2 cores"). ``--detector float`` or ``int8`` chooses."""
    from edge_sameo.backends import openvino_backend

    if openvino_backend.cpu_has_avx512() is False:
        return DETECTOR_INT8, "INT8: this CPU has no AVX-512"
    return DETECTOR, "float"
