"""MCAP recordings of a run (``edge-sameo run --mcap``), for Foxglove and ROS 2 tools.

Two variants, the same frames:

* ``foxglove``: JSON messages with Foxglove's well-known schemas (``jsonschema``), opened
  by Foxglove without extensions. Topics: :data:`CAMERA_TOPIC` and
  :data:`ANNOTATED_TOPIC` (``foxglove.CompressedImage``, JPEG), :data:`ANNOTATIONS_TOPIC`
  (``foxglove.ImageAnnotations``: box outlines and labels over the camera image) and
  :data:`OBJECTS_TOPIC` (``edge_sameo.FrameObjects``: the JSONL record of the frame).
* ``ros2``: CDR messages with ROS 2 definitions (profile ``ros2``), read by ``ros2 bag``,
  rosbags and mcap-ros2-support: both images as ``sensor_msgs/msg/CompressedImage``, the
  JSONL record as ``std_msgs/msg/String`` on :data:`OBJECTS_TOPIC` (no standard message
  holds amodal masks), and two label images (``sensor_msgs/msg/CompressedImage``, 16-bit
  PNG, pixel = 1-based index into the record's ``objects``, 0 = none):
  :data:`VISIBLE_LABELS_TOPIC` (the object seen there) and :data:`OCCLUDED_LABELS_TOPIC`
  (the front-most object hidden there).

Every message of a frame has the frame's source time (``Frame.timestamp``) as log time,
publish time and header stamp. The file follows the rules of the other outputs
(:mod:`edge_sameo.stream.sinks`): written as ``.NAME.XXXXXXXX.part.mcap`` next to its
path, moved into place at a normal end, kept (and finalised, so any MCAP reader opens it)
when the run fails. Each message is its own chunk and the file is flushed per frame: a run
killed outright leaves every finished frame in chunks on disk, missing only the summary
that ``mcap recover`` rebuilds. Needs ``pip install "edge-sameo[mcap]"``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo import __version__
from edge_sameo.annotators import color, occlusion_label
from edge_sameo.errors import InputError, require
from edge_sameo.io import temp_sibling
from edge_sameo.stream.objects import ObjectResult
from edge_sameo.stream.pipeline import FrameResult
from edge_sameo.stream.sinks import _finish

#: ``--mcap-format`` choices; the first is the default.
MCAP_FORMATS = ("foxglove", "ros2")

CAMERA_TOPIC = "/camera/image/compressed"
ANNOTATED_TOPIC = "/edge_sameo/annotated/compressed"
ANNOTATIONS_TOPIC = "/edge_sameo/annotations"
OBJECTS_TOPIC = "/edge_sameo/objects"
VISIBLE_LABELS_TOPIC = "/edge_sameo/visible_labels/compressed"
OCCLUDED_LABELS_TOPIC = "/edge_sameo/occluded_labels/compressed"

#: ``frame_id`` of every image and annotation: the camera's optical frame.
FRAME_ID = "camera"

#: The writers close a chunk as soon as it holds more than this many bytes: with 1, every
#: message is its own chunk and reaches the file as soon as it is written (mcap-ros2-support's
#: writer has no flush of its own; the images are JPEG/PNG, which compressing a chunk of
#: several messages would not shrink).
_CHUNK_PER_MESSAGE = 1


class McapSink:
    """A :class:`~edge_sameo.stream.app.ResultSink` writing an MCAP recording.

    path: the ``.mcap`` file; fmt: one of :data:`MCAP_FORMATS`; jpeg_quality: 1..100 for
    the camera and annotated images. The file is opened at the first frame.
    """

    wants_image = True

    def __init__(self, path: str | Path, fmt: str = "foxglove", jpeg_quality: int = 90) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() != ".mcap":
            raise InputError(f"--mcap must be an .mcap file, got {self.path}")
        if fmt not in MCAP_FORMATS:
            raise InputError(f"--mcap-format must be one of {', '.join(MCAP_FORMATS)}, got {fmt}")
        if not 1 <= jpeg_quality <= 100:
            raise InputError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        # Refuse a missing package now, before the run starts, not at its first frame.
        require("mcap", "mcap")
        if fmt == "ros2":
            require("mcap_ros2", "mcap")
        self.format = fmt
        self.jpeg_quality = jpeg_quality
        self.frames = 0
        self._tmp: Path | None = None
        self._file: IO[bytes] | None = None
        self._recorder: _FoxgloveRecorder | _Ros2Recorder | None = None

    def write(
        self, result: FrameResult, record: dict[str, Any], annotated: NDArray[np.uint8] | None
    ) -> None:
        """Record one frame. ``record``: ``result.to_json()``; ``annotated``: (H, W, 3) uint8
        RGB, or None to leave the annotated topic out for this frame."""
        if self._recorder is None:
            self._tmp = temp_sibling(self.path, suffix=".part.mcap")
            self._file = open(self._tmp, "wb")
            if self.format == "ros2":
                self._recorder = _Ros2Recorder(self._file, self.jpeg_quality)
            else:
                self._recorder = _FoxgloveRecorder(self._file, self.jpeg_quality)
        assert self._file is not None
        self._recorder.write(result, record, annotated)
        self._file.flush()
        self.frames += 1

    def close(self, commit: bool = True) -> Path | None:
        """Write the summary and footer, then move the file onto ``path`` (``commit``) or
        return the kept, complete ``.part.mcap`` file."""
        try:
            if self._recorder is not None:
                self._recorder.finish()
        finally:
            self._recorder = None
            if self._file is not None:
                self._file.close()
                self._file = None
        kept = _finish(self._tmp, self.path, self.frames, commit)
        self._tmp = None
        return kept


def _nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def _encode(image: NDArray[Any], ext: str, params: list[int] | None = None) -> bytes:
    """(H, W, 3) uint8 RGB or (H, W) uint16 -> JPEG/PNG bytes."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:
        raise RuntimeError(f"OpenCV cannot encode a {image.shape} {image.dtype} image as {ext}")
    return bytes(buf)


def _jpeg(rgb: NDArray[np.uint8], quality: int) -> bytes:
    return _encode(rgb, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality])


def label_images(
    objects: list[ObjectResult], image_hw: tuple[int, int]
) -> tuple[NDArray[np.uint16], NDArray[np.uint16]]:
    """(visible, occluded) (H, W) uint16 label images: pixel = 1-based index of the object
    seen (visible mask) or hidden (occluded part) there, 0 = none. Where masks overlap the
    front-most object (lowest ``order``) wins."""
    visible = np.zeros(image_hw, np.uint16)
    occluded = np.zeros(image_hw, np.uint16)
    back_to_front = sorted(range(len(objects)), key=lambda i: -objects[i].order)
    for i in back_to_front:
        visible[objects[i].visible] = i + 1
        occluded[objects[i].occluded] = i + 1
    return visible, occluded


class _FoxgloveRecorder:
    """JSON messages with Foxglove's schemas on an ``mcap`` writer."""

    def __init__(self, stream: IO[bytes], jpeg_quality: int) -> None:
        from mcap.well_known import MessageEncoding
        from mcap.writer import CompressionType, Writer

        self.jpeg_quality = jpeg_quality
        self.writer = Writer(
            stream, chunk_size=_CHUNK_PER_MESSAGE, compression=CompressionType.ZSTD
        )
        self.writer.start(profile="", library=f"edge-sameo/{__version__}")  # no profile: JSON
        image = self._schema("foxglove.CompressedImage", COMPRESSED_IMAGE_SCHEMA)
        annotations = self._schema("foxglove.ImageAnnotations", IMAGE_ANNOTATIONS_SCHEMA)
        objects = self._schema("edge_sameo.FrameObjects", FRAME_OBJECTS_SCHEMA)
        self.channels = {
            topic: self.writer.register_channel(topic, MessageEncoding.JSON, schema)
            for topic, schema in (
                (CAMERA_TOPIC, image),
                (ANNOTATED_TOPIC, image),
                (ANNOTATIONS_TOPIC, annotations),
                (OBJECTS_TOPIC, objects),
            )
        }

    def _schema(self, name: str, schema: dict[str, Any]) -> int:
        from mcap.well_known import SchemaEncoding

        data = json.dumps(schema).encode()
        return self.writer.register_schema(name, SchemaEncoding.JSONSchema, data)

    def write(
        self, result: FrameResult, record: dict[str, Any], annotated: NDArray[np.uint8] | None
    ) -> None:
        ns = _nanoseconds(result.frame.timestamp)
        stamp = {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000}
        messages: list[tuple[str, dict[str, Any]]] = [
            (CAMERA_TOPIC, self._image(stamp, result.frame.image)),
        ]
        if annotated is not None:
            messages.append((ANNOTATED_TOPIC, self._image(stamp, annotated)))
        messages.append((ANNOTATIONS_TOPIC, image_annotations(stamp, result.objects)))
        messages.append((OBJECTS_TOPIC, record))
        for topic, message in messages:
            self.writer.add_message(
                self.channels[topic],
                log_time=ns,
                data=json.dumps(message, separators=(",", ":")).encode(),
                publish_time=ns,
                sequence=result.index,
            )

    def _image(self, stamp: dict[str, int], rgb: NDArray[np.uint8]) -> dict[str, Any]:
        data = base64.b64encode(_jpeg(rgb, self.jpeg_quality)).decode("ascii")
        return {"timestamp": stamp, "frame_id": FRAME_ID, "data": data, "format": "jpeg"}

    def finish(self) -> None:
        self.writer.finish()


def _rgba(track_id: int) -> dict[str, float]:
    """The object's colour in the annotated frame, as a Foxglove colour (0..1)."""
    r, g, b = color(max(track_id, 0))
    return {"r": r / 255, "g": g / 255, "b": b / 255, "a": 1.0}


def image_annotations(stamp: dict[str, int], objects: list[ObjectResult]) -> dict[str, Any]:
    """A ``foxglove.ImageAnnotations`` message: per object its box as a closed outline
    (``LINE_LOOP``) and a label at its top-left corner (image pixels)."""
    points, texts = [], []
    for obj in objects:
        x1, y1, x2, y2 = (float(v) for v in obj.box)
        c = _rgba(obj.track_id)
        points.append(
            {
                "timestamp": stamp,
                "type": 2,  # LINE_LOOP
                "points": [{"x": x, "y": y} for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))],
                "outline_color": c,
                "outline_colors": [],
                "fill_color": {"r": 0.0, "g": 0.0, "b": 0.0, "a": 0.0},
                "thickness": 1.0 if obj.persisted else 2.0,
            }
        )
        texts.append(
            {
                "timestamp": stamp,
                "position": {"x": x1, "y": max(y1 - 2.0, 10.0)},
                "text": occlusion_label(obj),  # the annotated frame's label
                "font_size": 12.0,
                "text_color": c,
                "background_color": {"r": 0.0, "g": 0.0, "b": 0.0, "a": 0.6},
            }
        )
    return {"circles": [], "points": points, "texts": texts}


class _Ros2Recorder:
    """CDR messages with ROS 2 definitions on an ``mcap_ros2`` writer."""

    def __init__(self, stream: IO[bytes], jpeg_quality: int) -> None:
        from mcap_ros2.writer import Writer

        self.jpeg_quality = jpeg_quality
        self.writer = Writer(stream, chunk_size=_CHUNK_PER_MESSAGE)
        self.image = self.writer.register_msgdef(
            "sensor_msgs/msg/CompressedImage", COMPRESSED_IMAGE_MSGDEF
        )
        self.string = self.writer.register_msgdef("std_msgs/msg/String", STRING_MSGDEF)

    def write(
        self, result: FrameResult, record: dict[str, Any], annotated: NDArray[np.uint8] | None
    ) -> None:
        ns = _nanoseconds(result.frame.timestamp)
        header = {
            "stamp": {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000},
            "frame_id": FRAME_ID,
        }
        # image_transport's format strings, which its decoders and Foxglove parse.
        jpeg, png = "rgb8; jpeg compressed bgr8", "mono16; png compressed mono16"
        visible, occluded = label_images(result.objects, result.frame.image.shape[:2])
        messages: list[tuple[str, Any, dict[str, Any]]] = [
            (
                CAMERA_TOPIC,
                self.image,
                {
                    "header": header,
                    "format": jpeg,
                    "data": _jpeg(result.frame.image, self.jpeg_quality),
                },
            ),
        ]
        if annotated is not None:
            data = _jpeg(annotated, self.jpeg_quality)
            messages.append(
                (ANNOTATED_TOPIC, self.image, {"header": header, "format": jpeg, "data": data})
            )
        messages += [
            (OBJECTS_TOPIC, self.string, {"data": json.dumps(record, separators=(",", ":"))}),
            (
                VISIBLE_LABELS_TOPIC,
                self.image,
                {"header": header, "format": png, "data": _encode(visible, ".png")},
            ),
            (
                OCCLUDED_LABELS_TOPIC,
                self.image,
                {"header": header, "format": png, "data": _encode(occluded, ".png")},
            ),
        ]
        for topic, schema, message in messages:
            self.writer.write_message(
                topic, schema, message, log_time=ns, publish_time=ns, sequence=result.index
            )

    def finish(self) -> None:
        self.writer.finish()


# --- message definitions and schemas ---------------------------------------------------

#: ROS 2 ``sensor_msgs/msg/CompressedImage`` with its dependencies, in the concatenated
#: form ``ros2 bag record`` stores (definitions after ``MSG:`` separators).
COMPRESSED_IMAGE_MSGDEF = """\
std_msgs/Header header
string format
uint8[] data
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""

STRING_MSGDEF = "string data\n"


def _time(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "time",
        "properties": {
            "sec": {"type": "integer", "minimum": 0},
            "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999},
        },
        "description": description,
    }


def _point2(description: str) -> dict[str, Any]:
    xy = {"x": {"type": "number"}, "y": {"type": "number"}}
    return {
        "title": "foxglove.Point2",
        "description": description,
        "type": "object",
        "properties": xy,
    }


def _color(description: str) -> dict[str, Any]:
    return {
        "title": "foxglove.Color",
        "description": description,
        "type": "object",
        "properties": {k: {"type": "number"} for k in "rgba"},
    }


def _array(items: dict[str, Any], description: str) -> dict[str, Any]:
    return {"type": "array", "items": items, "description": description}


#: Foxglove's ``foxglove.CompressedImage`` JSON schema (the fields this writes).
COMPRESSED_IMAGE_SCHEMA: dict[str, Any] = {
    "title": "foxglove.CompressedImage",
    "description": "A compressed image",
    "type": "object",
    "properties": {
        "timestamp": _time("Timestamp of image"),
        "frame_id": {"type": "string", "description": "Frame of reference for the image"},
        "data": {"type": "string", "contentEncoding": "base64", "description": "Image data"},
        "format": {"type": "string", "description": "Image format: jpeg, png, webp, avif"},
    },
}

#: Foxglove's ``foxglove.ImageAnnotations`` JSON schema (circles, points, texts).
IMAGE_ANNOTATIONS_SCHEMA: dict[str, Any] = {
    "title": "foxglove.ImageAnnotations",
    "description": "Array of annotations for a 2D image",
    "type": "object",
    "properties": {
        "circles": _array(
            {
                "title": "foxglove.CircleAnnotation",
                "type": "object",
                "properties": {
                    "timestamp": _time("Timestamp of circle"),
                    "position": _point2("Center of the circle in image pixels"),
                    "diameter": {"type": "number"},
                    "thickness": {"type": "number"},
                    "fill_color": _color("Fill color"),
                    "outline_color": _color("Outline color"),
                },
            },
            "Circle annotations",
        ),
        "points": _array(
            {
                "title": "foxglove.PointsAnnotation",
                "type": "object",
                "properties": {
                    "timestamp": _time("Timestamp of annotation"),
                    "type": {
                        "title": "foxglove.PointsAnnotationType",
                        "oneOf": [
                            {"title": name, "const": i}
                            for i, name in enumerate(
                                ("UNKNOWN", "POINTS", "LINE_LOOP", "LINE_STRIP", "LINE_LIST")
                            )
                        ],
                    },
                    "points": _array(_point2("A point in image pixels"), "Points"),
                    "outline_color": _color("Outline color"),
                    "outline_colors": _array(_color("A color"), "Per-point colors"),
                    "fill_color": _color("Fill color"),
                    "thickness": {"type": "number"},
                },
            },
            "Points annotations",
        ),
        "texts": _array(
            {
                "title": "foxglove.TextAnnotation",
                "type": "object",
                "properties": {
                    "timestamp": _time("Timestamp of annotation"),
                    "position": _point2("Bottom-left origin of the text in image pixels"),
                    "text": {"type": "string"},
                    "font_size": {"type": "number"},
                    "text_color": _color("Text color"),
                    "background_color": _color("Background fill color"),
                },
            },
            "Text annotations",
        ),
    },
}

_RLE = {
    "type": "object",
    "description": "COCO RLE (column-major) of an (H, W) mask",
    "properties": {
        "size": _array({"type": "integer"}, "[H, W]"),
        "counts": {"type": "string"},
    },
}

#: The JSONL record of a frame (``FrameResult.to_json``) on :data:`OBJECTS_TOPIC`.
FRAME_OBJECTS_SCHEMA: dict[str, Any] = {
    "title": "edge_sameo.FrameObjects",
    "description": "Amodal segmentation of one frame: one entry per tracked object",
    "type": "object",
    "properties": {
        "frame": {"type": "integer", "description": "Frame index"},
        "timestamp": {"type": "number", "description": "Source time, seconds"},
        "objects": _array(
            {
                "type": "object",
                "properties": {
                    "track_id": {"type": "integer"},
                    "class_id": {"type": "integer"},
                    "class_name": {"type": "string"},
                    "score": {"type": "number"},
                    "box": _array({"type": "number"}, "XYXY, image pixels"),
                    "amodal_rle": {**_RLE, "title": "amodal mask (hidden parts included)"},
                    "visible_rle": {**_RLE, "title": "visible mask"},
                    "occlusion_ratio": {"type": "number", "description": "hidden share, 0..1"},
                    "order": {"type": "integer", "description": "depth rank, 0 = in front"},
                    "occluded_by": _array({"type": "integer"}, "track ids in front"),
                    "persisted": {"type": "boolean", "description": "carried, not detected"},
                },
            },
            "Objects of the frame",
        ),
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number"}},
        "latency_ms": {"type": "number"},
    },
}
