"""``calibrate``: build a precision variant of an export and measure it against fp32.

``CalibrateConfig`` is what ``edge-sameo calibrate`` maps its flags onto.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge_sameo.calib.batcher import BatcherConfig, ImageBatcher
from edge_sameo.calib.fp16 import Fp16Config, build_fp16
from edge_sameo.calib.qdq import QdqConfig, build_int8
from edge_sameo.calib.report import AccuracyReport, Gates, compare_precision
from edge_sameo.contract import ExportContract
from edge_sameo.errors import InputError
from edge_sameo.precision import CALIBRATED_PRECISIONS, check_precision


@dataclass(frozen=True)
class CalibrateConfig:
    """onnx_dir: an export folder (``contract.json`` + fp32 graphs). data: calibration
    images (fp16 needs none; its report still uses the held-out ones after them).
    eval_count: held-out images for the report. threads: ORT intra-op threads (0 = default).
    """

    onnx_dir: Path
    precision: str
    data: BatcherConfig = field(default_factory=BatcherConfig)
    eval_count: int = 8
    gates: Gates = field(default_factory=Gates)
    fp16: Fp16Config = field(default_factory=Fp16Config)
    qdq: QdqConfig = field(default_factory=QdqConfig)
    threads: int = 0

    def __post_init__(self) -> None:
        check_precision(self.precision, CALIBRATED_PRECISIONS)
        if self.eval_count < 1:
            raise InputError(f"eval count must be >= 1, got {self.eval_count}")
        if self.threads < 0:
            raise InputError(f"threads must be >= 0, got {self.threads}")


def build_precision(cfg: CalibrateConfig) -> list[Path]:
    """Write ``<graph>.<precision>.onnx`` for every graph of ``cfg.onnx_dir`` (encoder, decoder
    and, when the export has one, refiner)."""
    if cfg.precision == "fp16":
        return build_fp16(cfg.onnx_dir, cfg.fp16)
    return build_int8(cfg.onnx_dir, cfg.data, cfg.qdq, threads=cfg.threads)


def calibrate(cfg: CalibrateConfig) -> AccuracyReport:
    """Build the variant, then compare it with fp32 on the images after the calibration ones."""
    contract = ExportContract.read(cfg.onnx_dir)  # bad folder: InputError before any work
    build_precision(cfg)
    held_out = ImageBatcher(cfg.data, contract.model.img_size).held_out(cfg.eval_count)
    return compare_precision(cfg.onnx_dir, cfg.precision, held_out, threads=cfg.threads)
