from __future__ import annotations

import json
import platform
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from edge_sameo import AmodalPredictor, build_model, save_model
from edge_sameo.cli import main
from edge_sameo.data import annotation_record, write_amodal_coco
from edge_sameo.errors import InputError
from edge_sameo.masks import decode_rle, mask_to_box
from edge_sameo.modeling import EfficientSam
from edge_sameo.seeded import manifest_of, seeded_state_dict
from edge_sameo.stream import (
    CallableDetector,
    Detections,
    GroundTruthDetector,
    KeyframeDetector,
    ObjectResult,
    ReconnectPolicy,
    ReplayDetector,
    StreamConfig,
    TemporalConfig,
    assign_order,
    open_source,
    stream,
)
from edge_sameo.stream.app import Outputs, run_app
from edge_sameo.stream.detectors import from_ultralytics
from edge_sameo.stream.sources import Frame, LiveSource, SyntheticVideoSource, VideoFileSource
from edge_sameo.stream.temporal import (
    VELOCITY_DECAY,
    VELOCITY_MOMENTUM,
    TemporalFilter,
    align_shape,
    shift_mask,
)
from tests.mjpeg_stream import MjpegServer, jpeg_frames, mjpeg_server


def dual_tiny() -> EfficientSam:
    model = build_model("tiny", modal_decoder=True)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=3))
    return model


@pytest.fixture()
def predictor() -> AmodalPredictor:
    return AmodalPredictor(dual_tiny())


def synth(frames: int = 6) -> SyntheticVideoSource:
    return SyntheticVideoSource(frames, seed=5, size=(160, 120))


def test_synthetic_source_is_deterministic_with_ground_truth() -> None:
    a = list(synth(3).frames())
    b = list(synth(3).frames())
    assert [f.index for f in a] == [0, 1, 2]
    for fa, fb in zip(a, b, strict=True):
        np.testing.assert_array_equal(fa.image, fb.image)
        assert fa.ground_truth is not None and fa.ground_truth.instances
        assert fa.image.shape == (120, 160, 3)


def test_pipelined_equals_sequential(predictor: AmodalPredictor) -> None:
    def run(pipelined: bool) -> list[list[ObjectResult]]:
        cfg = StreamConfig(pipelined=pipelined)
        return [r.objects for r in stream(synth(), GroundTruthDetector(), predictor, cfg)]

    seq, pipe = run(False), run(True)
    assert len(seq) == len(pipe) == 6
    assert sum(len(o) for o in seq) > 0
    for a, b in zip(seq, pipe, strict=True):
        assert [o.track_id for o in a] == [o.track_id for o in b]
        for oa, ob in zip(a, b, strict=True):
            np.testing.assert_array_equal(oa.amodal, ob.amodal)
            np.testing.assert_array_equal(oa.visible, ob.visible)


def test_amodal_ground_truth_boxes_and_masks_cut_to_them(predictor: AmodalPredictor) -> None:
    """``gt-amodal`` reports each visible object's amodal box; with ``amodal_boxes`` the
    stream's masks stay inside the boxes."""
    frame = next(iter(synth(1).frames()))
    assert frame.ground_truth is not None
    seen = [i for i in frame.ground_truth.instances if i.visible.any()]
    det = GroundTruthDetector(amodal=True)(frame)
    np.testing.assert_array_equal(det.boxes, np.stack([mask_to_box(i.amodal) for i in seen]))
    assert [int(t) for t in det.track_ids] == [i.track_id for i in seen]
    cfg = StreamConfig(pipelined=False, amodal_boxes=True)
    (result,) = stream(synth(1), GroundTruthDetector(amodal=True), predictor, cfg)
    for obj in result.objects:
        x0, y0, x1, y1 = np.floor(obj.box[:2]).tolist() + np.ceil(obj.box[2:]).tolist()
        inside = np.zeros_like(obj.amodal)
        inside[int(y0) : int(y1), int(x0) : int(x1)] = True
        assert not (obj.amodal & ~inside).any() and not (obj.visible & ~inside).any()


def test_results_carry_timings_and_objects(predictor: AmodalPredictor) -> None:
    results = list(stream(synth(3), GroundTruthDetector(), predictor))
    r = results[-1]
    assert {"detect", "preprocess", "encoder", "decoder", "postprocess"} <= set(r.timings)
    assert r.latency_ms > 0
    rec = r.to_json()
    assert set(rec) >= {"frame", "timestamp", "objects"}
    obj = rec["objects"][0]
    assert set(obj) >= {
        "track_id", "class_id", "class_name", "score", "box", "amodal_rle", "visible_rle",
        "occlusion_ratio", "order",
    }  # fmt: skip
    assert decode_rle(obj["amodal_rle"]).shape == (120, 160)


def test_bad_detector_boxes_are_counted_not_fatal(predictor: AmodalPredictor) -> None:
    boxes = [[-50, -50, -10, -10], [np.nan, 1, 2, 3], [10, 10, 60, 50], [150, 100, 400, 300]]
    det = CallableDetector(lambda img: np.array(boxes, np.float32))
    results = list(stream(synth(2), det, predictor))
    assert all(r.invalid_boxes == 2 for r in results)
    assert all(len(r.objects) == 2 for r in results)
    assert results[0].objects[1].box.tolist() == [150, 100, 160, 120]  # clipped
    empty = CallableDetector(lambda img: np.zeros((0, 4)))
    assert all(r.objects == [] for r in stream(synth(2), empty, predictor))


def test_occlusion_order() -> None:
    h, w = 40, 40
    back = np.zeros((h, w), bool)
    back[5:30, 5:30] = True
    front = np.zeros((h, w), bool)
    front[15:35, 15:35] = True
    far = np.zeros((h, w), bool)
    far[0:3, 35:40] = True

    def obj(tid: int, amodal: np.ndarray, visible: np.ndarray) -> ObjectResult:
        return ObjectResult(tid, 0, "x", 1.0, np.zeros(4, np.float32), amodal, visible)

    objs = [obj(1, back, back & ~front), obj(2, front, front), obj(3, far, far)]
    assert objs[0].occlusion_ratio == pytest.approx(1 - (back & ~front).sum() / back.sum())
    assign_order(objs)
    assert [o.order for o in objs] == [1, 0, 0]
    assert objs[0].occluded_by == [2] and objs[1].occluded_by == []
    np.testing.assert_array_equal(objs[0].occluded, back & front)


def test_temporal_persistence_and_smoothing() -> None:
    m = np.zeros((30, 30), bool)
    m[10:20, 10:20] = True
    box = np.array([10, 10, 20, 20], np.float32)

    def obj(mask: np.ndarray, b: np.ndarray) -> ObjectResult:
        return ObjectResult(7, 1, "disc", 0.9, b, mask, mask.copy())

    f = TemporalFilter(TemporalConfig(smoothing=0.5, persistence=2))
    f.update([obj(m, box)])
    shifted = np.roll(m, 2, axis=1)
    out = f.update([obj(shifted, box + np.array([2, 0, 2, 0], np.float32))])
    np.testing.assert_array_equal(out[0].amodal, shifted)  # motion-compensated: no blur
    kept = f.update([])
    assert len(kept) == 1 and kept[0].persisted and kept[0].track_id == 7
    assert kept[0].occlusion_ratio == 1.0 and kept[0].amodal.sum() == m.sum()
    assert kept[0].amodal[:, 14:24].sum() == m.sum()  # carried on at the last velocity
    f.update([])
    assert f.update([]) == []  # persistence of 2 frames is over
    assert TemporalFilter(TemporalConfig()).update([]) == []
    with pytest.raises(InputError):
        TemporalConfig(smoothing=1.0)


def test_persistence_carries_the_least_occluded_mask_until_the_object_returns() -> None:
    """An object sliding behind an occluder is carried on with the mask it had when best
    seen (not the sliver completed last), at its smoothed velocity; it ends when a
    current object (a new track id) covers it."""
    h = w = 60
    full = np.zeros((h, w), bool)
    full[20:30, 10:20] = True

    def at(dx: int, hidden_cols: int = 0) -> ObjectResult:
        amodal = np.roll(full, dx, axis=1)
        visible = amodal.copy()
        if hidden_cols:
            visible[:, 10 + dx + 10 - hidden_cols :] = False
        return ObjectResult(3, 1, "box", 0.9, mask_to_box(visible), amodal, visible)

    f = TemporalFilter(TemporalConfig(persistence=10))
    f.update([at(0)])
    f.update([at(2)])
    sliver = at(4, hidden_cols=8)
    sliver.amodal = sliver.visible.copy()  # a poor completion just before it vanished
    f.update([sliver])
    carried = f.update([])
    assert len(carried) == 1 and carried[0].persisted
    # the whole 10x10 shape, not the 2-column sliver, about two pixels further on
    assert carried[0].amodal.sum() == 100 and carried[0].visible.sum() == 0
    assert abs(mask_to_box(carried[0].amodal)[0] - 16) <= 1
    back = ObjectResult(9, 1, "box", 0.9, np.zeros(4, np.float32), carried[0].amodal, full)
    assert [o.track_id for o in f.update([back])] == [9]  # returned under track 9: ended


def test_a_carried_track_ends_when_its_object_is_back_under_a_new_id_beside_it() -> None:
    """The tracker may give an object back under a new id while its carried mask has
    drifted off it (overlap below REAPPEARED_IOU): a track of the same class born since the
    carried one went missing, within one object size, ends it; another class, or a track
    older than the gap, does not."""
    full = np.zeros((60, 120), bool)
    full[20:30, 10:20] = True

    def at(tid: int, dx: int, cls: int = 1) -> ObjectResult:
        amodal = np.roll(full, dx, axis=1)
        return ObjectResult(tid, cls, "bar", 0.9, mask_to_box(amodal), amodal, amodal.copy())

    def carried_after(*objects: ObjectResult) -> list[int]:
        f = TemporalFilter(TemporalConfig(persistence=10))
        old = [o for o in objects if o.track_id == 5]  # seen before the bar went missing
        f.update([at(3, 0), *old])
        f.update([at(3, 2), *old])
        f.update(old)  # the bar is missing from here on
        return [o.track_id for o in f.update(list(objects)) if o.persisted]

    assert carried_after() == [3]
    assert carried_after(at(9, 12)) == []  # back as track 9, 12 px on: no overlap, ended
    assert carried_after(at(9, 12, cls=2)) == [3]  # another class
    assert carried_after(at(9, 40)) == [3]  # too far away to be the same object
    assert carried_after(at(5, 12)) == [3]  # a track older than the gap

    # Born in the last frame the bar was seen: another object. Born the frame after: it.
    for born_with_bar, carried in ((True, [3]), (False, [])):
        f = TemporalFilter(TemporalConfig(persistence=10))
        f.update([at(3, 0)])
        f.update([at(3, 2), at(9, 40)] if born_with_bar else [at(3, 2)])
        f.update([at(9, 12)])  # the bar is missing from here on
        assert [o.track_id for o in f.update([at(9, 12)]) if o.persisted] == carried

    # One new track ends one carried track: two bars hidden, one back.
    f = TemporalFilter(TemporalConfig(persistence=10))
    other = np.roll(full, 20, axis=0)
    two = ObjectResult(4, 1, "bar", 0.9, mask_to_box(np.roll(other, 6, axis=1)), other, other)
    f.update([at(3, 0), two])
    f.update([at(3, 2), two])
    f.update([])
    assert len([o for o in f.update([at(9, 12)]) if o.persisted]) == 1


def test_persistence_measures_motion_from_the_last_observation_after_a_gap() -> None:
    """A track back under its own id after three hidden frames: its velocity is the
    displacement since it was last seen over the frames between (not shrunk by the gap)."""
    full = np.zeros((60, 80), bool)
    full[20:30, 10:20] = True

    def at(dx: int) -> ObjectResult:
        amodal = np.roll(full, dx, axis=1)
        return ObjectResult(3, 1, "box", 0.9, mask_to_box(amodal), amodal, amodal.copy())

    f = TemporalFilter(TemporalConfig(persistence=10))
    for dx in (0, 3, 6):
        f.update([at(dx)])
    assert f.tracks[3].velocity[0] == pytest.approx(3.0)
    for _ in range(3):
        f.update([])  # hidden: carried on
    f.update([at(18)])  # 4 frames after dx=6, still 3 px per frame
    decayed = 3.0 * VELOCITY_DECAY**3  # slowed while carried
    expected = VELOCITY_MOMENTUM * decayed + (1 - VELOCITY_MOMENTUM) * 3.0
    assert f.tracks[3].velocity[0] == pytest.approx(expected, rel=1e-4)


def test_align_shape_finds_the_shift_that_holds_the_visible_pixels() -> None:
    ref = np.zeros((50, 60), bool)
    ref[10:30, 10:20] = True
    visible = shift_mask(ref, (7, 3))
    visible[:, :22] = False  # the left part is hidden
    found = align_shape(ref, visible, (5, 5), search=8)
    assert found is not None
    shift, share = found
    # dx 7..12 all hold the 5 visible columns: the nearest to the prediction wins
    assert shift == (7, 3) and share == pytest.approx(1.0)
    assert align_shape(ref, np.zeros_like(ref), (0, 0), 4) is None
    np.testing.assert_array_equal(shift_mask(shift_mask(ref, (4, -2)), (-4, 2)), ref)
    assert not shift_mask(ref, (60, 0)).any()


def test_shape_memory_completes_a_partly_hidden_object_with_its_best_seen_shape() -> None:
    """Seen whole, then sliding behind an occluder while the decoder completes only part
    of it: the amodal mask gets the whole best-seen shape back at the object's place; a
    mask that disagrees with the memory (another object under the same id) is kept."""
    full = np.zeros((60, 80), bool)
    full[20:34, 10:24] = True

    def at(dx: int, hidden_cols: int = 0, completed_cols: int = 0) -> ObjectResult:
        amodal = np.roll(full, dx, axis=1)
        visible = amodal.copy()
        right = 24 + dx
        if hidden_cols:
            visible[:, right - hidden_cols :] = False
            amodal[:, right - hidden_cols + completed_cols :] = False  # a poor completion
        return ObjectResult(3, 1, "box", 0.9, mask_to_box(visible), amodal, visible)

    on = TemporalFilter(TemporalConfig(shape_memory=True))
    off = TemporalFilter(TemporalConfig(persistence=30))
    for f in (on, off):
        for dx in (0, 2, 4):
            f.update([at(dx)])
    got = on.update([at(6, hidden_cols=8, completed_cols=3)])[0]
    np.testing.assert_array_equal(got.amodal, np.roll(full, 6, axis=1))
    kept = off.update([at(6, hidden_cols=8, completed_cols=3)])[0]
    assert kept.amodal.sum() == 14 * 9  # without the memory, the decoder's mask as it was
    other = np.zeros_like(full)
    other[5:12, 40:70] = True  # a different shape: the memory cannot hold it
    odd = ObjectResult(3, 1, "box", 0.9, mask_to_box(other), other.copy(), other.copy())
    np.testing.assert_array_equal(on.update([odd])[0].amodal, other)


def test_replay_detector_roundtrip(tmp_path: Path, predictor: AmodalPredictor) -> None:
    log = tmp_path / "run.jsonl"
    run_app(synth(4), GroundTruthDetector(), predictor, StreamConfig(), Outputs(jsonl=log))
    replay = ReplayDetector(log)
    first = [r for r in stream(synth(4), replay, predictor)]
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    for r, line in zip(first, lines, strict=True):
        assert [o.track_id for o in r.objects] == [o["track_id"] for o in line["objects"]]
    with pytest.raises(InputError, match="replay file not found"):
        ReplayDetector(tmp_path / "none.jsonl")


def test_replay_detector_reads_coco_ground_truth_and_results(tmp_path: Path) -> None:
    """A COCO-amodal ground truth replays as the boxes of its visible masks (or of its amodal
    ones), frames by ``frame_index`` else image id - 1; a fully hidden object is no detection;
    a bad annotation is refused naming it. COCO results replay by image id."""
    h, w = 40, 60
    amodal = np.zeros((h, w), bool)
    amodal[5:25, 10:40] = True
    visible = amodal.copy()
    visible[:, 25:] = False
    images = [
        {"id": 7, "file_name": "a.png", "width": w, "height": h, "frame_index": 3},
        {"id": 2, "file_name": "b.png", "width": w, "height": h},
    ]
    anns = [
        annotation_record(1, 7, 1, amodal, visible, track_id=4, score=0.5),
        annotation_record(2, 7, 1, amodal, np.zeros((h, w), bool)),  # fully hidden
        annotation_record(3, 2, 2, amodal, visible),
    ]
    path = tmp_path / "gt.json"
    write_amodal_coco(path, images, anns, [{"id": 1, "name": "box"}, {"id": 2, "name": "can"}])
    image = np.zeros((h, w, 3), np.uint8)
    gt = ReplayDetector(path)
    d = gt(Frame(3, 0.1, image))
    assert d.boxes.tolist() == [[10, 5, 25, 25]] and d.track_ids.tolist() == [4]
    assert d.scores.tolist() == [0.5] and d.class_ids.tolist() == [1]
    assert gt(Frame(1, 0.0, image)).class_ids.tolist() == [2]
    assert gt.names == {1: "box", 2: "can"}
    amodal_boxes = ReplayDetector(path, box="amodal")(Frame(3, 0.1, image)).boxes
    assert amodal_boxes.tolist() == [[10, 5, 40, 25]] * 2
    doc = json.loads(path.read_text())
    doc["annotations"][0]["visible_segmentation"]["size"] = [1, 1]
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="annotation 1: 'visible_segmentation': mask size"):
        ReplayDetector(path)
    results = tmp_path / "results.json"
    rows = [{"image_id": 2, "category_id": 3, "bbox": [1, 2, 10, 20], "score": 0.25},
            {"image_id": 2, "category_id": 3, "bbox": [1, 2, 0, 20]}]  # fmt: skip
    results.write_text(json.dumps(rows))
    r = ReplayDetector(results)(Frame(1, 0.0, image))
    assert r.boxes.tolist() == [[1, 2, 11, 22]] and r.scores.tolist() == [0.25]
    # a plain COCO ground truth with boxes only: its bbox (visible_bbox where it has one)
    boxes_only = {
        "images": [{"id": 1, "file_name": "a.png", "width": w, "height": h, "frame_index": None}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 20]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20],
             "visible_bbox": [5, 5, 8, 20], "track_id": 9},
        ],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "can"}],
    }  # fmt: skip
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(boxes_only))
    p = ReplayDetector(plain)(Frame(0, 0.0, image))
    assert p.boxes.tolist() == [[1, 2, 11, 22], [5, 5, 13, 25]]
    assert p.track_ids.tolist() == [-1, 9] and p.class_ids.tolist() == [2, 1]
    del boxes_only["annotations"][0]["bbox"]
    plain.write_text(json.dumps(boxes_only))
    with pytest.raises(InputError, match="not a COCO ground truth with boxes"):
        ReplayDetector(plain)


def test_ultralytics_adapter_duck_types() -> None:
    class Boxes:
        xyxy = np.array([[1, 2, 30, 40]], np.float32)
        conf = np.array([0.8], np.float32)
        cls = np.array([2.0], np.float32)
        id = np.array([5.0], np.float32)

        def __len__(self) -> int:
            return 1

    class Result:
        boxes = Boxes()

    det = from_ultralytics(Result(), {2: "star"})
    assert det.track_ids.tolist() == [5] and det.class_ids.tolist() == [2]
    assert det.names[2] == "star" and len(det) == 1


def test_crash_keeps_finished_frames(tmp_path: Path, predictor: AmodalPredictor) -> None:
    calls = {"n": 0}

    def flaky(img: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the run
        return np.array([[10, 10, 60, 50]], np.float32)

    out = Outputs(video=tmp_path / "o.mp4", jsonl=tmp_path / "o.jsonl")
    with pytest.raises(KeyboardInterrupt):
        run_app(synth(10), CallableDetector(flaky), predictor, StreamConfig(), out)
    lines = (tmp_path / "o.jsonl").read_text().splitlines()
    assert 1 <= len(lines) <= 4 and all(json.loads(x)["frame"] == i for i, x in enumerate(lines))
    cap = cv2.VideoCapture(str(tmp_path / "o.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == len(lines)


def test_live_stream_drops_frames_and_reconnects(predictor: AmodalPredictor) -> None:
    frames = jpeg_frames()
    srv, port = mjpeg_server(frames, fps=60)
    policy = ReconnectPolicy(initial_s=0.1, max_s=0.5, give_up_s=3.0, connect_timeout_s=5.0)
    source = LiveSource(f"http://127.0.0.1:{port}/stream.mjpg", policy)
    got: list[int] = []

    def restart() -> Iterator[None]:
        nonlocal srv
        yield
        srv.cut = True
        srv.shutdown()
        srv.server_close()
        time.sleep(0.5)
        srv2 = MjpegServer(("127.0.0.1", port), srv.RequestHandlerClass)
        threading.Thread(target=srv2.serve_forever, daemon=True).start()
        srv = srv2
        yield

    step = restart()
    slow = CallableDetector(lambda img: (time.sleep(0.05), np.array([[20, 20, 80, 90]]))[1])
    try:
        for r in stream(source, slow, predictor, StreamConfig(pipelined=False)):
            got.append(r.index)
            if len(got) == 5:
                next(step)
                next(step)  # cut the server and bring it back on the same port
            if source.reconnects >= 1 and len(got) >= 12:
                break
    finally:
        srv.shutdown()
        source.close()
    assert source.reconnects >= 1, "the stream did not reconnect after the server restart"
    assert len(got) >= 12 and got == sorted(got)
    assert source.dropped > 0  # a 60 FPS stream into a ~20 FPS consumer keeps only the newest


class ScriptedCapture:
    """A capture that opens and gives ``frames`` frames, then fails every read (a stream
    that accepts the connection and closes it, a camera that opens but gives nothing)."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.frames == 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def release(self) -> None:
        pass


def test_live_source_backs_off_between_failed_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads that fail at once are retried after 0.1, 0.2, 0.4 s (the policy's cap), the
    backoff starts again once a frame arrives, and the source still gives up in time."""
    script = [3, 0, 0, 2]  # frames per connection; every later one gives none
    opens: list[float] = []

    def scripted_open(self: LiveSource) -> ScriptedCapture:
        opens.append(time.monotonic())
        return ScriptedCapture(script[len(opens) - 1] if len(opens) <= len(script) else 0)

    monkeypatch.setattr(LiveSource, "_open", scripted_open)
    policy = ReconnectPolicy(initial_s=0.1, max_s=0.4, give_up_s=1.5, connect_timeout_s=5.0)
    source = LiveSource(0, policy)
    frames = sum(1 for _ in source.frames())
    elapsed = opens[-1] - opens[0]
    assert source.gave_up and source.reconnects == 1 and 1 <= frames <= 5
    gaps = np.diff(opens)
    assert len(opens) <= 12 and elapsed < 5, opens  # a tight loop opens thousands of times
    # 0.1, 0.2, 0.4 after the first connection; the fourth gives frames: 0.1, 0.2, 0.4, 0.4…
    want = [0.1, 0.2, 0.4, 0.1, 0.2, 0.4]
    assert len(gaps) >= len(want), gaps
    assert all(g >= w - 0.01 for g, w in zip(gaps, want, strict=False)), gaps
    assert all(g < 0.4 + 0.3 for g in gaps), gaps  # capped at max_s


def test_unreachable_url_is_an_input_error() -> None:
    policy = ReconnectPolicy(initial_s=0.1, max_s=0.2, give_up_s=1.0, connect_timeout_s=1.0)
    t0 = time.monotonic()
    with pytest.raises(InputError, match="cannot open stream"):
        LiveSource("http://127.0.0.1:9/none.mjpg", policy)
    assert time.monotonic() - t0 < 10


def test_file_sources(tmp_path: Path, rgb_image: np.ndarray) -> None:
    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (128, 96))
    for _ in range(20):
        writer.write(rgb_image[..., ::-1])
    writer.release()
    src = open_source(str(video))
    assert isinstance(src, VideoFileSource) and len(list(src.frames())) == 20
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    try:  # a truncated file either opens and ends early, or is refused clearly
        n = len(list(open_source(str(cut)).frames()))
        assert n < 20
    except InputError as exc:
        assert "cut.mp4" in str(exc)
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(InputError, match=r"junk\.mp4"):
        open_source(str(tmp_path / "junk.mp4"))
    with pytest.raises(InputError, match="source not found"):
        open_source(str(tmp_path / "missing.mp4"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), rgb_image)
    (folder / "b.png").write_bytes(b"broken")
    src = open_source(str(folder))
    assert len(list(src.frames())) == 1 and src.skipped == 1


def test_run_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "dual.pt"
    save_model(dual_tiny(), ckpt)
    args = ["run", "--source", "synth:3", "--frames", "4", "--detector", "gt", "--sam", str(ckpt),
            "--backend", "torch"]  # fmt: skip
    rc = main([*args, "--out", str(tmp_path / "o.mp4"), "--jsonl", str(tmp_path / "o.jsonl")])
    assert rc == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 4
    assert "FPS" in capsys.readouterr().out
    assert main(args) == 2
    assert "nothing to write" in capsys.readouterr().err
    rc = main(["run", "--source", "http://127.0.0.1:9/x", "--detector", "gt", "--sam", str(ckpt),
               "--jsonl", str(tmp_path / "x.jsonl")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "cannot open stream" in err


def test_detections_validation() -> None:
    with pytest.raises(InputError):
        Detections(np.zeros((2, 4), np.float32), np.zeros(1, np.float32),
                   np.zeros(2, np.int64), np.zeros(2, np.int64))  # fmt: skip


def test_run_with_sameo_decoder_over_base(tmp_path: Path) -> None:
    import torch

    base = dual_tiny()
    plain = build_model("tiny")
    plain.load_state_dict({k: v for k, v in base.state_dict().items() if "modal_decoder" not in k})
    torch.save({"model": plain.state_dict()}, tmp_path / "base.pt")
    torch.save({"decoder": base.mask_decoder.state_dict()}, tmp_path / "sameo.pt")
    args = ["run", "--source", "synth:1", "--frames", "2", "--detector", "gt", "--backend", "torch",
            "--sam", str(tmp_path / "sameo.pt"), "--jsonl", str(tmp_path / "o.jsonl")]  # fmt: skip
    assert main(args) == 2  # a decoder-only checkpoint needs its base
    assert main([*args, "--base", str(tmp_path / "base.pt")]) == 0
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_stream_runs_give_free_heap_memory_back_on_glibc() -> None:
    # A long run's resident memory crept up without it (docs/BENCHMARKS.md, the soak).
    from edge_sameo.stream.memory import release_free_memory

    blocks = [bytearray(1 << 20) for _ in range(32)]
    del blocks
    assert release_free_memory() is True


class MovingBoxes:
    """Two tracked boxes moving right by 5 and 50 px per frame; counts its calls."""

    def __init__(self) -> None:
        self.names = {0: "obj"}
        self.calls: list[int] = []

    def __call__(self, frame: Frame) -> Detections:
        self.calls.append(frame.index)
        i = frame.index
        boxes = [[10 + 5 * i, 20, 40 + 5 * i, 60], [50 * i, 100, 50 * i + 30, 140]]
        return Detections.make(boxes, track_ids=[7, 8], names=self.names)


def test_keyframe_detector_carries_tracked_boxes_between_key_frames() -> None:
    inner = MovingBoxes()
    det = KeyframeDetector(inner, every=4)
    image = np.zeros((200, 300, 3), np.uint8)
    out = [det(Frame(i, i / 30, image)) for i in range(8)]
    # key frames 0 and 4; on frame 6 the fast box is carried off the frame, so 7 is one too
    assert inner.calls == [0, 4, 7]
    # before a track has two key frames it stays put; after, it moves at its velocity
    np.testing.assert_allclose(out[1].boxes[0], [10, 20, 40, 60])
    for i in (5, 6):
        np.testing.assert_allclose(out[i].boxes[0], [10 + 5 * i, 20, 40 + 5 * i, 60])
    np.testing.assert_allclose(out[5].boxes[1], [250, 100, 280, 140])
    assert list(out[6].track_ids) == [7]  # carried off the frame: dropped
    assert list(out[5].track_ids) == [7, 8] and out[5].names == {0: "obj"}
    with pytest.raises(InputError):
        KeyframeDetector(inner, every=0)


@pytest.mark.parametrize("policy", ["latency", "throughput"])
def test_queue_policy_drops_stale_frames_only_for_latency(
    policy: str, predictor: AmodalPredictor
) -> None:
    """A file paced faster than a slow detector: the latency policy lets a new frame replace
    the oldest one waiting (counted as dropped), the throughput policy processes them all."""
    source = synth(30)
    config = StreamConfig(max_fps=200, queue_policy=policy)
    workers: set[str] = set()
    indices = []
    for r in stream(source, SlowDetector(), predictor, config):
        indices.append(r.index)
        workers |= {t.name for t in threading.enumerate()}
    assert indices == sorted(indices) and len(indices) + source.dropped == 30
    # latency: one worker detects and segments the newest frame (two stages would compete
    # for the cores); throughput: the two stages overlap
    expected = {"detect-segment"} if policy == "latency" else {"detect", "segment"}
    assert workers & {"detect-segment", "detect", "segment"} == expected
    if policy == "latency":
        assert source.dropped > 0
    else:
        assert source.dropped == 0 and indices == list(range(30))
    with pytest.raises(InputError):
        StreamConfig(queue_policy="fastest")
    with pytest.raises(InputError, match="--max-fps must be > 0"):
        StreamConfig(max_fps=0)


class SlowDetector:
    """The ground-truth boxes, 30 ms late."""

    names: ClassVar[dict[int, str]] = {}

    def __init__(self) -> None:
        self.inner = GroundTruthDetector()

    def __call__(self, frame: Frame) -> Detections:
        time.sleep(0.03)
        return self.inner(frame)
