"""MCAP recordings (edge_sameo.stream.recording): read back with the real readers — mcap's
reader and decoders, mcap-ros2-support's decoder and rosbags — and compared with the
JSONL of the same run."""

from __future__ import annotations

import base64
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_sameo import AmodalPredictor, save_model
from edge_sameo.cli import main
from edge_sameo.errors import InputError, Interrupted
from edge_sameo.masks import decode_rle
from edge_sameo.stream import FrameResult, GroundTruthDetector, StreamConfig, stream
from edge_sameo.stream.app import Outputs, run_app
from edge_sameo.stream.recording import (
    ANNOTATED_TOPIC,
    ANNOTATIONS_TOPIC,
    CAMERA_TOPIC,
    COMPRESSED_IMAGE_SCHEMA,
    FRAME_OBJECTS_SCHEMA,
    IMAGE_ANNOTATIONS_SCHEMA,
    MCAP_FORMATS,
    OBJECTS_TOPIC,
    OCCLUDED_LABELS_TOPIC,
    VISIBLE_LABELS_TOPIC,
    McapSink,
)
from tests.test_stream import dual_tiny, synth

pytest.importorskip("mcap")
pytest.importorskip("mcap_ros2")
pytest.importorskip("rosbags")

from mcap.decoder import DecoderFactory
from mcap.reader import make_reader
from mcap.records import Schema

FOXGLOVE_TOPICS = {CAMERA_TOPIC, ANNOTATED_TOPIC, ANNOTATIONS_TOPIC, OBJECTS_TOPIC}
ROS2_TOPICS = {CAMERA_TOPIC, ANNOTATED_TOPIC, OBJECTS_TOPIC}
ROS2_TOPICS |= {VISIBLE_LABELS_TOPIC, OCCLUDED_LABELS_TOPIC}


class JsonDecoderFactory(DecoderFactory):
    """mcap's decoder hook for ``json`` channels (mcap ships decoders only per profile)."""

    def decoder_for(self, message_encoding: str, schema: Schema | None) -> Any:
        return json.loads if message_encoding == "json" else None


@pytest.fixture(scope="module")
def predictor() -> AmodalPredictor:
    return AmodalPredictor(dual_tiny())


def record(
    folder: Path, fmt: str, frames: int, predictor: AmodalPredictor
) -> tuple[Path, list[dict[str, Any]]]:
    """A run of the synthetic source to ``<fmt>.mcap`` and a JSONL next to it; returns the
    recording and the JSONL records."""
    path, jsonl = folder / f"{fmt}.mcap", folder / f"{fmt}.jsonl"
    outputs = Outputs(jsonl=jsonl, sinks=[McapSink(path, fmt)])
    config = StreamConfig(pipelined=False)  # one thread: the fastest on a busy CPU
    summary = run_app(synth(frames), GroundTruthDetector(), predictor, config, outputs)
    assert summary["frames"] == frames
    return path, [json.loads(line) for line in jsonl.read_text().splitlines()]


@pytest.fixture(scope="module")
def foxglove(
    tmp_path_factory: pytest.TempPathFactory, predictor: AmodalPredictor
) -> tuple[Path, list[dict[str, Any]]]:
    return record(tmp_path_factory.mktemp("foxglove"), "foxglove", 60, predictor)


def by_topic(path: Path) -> dict[str, list[tuple[Any, Any, Any]]]:
    """topic -> [(schema, message record, decoded message)] in log-time order."""
    out: dict[str, list[tuple[Any, Any, Any]]] = defaultdict(list)
    from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[JsonDecoderFactory(), Ros2DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            out[channel.topic].append((schema, message, decoded))
    return out


def conforms(value: Any, schema: dict[str, Any], where: str = "$") -> Iterator[str]:
    """The places where ``value`` leaves its JSON ``schema``: a key the schema does not
    declare, or a value of another type (a small subset of JSON Schema: enough for the
    object/array/scalar schemas of the recording)."""
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool}
    if "oneOf" in schema:
        if not any(value == option.get("const") for option in schema["oneOf"]):
            yield f"{where}: {value!r} is none of the schema's constants"
        return
    kind = schema.get("type")
    if kind in ("number", "integer"):
        ok = isinstance(value, int if kind == "integer" else (int, float))
        if not ok or isinstance(value, bool):
            yield f"{where}: {value!r} is not a {kind}"
    elif kind in kinds and not isinstance(value, kinds[kind]):
        yield f"{where}: {type(value).__name__} is not {kind}"
    elif kind == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in value.items():
            if k in props:
                yield from conforms(v, props[k], f"{where}.{k}")
            elif extra:
                yield from conforms(v, extra, f"{where}.{k}")
            else:
                yield f"{where}: key {k!r} is not in the schema"
    elif kind == "array":
        for i, v in enumerate(value):
            yield from conforms(v, schema["items"], f"{where}[{i}]")


def test_foxglove_recording_has_every_frame_and_object(
    foxglove: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, records = foxglove
    assert len(records) == 60
    assert sum(len(r["objects"]) for r in records) > 60
    with open(path, "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == ""
        summary = reader.get_summary()
    assert summary is not None and summary.statistics is not None
    assert summary.statistics.message_count == 4 * 60
    assert {s.name for s in summary.schemas.values()} == {
        "foxglove.CompressedImage", "foxglove.ImageAnnotations", "edge_sameo.FrameObjects",
    }  # fmt: skip
    assert {s.encoding for s in summary.schemas.values()} == {"jsonschema"}
    assert {c.message_encoding for c in summary.channels.values()} == {"json"}
    topics = by_topic(path)
    assert set(topics) == FOXGLOVE_TOPICS
    assert all(len(messages) == 60 for messages in topics.values())
    # The objects topic holds the JSONL records, frame by frame, every object included.
    assert [decoded for _, _, decoded in topics[OBJECTS_TOPIC]] == records
    stamps = [round(frame.timestamp * 1e9) for frame in synth(60).frames()]
    for messages in topics.values():
        for (_, message, _), rec, ns in zip(messages, records, stamps, strict=True):
            assert message.log_time == ns == message.publish_time  # the frame's source time
            assert message.sequence == rec["frame"]


def test_foxglove_messages_follow_their_schemas(
    foxglove: tuple[Path, list[dict[str, Any]]],
) -> None:
    path, _ = foxglove
    schemas = {
        "foxglove.CompressedImage": COMPRESSED_IMAGE_SCHEMA,
        "foxglove.ImageAnnotations": IMAGE_ANNOTATIONS_SCHEMA,
        "edge_sameo.FrameObjects": FRAME_OBJECTS_SCHEMA,
    }
    for messages in by_topic(path).values():
        for schema, _, decoded in messages:
            assert json.loads(schema.data) == schemas[schema.name]
            assert list(conforms(decoded, schemas[schema.name])) == []


def test_foxglove_images_and_annotations(foxglove: tuple[Path, list[dict[str, Any]]]) -> None:
    path, records = foxglove
    topics = by_topic(path)
    frames = list(synth(60).frames())
    for i, frame in enumerate(frames):
        camera = topics[CAMERA_TOPIC][i][2]
        assert camera["format"] == "jpeg" and camera["frame_id"] == "camera"
        ns = round(frame.timestamp * 1e9)
        assert camera["timestamp"] == {"sec": ns // 10**9, "nsec": ns % 10**9}
        jpeg = np.frombuffer(base64.b64decode(camera["data"]), np.uint8)
        bgr = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        assert rgb.shape == frame.image.shape
        assert np.abs(rgb.astype(int) - frame.image).mean() < 6  # JPEG, quality 90
        annotated = topics[ANNOTATED_TOPIC][i][2]
        drawn = cv2.imdecode(np.frombuffer(base64.b64decode(annotated["data"]), np.uint8), 1)
        assert drawn.shape == frame.image.shape
        boxes = [o["box"] for o in records[i]["objects"]]
        if boxes:  # the annotated frame differs from the camera frame where objects are
            assert np.abs(drawn.astype(int) - bgr).mean() > 1
        notes = topics[ANNOTATIONS_TOPIC][i][2]
        assert notes["circles"] == []
        assert len(notes["points"]) == len(notes["texts"]) == len(boxes)
        for outline, text, box, obj in zip(
            notes["points"], notes["texts"], boxes, records[i]["objects"], strict=True
        ):
            xs = [p["x"] for p in outline["points"]]
            ys = [p["y"] for p in outline["points"]]
            assert outline["type"] == 2  # LINE_LOOP
            assert [min(xs), min(ys), max(xs), max(ys)] == pytest.approx(box, abs=0.051)
            assert text["text"].startswith(f"#{obj['track_id']} {obj['class_name']} ")


def test_ros2_recording_reads_with_rosbags_and_mcap_ros2(
    tmp_path: Path, predictor: AmodalPredictor
) -> None:
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import Reader

    path, records = record(tmp_path, "ros2", 8, predictor)
    with open(path, "rb") as f:
        assert make_reader(f).get_header().profile == "ros2"
    # mcap-ros2-support's decoder
    topics = by_topic(path)
    assert set(topics) == ROS2_TOPICS and all(len(m) == 8 for m in topics.values())
    assert [json.loads(d.data) for _, _, d in topics[OBJECTS_TOPIC]] == records
    assert {s.name for m in topics.values() for s, _, _ in m} == {
        "sensor_msgs/msg/CompressedImage", "std_msgs/msg/String",
    }  # fmt: skip
    # rosbags: the rosbag2 reader on the file, and the high-level reader with its types
    with Reader(path) as bag:
        assert bag.message_count == 5 * 8
        assert {c.topic: c.msgtype for c in bag.connections} == {
            CAMERA_TOPIC: "sensor_msgs/msg/CompressedImage",
            ANNOTATED_TOPIC: "sensor_msgs/msg/CompressedImage",
            OBJECTS_TOPIC: "std_msgs/msg/String",
            VISIBLE_LABELS_TOPIC: "sensor_msgs/msg/CompressedImage",
            OCCLUDED_LABELS_TOPIC: "sensor_msgs/msg/CompressedImage",
        }
    got: dict[str, list[Any]] = defaultdict(list)
    with AnyReader([path]) as bag:
        for conn, stamp, raw in bag.messages():
            got[conn.topic].append((stamp, bag.deserialize(raw, conn.msgtype)))
    assert [json.loads(m.data) for _, m in got[OBJECTS_TOPIC]] == records
    frames = list(synth(8).frames())
    for (stamp, image), frame in zip(got[CAMERA_TOPIC], frames, strict=True):
        assert stamp == round(frame.timestamp * 1e9)
        assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == stamp
        assert image.header.frame_id == "camera" and "jpeg" in image.format
        rgb = cv2.cvtColor(cv2.imdecode(image.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(rgb.astype(int) - frame.image).mean() < 6
    # The label images: 16-bit PNG, 1-based index into the record's objects.
    labelled = 0
    for (_, vis), (_, occ), rec in zip(
        got[VISIBLE_LABELS_TOPIC], got[OCCLUDED_LABELS_TOPIC], records, strict=True
    ):
        assert "png" in vis.format and "png" in occ.format
        visible = cv2.imdecode(vis.data, cv2.IMREAD_UNCHANGED)
        occluded = cv2.imdecode(occ.data, cv2.IMREAD_UNCHANGED)
        assert visible.dtype == occluded.dtype == np.uint16
        assert visible.shape == occluded.shape == (120, 160)
        assert visible.max() <= len(rec["objects"]) and occluded.max() <= len(rec["objects"])
        for i, obj in enumerate(rec["objects"], 1):
            amodal, seen = decode_rle(obj["amodal_rle"]), decode_rle(obj["visible_rle"])
            assert seen[visible == i].all()
            assert (amodal & ~seen)[occluded == i].all()
            labelled += int(np.count_nonzero(visible == i) > 0)
    assert labelled > 0


def test_a_failed_run_keeps_a_readable_part_file(
    tmp_path: Path, predictor: AmodalPredictor
) -> None:
    results = list(stream(synth(3), GroundTruthDetector(), predictor))
    for fmt in MCAP_FORMATS:
        path = tmp_path / f"{fmt}.mcap"
        path.write_bytes(b"an earlier recording")
        sink = McapSink(path, fmt)
        for r in results:
            sink.write(r, r.to_json(), None)
        # Before close: what a killed run leaves. Each frame reached the file whole, so a
        # streaming reader gets every message up to the missing summary.
        (unfinished,) = tmp_path.glob(f".{fmt}.mcap.*.part.mcap")
        assert streamed_messages(unfinished) == (3 if fmt == "foxglove" else 4) * 3
        part = sink.close(commit=False)
        assert part == unfinished and part.exists() and part.suffix == ".mcap"
        assert path.read_bytes() == b"an earlier recording"
        topics = by_topic(part)  # finalised: summary and footer written
        assert len(topics[OBJECTS_TOPIC]) == 3
        assert ANNOTATED_TOPIC not in topics  # no annotated frame was handed over
        part.unlink()
    # The ROS 2 variant's kept file is a bag that rosbags opens (it goes by the suffix).
    from rosbags.rosbag2 import Reader

    sink = McapSink(tmp_path / "again.mcap", "ros2")
    sink.write(results[0], results[0].to_json(), results[0].frame.image)
    kept = sink.close(commit=False)
    assert kept is not None
    with Reader(kept) as bag:
        assert bag.message_count == 5


def streamed_messages(path: Path) -> int:
    """Messages a streaming reader gets from an MCAP without summary or footer."""
    from mcap.exceptions import EndOfFile
    from mcap.records import Message
    from mcap.stream_reader import StreamReader

    count = 0
    with open(path, "rb") as f:
        with pytest.raises(EndOfFile):
            for rec in StreamReader(f, skip_magic=False).records:
                count += isinstance(rec, Message)
    return count


def test_crash_and_ctrl_c_during_a_run(tmp_path: Path, predictor: AmodalPredictor) -> None:
    seen: list[int] = []

    def stop_after(n: int, exc: BaseException) -> Any:
        def on_result(result: FrameResult) -> None:
            seen.append(result.index)
            if len(seen) == n:
                raise exc

        return on_result

    crash = tmp_path / "crash.mcap"
    with pytest.raises(RuntimeError):
        run_app(synth(20), GroundTruthDetector(), predictor, StreamConfig(pipelined=False),
                Outputs(sinks=[McapSink(crash)]), stop_after(4, RuntimeError("boom")))  # fmt: skip
    assert not crash.exists()
    (part,) = tmp_path.glob(".crash.mcap.*.part.mcap")
    assert len(by_topic(part)[OBJECTS_TOPIC]) == 4
    seen.clear()
    ctrl_c = tmp_path / "ctrl_c.mcap"
    with pytest.raises(Interrupted):
        run_app(synth(20), GroundTruthDetector(), predictor, StreamConfig(pipelined=False),
                Outputs(sinks=[McapSink(ctrl_c)]), stop_after(4, KeyboardInterrupt()))  # fmt: skip
    assert len(by_topic(ctrl_c)[OBJECTS_TOPIC]) == 4  # Ctrl-C: finished frames committed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ctrl_c.mcap", part.name])


def test_no_frame_no_file(tmp_path: Path) -> None:
    sink = McapSink(tmp_path / "empty.mcap")
    assert sink.close() is None and sink.close(commit=False) is None
    assert list(tmp_path.iterdir()) == []


def test_bad_recording_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.mcap"):
        McapSink(tmp_path / "out.bag")
    with pytest.raises(InputError, match="foxglove, ros2"):
        McapSink(tmp_path / "out.mcap", "rosbag1")
    with pytest.raises(InputError, match="jpeg_quality"):
        McapSink(tmp_path / "out.mcap", jpeg_quality=0)


def test_run_cli_writes_a_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "dual.pt"
    save_model(dual_tiny(), ckpt)
    args = ["run", "--source", "synth:3", "--frames", "4", "--detector", "gt", "--sam", str(ckpt),
            "--backend", "torch", "--quiet"]  # fmt: skip
    for fmt in MCAP_FORMATS:
        out = tmp_path / f"cli_{fmt}.mcap"
        assert main([*args, "--mcap", str(out), "--mcap-format", fmt]) == 0
        assert f"wrote {out}" in capsys.readouterr().out
        topics = by_topic(out)
        assert set(topics) == (FOXGLOVE_TOPICS if fmt == "foxglove" else ROS2_TOPICS)
        assert len(topics[OBJECTS_TOPIC]) == 4
    default = tmp_path / "default.mcap"
    assert main([*args, "--mcap", str(default)]) == 0
    assert set(by_topic(default)) == FOXGLOVE_TOPICS


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mcap", "{tmp}/out.txt"], "--mcap must end in .mcap"),
        (["--mcap", "{tmp}"], "is a directory"),
        (["--mcap", "{tmp}/same.mcap", "--jsonl", "{tmp}/same.mcap"], "the same file"),
        (["--mcap", "{tmp}/x.mcap", "--mcap-format", "rosbag1"], "invalid choice"),
    ],
)
def test_run_cli_refuses_bad_recording_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = ["run", "--source", "synth:1", "--frames", "1", "--detector", "gt",
            *[a.format(tmp=tmp_path) for a in extra]]  # fmt: skip
    try:
        rc = main(args)
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("fmt", "module"), [("foxglove", "mcap"), ("ros2", "mcap_ros2")])
def test_missing_mcap_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str, module: str
) -> None:
    from edge_sameo.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like
    with pytest.raises(MissingDependencyError, match=r"edge-sameo\[mcap\]"):
        McapSink(tmp_path / "out.mcap", fmt)
