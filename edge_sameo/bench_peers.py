"""Peers for ``edge-sameo bench --peers``: the pipeline a user would assemble from another
package, timed on the same image and boxes in the same rounds as the runtimes.

* ``ultralytics MobileSAM``: ultralytics' SAM ``Predictor`` with the MobileSAM architecture
  (TinyViT encoder at 1024 px, SAM's prompt encoder and mask decoder), torch fp32 on the CPU,
  random weights (no download; the cost does not depend on the weights). A frame is
  ``set_image`` (preprocess + encoder) then one call with the N boxes (decoder + masks at
  image size), as its documentation shows.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Peers ``--peers`` can name; ``all`` is every one.
PEERS = ("ultralytics-mobilesam",)


class UltralyticsMobileSam:
    """ultralytics' SAM ``Predictor`` with a random-weight MobileSAM, torch fp32 on the
    CPU. ``image``: (H, W, 3) uint8 RGB; ``boxes``: N -> (N, 4) float32 XYXY in image pixels."""

    name = "ultralytics MobileSAM (torch fp32)"

    def __init__(self, image: NDArray[np.uint8], boxes: dict[int, NDArray[np.float32]]) -> None:
        from ultralytics.models.sam.build import build_mobile_sam
        from ultralytics.models.sam.predict import Predictor

        os.environ.setdefault("YOLO_OFFLINE", "1")  # never the network, never pip
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        t0 = time.perf_counter()
        self.predictor = Predictor(
            overrides={
                "task": "segment",
                "mode": "predict",
                "imgsz": 1024,
                "device": "cpu",
                "conf": 0.0,  # keep every box's mask: the same work as ours
                "save": False,
                "verbose": False,
            }
        )
        self.predictor.setup_model(model=build_mobile_sam(), verbose=False)
        self.setup_s = time.perf_counter() - t0
        self.bgr = np.ascontiguousarray(image[:, :, ::-1])
        self.boxes = boxes
        self.times: dict[str, list[float]] = {}
        self.round(record=False)

    def round(self, record: bool = True) -> None:
        """Time one round: ``set_image`` (the encoder), then one call per box count
        (``frame/<N>`` = encoder + that call), kept when ``record``."""
        t = time.perf_counter()
        self.predictor.set_image(self.bgr)
        times = {"encoder": time.perf_counter() - t}
        for n, boxes in self.boxes.items():
            t = time.perf_counter()
            self.predictor(bboxes=boxes)
            times[f"frame/{n}"] = times["encoder"] + time.perf_counter() - t
        if record:
            for k, v in times.items():
                self.times.setdefault(k, []).append(v)

    def report(self) -> dict[str, Any]:
        """Name, set-up seconds and the :class:`~edge_sameo.bench.StageStats` of every
        timed stage."""
        from edge_sameo.bench import StageStats

        return {
            "name": self.name,
            "setup_s": self.setup_s,
            "stages": {k: vars(StageStats.of(v)) for k, v in self.times.items()},
        }

    def close(self) -> None:
        """Drop the predictor (and with it the model)."""
        self.predictor = None


def make_peer(name: str, image: NDArray[np.uint8], boxes: dict[int, NDArray[np.float32]]) -> Any:
    """The peer ``name`` (one of :data:`PEERS`) on ``image`` and ``boxes`` as
    :class:`UltralyticsMobileSam` takes them; ``ValueError`` for an unknown name."""
    if name == "ultralytics-mobilesam":
        return UltralyticsMobileSam(image, boxes)
    raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
