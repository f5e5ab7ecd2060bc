"""Write the synthetic world to disk: COCO-amodal image sets, videos, YOLO detection sets."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from numpy.typing import NDArray

from edge_sameo.data.coco_amodal import annotation_record, write_amodal_coco
from edge_sameo.data.synth import (
    Progress,
    Scene,
    SynthConfig,
    VideoConfig,
    compose_scene,
    compose_video,
    dual_scenes,
    generate_scene,
    item_seed,
    render,
    video_frame,
)
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_bytes, move_mp4_faststart


def write_png(path: Path, image: NDArray[np.uint8]) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG without ``io.write_image``'s per-file
    fsync: a data set is thousands of images, and its ``annotations.json``, written last
    and atomically, is what makes a run complete."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode image {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def _check_count(name: str, value: int) -> None:
    if value < 1:
        raise InputError(f"{name} must be >= 1, got {value}")


def scene_annotations(
    scene: Scene, image_id: int, first_ann_id: int, **extra: Any
) -> list[dict[str, Any]]:
    """Native annotation dicts of a scene's instances (ids from ``first_ann_id``)."""
    out = []
    for n, inst in enumerate(scene.instances):
        fields = dict(extra)
        if inst.target_occlusion is not None:
            fields["target_occlusion"] = round(inst.target_occlusion, 6)
        out.append(
            annotation_record(
                first_ann_id + n,
                image_id,
                inst.category_id,
                inst.amodal,
                inst.visible,
                track_id=inst.track_id,
                depth=inst.depth,
                **fields,
            )
        )
    return out


def _config_info(cfg: SynthConfig, seed: int, **more: Any) -> dict[str, Any]:
    return {"generator": "edge_sameo.data.synth", "seed": seed, "config": asdict(cfg), **more}


def generate_dataset(
    out_dir: str | Path,
    count: int,
    seed: int,
    cfg: SynthConfig | None = None,
    progress: Progress = None,
) -> Path:
    """Write ``count`` synthetic scenes (plus their dual images) as ``images/*.png`` and a
    native COCO-amodal ``annotations.json`` in ``out_dir``; returns the JSON path.

    Scene i uses seed ``item_seed(seed, i)``, so a run is reproducible bit for bit and its
    first scenes equal those of a shorter run. A dual image has ``dual_of`` (the scene's
    image id) and ``dual_track_id`` (the instance it shows unoccluded). ``progress`` is
    called with 1 after each scene.
    """
    _check_count("count", count)
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    w, h = cfg.size
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(count):
        layout = compose_scene(item_seed(seed, i), cfg)
        scene = render(layout)
        items: list[tuple[Scene, str, dict[str, Any]]] = [(scene, f"images/{i:06d}.png", {})]
        scene_id = len(images) + 1
        for d, (dual, track) in enumerate(dual_scenes(layout, scene, cfg)):
            extra = {"dual_of": scene_id, "dual_track_id": track}
            items.append((dual, f"images/{i:06d}_dual{d}.png", extra))
        for sc, name, extra in items:
            image_id = len(images) + 1
            write_png(out / name, sc.image)
            images.append({"id": image_id, "file_name": name, "width": w, "height": h, **extra})
            annotations += scene_annotations(sc, image_id, len(annotations) + 1)
        if progress is not None:
            progress(1)
    return write_amodal_coco(
        out / "annotations.json",
        images,
        annotations,
        cfg.categories,
        info=_config_info(cfg, seed, count=count),
    )


def generate_video(
    out_dir: str | Path,
    frames: int,
    seed: int,
    cfg: SynthConfig | None = None,
    fps: float = 30.0,
    video: VideoConfig | None = None,
    write_frames: bool = False,
    progress: Progress = None,
) -> Path:
    """Write a synthetic clip as ``video.mp4`` (OpenCV, mp4v) and ``annotations.json``.

    The MP4 is fast-start (index first). Every frame is a COCO image with ``video_id`` 1
    and ``frame_index``; annotations carry a ``track_id`` stable over the clip. Objects
    move (linear, curved, bouncing, with varying speed) behind static occluders; with
    ``video.full_occlusion`` one object is fully hidden for at least one frame
    (``occlusion_rate`` 1, empty visible mask).
    ``write_frames`` also writes lossless ``frames/*.png`` and points ``file_name`` at
    them (otherwise ``file_name`` is the video and the frame is read by index).
    """
    _check_count("frames", frames)
    if not fps > 0:
        raise InputError(f"fps must be > 0, got {fps}")
    cfg = cfg or SynthConfig()
    video = video or VideoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, h = cfg.size
    bg, tracks = compose_video(item_seed(seed, 0), cfg, video, frames)
    # The container is picked from the extension, so the temporary name keeps ".mp4".
    tmp = out / ".video.tmp.mp4"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise InputError(f"OpenCV cannot write MP4 (mp4v) to {tmp}")
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    try:
        for f in range(frames):
            scene = video_frame(bg, tracks, f / max(frames - 1, 1))
            writer.write(cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
            name = "video.mp4"
            if write_frames:
                name = f"frames/{f:06d}.png"
                write_png(out / name, scene.image)
            image_id = f + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": name,
                    "width": w,
                    "height": h,
                    "video_id": 1,
                    "frame_index": f,
                }
            )
            annotations += scene_annotations(scene, image_id, len(annotations) + 1)
            if progress is not None:
                progress(1)
    finally:
        writer.release()
    # Index first (fast-start): a cut or half-copied clip still plays up to the cut.
    move_mp4_faststart(tmp, out / "video.mp4")
    motions = {i + 1: tr.kind for i, tr in enumerate(tracks)}
    return write_amodal_coco(
        out / "annotations.json",
        images,
        annotations,
        cfg.categories,
        info=_config_info(cfg, seed, frames=frames, fps=fps, motions=motions),
        videos=[
            {
                "id": 1,
                "file_name": "video.mp4",
                "fps": fps,
                "width": w,
                "height": h,
                "num_frames": frames,
            }
        ],
    )


def yolo_labels(scene: Scene, box: str = "visible", min_visible: int = 16) -> str:
    """YOLO label lines ``class cx cy w h`` (normalised) of a scene; ``box`` is
    ``"visible"`` (what a detector sees, default) or ``"amodal"``. Instances with fewer
    than ``min_visible`` visible pixels are left out (nothing to detect)."""
    if box not in {"visible", "amodal"}:
        raise InputError(f"box must be 'visible' or 'amodal', got {box!r}")
    h, w = scene.image.shape[:2]
    lines = []
    for inst in scene.instances:
        if np.count_nonzero(inst.visible) < min_visible:
            continue
        m = inst.visible if box == "visible" else inst.amodal
        ys = np.flatnonzero(m.any(axis=1))
        xs = np.flatnonzero(m.any(axis=0))
        x0, x1, y0, y1 = xs[0], xs[-1] + 1, ys[0], ys[-1] + 1
        lines.append(
            f"{inst.category_id - 1} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
            f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
        )
    return "\n".join(lines) + ("\n" if lines else "")


def export_yolo(
    out_dir: str | Path,
    count: int,
    seed: int,
    cfg: SynthConfig | None = None,
    val_fraction: float = 0.1,
    box: str = "visible",
    progress: Progress = None,
) -> Path:
    """Write ``count`` synthetic scenes in YOLO detection layout: ``images/{train,val}``,
    ``labels/{train,val}`` (one ``class cx cy w h`` line per object, class = category
    id - 1) and ``data.yaml`` with the class names; returns the data.yaml path. The last
    ``round(count * val_fraction)`` scenes (at least 1 when count > 1) are validation."""
    _check_count("count", count)
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    n_val = round(count * val_fraction)
    if val_fraction > 0 and count > 1:
        n_val = max(n_val, 1)
    for i in range(count):
        split = "val" if i >= count - n_val else "train"
        scene = generate_scene(item_seed(seed, i), cfg)
        write_png(out / "images" / split / f"{i:06d}.png", scene.image)
        atomic_write_bytes(
            out / "labels" / split / f"{i:06d}.txt", yolo_labels(scene, box).encode()
        )
        if progress is not None:
            progress(1)
    data = {
        "path": str(out.resolve()),
        "train": "images/train",
        "val": "images/val" if n_val else "images/train",
        "nc": len(cfg.classes),
        "names": dict(enumerate(cfg.classes)),
    }
    path = out / "data.yaml"
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
    return path
