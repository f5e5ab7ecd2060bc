"""``ImageBatcher``: the images (and box prompts) that calibration and inference checks see.

One class for both, so calibration, the accuracy report and any inference loop get the
*same* preprocessing (``edge_sameo.preprocess.resize_pixels``, the encoder-graph input).

Sources (``BatcherConfig.source``):

* ``synthetic`` — scenes of the synthetic amodal world (``edge_sameo.data``); box prompts
  are the ground-truth boxes of the visible masks (what a detector reports), jittered;
* ``video`` — frames of a video file (OpenCV), every ``frame_stride``-th;
* ``folder`` — the images of a folder, in a seeded shuffle of their sorted names;
* ``reference`` — ``edge_sameo.seeded.reference_image`` variants (no data needed).

Without ground truth, boxes come from image content (bounding boxes of edge regions)
topped up with random boxes, all jittered. Everything is a function of the seed; item
``i`` of a source is the same whatever ``count`` is, so ``held_out`` gives images that
the calibration run never saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend
from edge_sameo.contract import BOXES, CROPS, IMAGE_EMBEDDINGS, PIXELS
from edge_sameo.errors import InputError
from edge_sameo.paths import require_file
from edge_sameo.preprocess import boxes_to_model_frame, resize_pixels

SOURCES = ("synthetic", "video", "folder", "reference")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Standard deviation of the box-corner jitter, as a fraction of the box side (SAM's
#: training noise is 10 % of the side; detectors are usually tighter).
BOX_JITTER = 0.05

Feed = dict[str, NDArray[np.float32]]


class EncoderRunner(Protocol):
    """Anything with ONNX Runtime's ``run``; the fp32 encoder session in practice."""

    def run(self, output_names: Any, input_feed: Any) -> list[Any]: ...


@dataclass(frozen=True)
class BatcherConfig:
    """Which images, how many, and how the box prompts are drawn.

    source: one of ``SOURCES``; path: the video file or image folder (video/folder only).
    count: items to yield at most (a video or folder may hold fewer). start: items of the
    source to skip first (``ImageBatcher.held_out`` uses it). boxes_per_image: box
    prompts per image (fewer when ground truth has fewer objects). frame_stride: take
    every k-th video frame. image_hw: (H, W) of the synthetic and reference images.
    """

    source: str = "synthetic"
    path: Path | None = None
    count: int = 32
    start: int = 0
    seed: int = 0
    boxes_per_image: int = 4
    frame_stride: int = 10
    image_hw: tuple[int, int] = (480, 640)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise InputError(f"source must be one of {', '.join(SOURCES)}, not {self.source!r}")
        if self.source in ("video", "folder"):
            if self.path is None:
                raise InputError(f"source {self.source!r} needs a path")
            p = Path(self.path)
            if self.source == "video":
                require_file(p, "video")
            if self.source == "folder" and not p.is_dir():
                raise InputError(f"image folder not found: {p}")
        if self.count < 1 or self.start < 0:
            raise InputError(f"count must be >= 1 and start >= 0, got {self.count}, {self.start}")
        if self.boxes_per_image < 1 or self.frame_stride < 1:
            raise InputError("boxes_per_image and frame_stride must be >= 1")
        h, w = self.image_hw
        if h < 32 or w < 32:
            raise InputError(f"image_hw must be at least 32x32, got {self.image_hw}")

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for ``calib_meta.json`` and reports)."""
        d = asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        d.pop("progress")
        return d


@dataclass(frozen=True, eq=False)
class CalibSample:
    """One image and its box prompts.

    image: (H, W, 3) uint8 RGB. boxes: (N, 4) float32 XYXY in image pixels, N >= 1.
    name: where it came from (file name, frame or scene index).
    """

    image: NDArray[np.uint8]
    boxes: NDArray[np.float32]
    name: str


def jitter_boxes(
    boxes: NDArray[np.float32], image_hw: tuple[int, int], rng: np.random.Generator
) -> NDArray[np.float32]:
    """(N, 4) XYXY image pixels -> the same with each corner moved by N(0, BOX_JITTER·side),
    clipped to the image and kept at least 2 px wide and high."""
    h, w = image_hw
    b = boxes.astype(np.float64)
    side = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]] * 2, axis=1)
    b = b + rng.normal(0.0, BOX_JITTER, b.shape) * side
    x1 = np.clip(np.minimum(b[:, 0], b[:, 2]), 0, w - 2)
    y1 = np.clip(np.minimum(b[:, 1], b[:, 3]), 0, h - 2)
    x2 = np.clip(np.maximum(b[:, 0], b[:, 2]), x1 + 2, w)
    y2 = np.clip(np.maximum(b[:, 1], b[:, 3]), y1 + 2, h)
    return np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)


def random_boxes(
    n: int, image_hw: tuple[int, int], rng: np.random.Generator
) -> NDArray[np.float32]:
    """(n, 4) XYXY boxes with sides 10–60 % of the image, inside the image."""
    h, w = image_hw
    wh = rng.uniform(0.1, 0.6, (n, 2)) * np.array([w, h])
    xy = rng.uniform(0.0, 1.0, (n, 2)) * (np.array([w, h]) - wh)
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def content_boxes(
    image: NDArray[np.uint8], n: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """(n, 4) XYXY boxes around the largest edge regions of ``image`` (H, W, 3) uint8 RGB,
    topped up with random boxes, then jittered: prompts that look like detections."""
    import cv2

    h, w = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    edges = cv2.dilate(cv2.Canny(gray, 50, 150), np.ones((5, 5), np.uint8), iterations=2)
    contours, _ = cv2.findContours(edges, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    rects = [cv2.boundingRect(c) for c in contours]
    area = float(h * w)
    rects = [r for r in rects if 0.01 * area <= r[2] * r[3] <= 0.9 * area]
    rects.sort(key=lambda r: -r[2] * r[3])
    found = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in rects[:n]], np.float32)
    found = found.reshape(-1, 4)
    if len(found) < n:
        found = np.concatenate([found, random_boxes(n - len(found), (h, w), rng)])
    return jitter_boxes(found, (h, w), rng)


class ImageBatcher:
    """Yields calibration/inference samples and the feeds of the encoder, decoder and
    refiner graphs.

    img_size: S of the model (the encoder input is (1, 3, S, S)).
    """

    def __init__(self, cfg: BatcherConfig, img_size: int) -> None:
        if img_size < 16:
            raise InputError(f"img_size must be >= 16, got {img_size}")
        self.cfg = cfg
        self.img_size = img_size

    def held_out(self, count: int) -> ImageBatcher:
        """A batcher over the ``count`` items that follow this one's: never calibrated on."""
        return ImageBatcher(
            replace(self.cfg, start=self.cfg.start + self.cfg.count, count=count), self.img_size
        )

    # ------------------------------------------------------------------ samples

    def samples(self, desc: str = "images") -> Iterator[CalibSample]:
        """Up to ``cfg.count`` samples, deterministic for the config (tqdm progress)."""
        from tqdm import tqdm

        source = {
            "synthetic": self._synthetic,
            "video": self._video,
            "folder": self._folder,
            "reference": self._reference,
        }[self.cfg.source]
        with tqdm(
            total=self.cfg.count, desc=desc, disable=not self.cfg.progress, leave=False
        ) as bar:
            for sample in source():
                yield sample
                bar.update(1)

    def _rng(self, index: int) -> np.random.Generator:
        # Per-item generator: item i's boxes do not depend on count or start.
        return np.random.default_rng([self.cfg.seed, index])

    def _boxes_for(self, image: NDArray[np.uint8], index: int) -> NDArray[np.float32]:
        return content_boxes(image, self.cfg.boxes_per_image, self._rng(index))

    def _indices(self) -> range:
        return range(self.cfg.start, self.cfg.start + self.cfg.count)

    def _synthetic(self) -> Iterator[CalibSample]:
        try:
            from edge_sameo.data import SynthConfig, generate_scene, item_seed
            from edge_sameo.masks import mask_to_box
        except ImportError as exc:  # the synthetic world is optional here
            raise InputError(f"the synthetic source is unavailable ({exc})") from None
        h, w = self.cfg.image_hw
        synth = SynthConfig(size=(w, h))
        for i in self._indices():
            scene = generate_scene(item_seed(self.cfg.seed, i), synth)
            rng = self._rng(i)
            gt = [mask_to_box(inst.visible) for inst in scene.instances if inst.visible.any()]
            order = rng.permutation(len(gt))[: self.cfg.boxes_per_image]
            boxes = np.stack([gt[j] for j in order]) if len(order) else random_boxes(1, (h, w), rng)
            yield CalibSample(scene.image, jitter_boxes(boxes, (h, w), rng), f"scene {i}")

    def _reference(self) -> Iterator[CalibSample]:
        from edge_sameo.seeded import reference_image

        h, w = self.cfg.image_hw
        for i in self._indices():
            image = reference_image(h, w, seed=self.cfg.seed * 100_003 + i)
            yield CalibSample(image, self._boxes_for(image, i), f"reference {i}")

    def _folder(self) -> Iterator[CalibSample]:
        from edge_sameo.io import read_image

        assert self.cfg.path is not None
        files = sorted(
            p for p in Path(self.cfg.path).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.cfg.path}")
        order = np.random.default_rng(self.cfg.seed).permutation(len(files))
        for i in self._indices():
            if i >= len(files):
                return
            path = files[int(order[i])]
            image = read_image(path)
            yield CalibSample(image, self._boxes_for(image, i), path.name)

    def _video(self) -> Iterator[CalibSample]:
        import cv2

        cap = cv2.VideoCapture(str(self.cfg.path))
        if not cap.isOpened():
            raise InputError(f"cannot open video {self.cfg.path}")
        try:
            stride = self.cfg.frame_stride
            frame_no = 0
            for i in self._indices():
                target = i * stride
                while frame_no < target:  # grab() skips without decoding
                    if not cap.grab():
                        return
                    frame_no += 1
                ok, bgr = cap.read()
                if not ok:
                    return
                frame_no += 1
                image = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
                yield CalibSample(image, self._boxes_for(image, i), f"frame {target}")
        finally:
            cap.release()

    # ------------------------------------------------------------------ graph feeds

    def pixels(self, sample: CalibSample) -> NDArray[np.float32]:
        """(1, 3, S, S) float32 in [0, 1]: the encoder input of ``sample``."""
        return resize_pixels(sample.image, self.img_size)

    def model_boxes(self, sample: CalibSample) -> NDArray[np.float32]:
        """(N, 4) float32 XYXY in the S×S model frame: the decoder's box input."""
        hw = (int(sample.image.shape[0]), int(sample.image.shape[1]))
        boxes = boxes_to_model_frame(torch.from_numpy(sample.boxes), hw, self.img_size)
        return np.ascontiguousarray(boxes.numpy().astype(np.float32))

    def encoder_feeds(self) -> Iterator[Feed]:
        """``{PIXELS: (1, 3, S, S)}`` per image."""
        for sample in self.samples("encoder feeds"):
            yield {PIXELS: self.pixels(sample)}

    def decoder_feeds(self, encoder: EncoderRunner) -> Iterator[Feed]:
        """``{IMAGE_EMBEDDINGS: (1, C, h, w), BOXES: (N, 4)}`` per image, the embeddings
        computed by ``encoder`` (the fp32 encoder graph on ONNX Runtime): real inputs,
        not random tensors."""
        for sample in self.samples("decoder feeds"):
            (emb,) = encoder.run([IMAGE_EMBEDDINGS], {PIXELS: self.pixels(sample)})
            yield {IMAGE_EMBEDDINGS: emb, BOXES: self.model_boxes(sample)}

    def refiner_feeds(self, backend: Backend) -> Iterator[Feed]:
        """``{CROPS: (N, C, R, R)}`` per image: the refiner's inputs as the app builds them
        (the predictor on ``backend``: decoder logits -> windows -> ``crop_inputs``), where
        ``backend`` runs the fp32 graphs (``calib.session.cpu_backend``)."""
        from edge_sameo.backends.recording import RecordingBackend
        from edge_sameo.predictor import AmodalPredictor

        if not backend.has_refiner:
            raise InputError("this export has no refiner")
        recorder = RecordingBackend(backend)
        predictor = AmodalPredictor(recorder)
        for sample in self.samples("refiner feeds"):
            predictor.set_image(sample.image)
            predictor.predict(sample.boxes)
            assert recorder.crops is not None
            yield {CROPS: recorder.crops}
