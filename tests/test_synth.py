"""The synthetic amodal world: determinism, exact masks, occlusion control, writers, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edge_sameo.data import (
    CLASS_NAMES,
    TEXTURES,
    SynthConfig,
    VideoConfig,
    export_yolo,
    generate_dataset,
    generate_scene,
    generate_video,
    item_seed,
    iter_scenes,
    load_amodal_coco,
)
from edge_sameo.data.synth import (
    Bouncing,
    Curved,
    Linear,
    Static,
    Through,
    TimeWarp,
    compose_scene,
    compose_video,
    dual_scenes,
    make_sprite,
    render,
    shape_mask,
    texture,
    video_frame,
)
from edge_sameo.data.synth.sprites import _rasterise
from edge_sameo.errors import InputError

SMALL = SynthConfig(size=(128, 96))


def _make_cli() -> argparse.ArgumentParser:
    from edge_sameo.commands import synth

    parser = argparse.ArgumentParser(prog="edge-sameo")
    synth.register(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": (16, 16)},
        {"objects": (0, 3)},
        {"objects": (4, 2)},
        {"occlusion": (0.5, 0.2)},
        {"occlusion": (0.0, 0.99)},
        {"classes": ("disc", "teapot")},
        {"classes": ()},
        {"textures": ("plaid",)},
        {"dual": -1},
        {"pillars": -0.1},
        {"pillars": 1.5},
        {"free_shapes": -0.1},
        {"free_shapes": 2.0},
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        SynthConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_every_shape_is_tight_and_sized(name: str) -> None:
    rng = np.random.default_rng(0)
    mask = shape_mask(name, 40, rng)
    assert mask.dtype == bool and mask.any()
    assert max(mask.shape) <= 41
    # Tight: every border row/column touches the shape.
    assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()


def _outline_stats(name: str, count: int = 40) -> tuple[list[float], list[float], list[int]]:
    """Solidity, fill of the min-area rectangle and polygon-approximation vertex count of
    ``count`` random shapes of class ``name``."""
    rng = np.random.default_rng(5)
    solidity, rect_fill, vertices = [], [], []
    for _ in range(count):
        mask = np.pad(shape_mask(name, 120, rng).astype(np.uint8), 2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = max(contours, key=cv2.contourArea)
        area = cv2.contourArea(c)
        solidity.append(area / cv2.contourArea(cv2.convexHull(c)))
        w, h = cv2.minAreaRect(c)[1]
        rect_fill.append(area / (w * h))
        vertices.append(len(cv2.approxPolyDP(c, 0.03 * cv2.arcLength(c, True), True)))
    return solidity, rect_fill, vertices


def test_shape_families_are_distinct() -> None:
    # The class must be readable from a whole shape: sharp-cornered boxes, triangles and
    # pentagons, lobed (non-convex) blobs, convex discs.
    _, box_fill, box_vertices = _outline_stats("box")
    assert min(box_fill) > 0.95 and set(box_vertices) == {4}
    _, _, polygon_vertices = _outline_stats("polygon")
    assert set(polygon_vertices) <= {3, 5}
    disc_solidity, _, disc_vertices = _outline_stats("disc")
    assert min(disc_solidity) > 0.98 and min(disc_vertices) > 5
    blob_solidity, _, _ = _outline_stats("blob")
    assert float(np.median(blob_solidity)) < 0.96 and max(blob_solidity) < 0.99


def test_ring_has_a_hole() -> None:
    mask = shape_mask("ring", 60, np.random.default_rng(1))
    filled = mask.astype(np.uint8).copy()
    cv2.floodFill(filled, None, (0, 0), 1)
    # Pixels not reachable from outside and not in the mask form the hole.
    padded = np.pad(mask, 1).astype(np.uint8)
    cv2.floodFill(padded, None, (0, 0), 2)
    assert np.count_nonzero(padded == 0) > 20


@pytest.mark.parametrize("name", TEXTURES)
def test_textures_are_deterministic_rgb(name: str) -> None:
    a = texture(name, 17, 23, np.random.default_rng(5))
    b = texture(name, 17, 23, np.random.default_rng(5))
    assert a.shape == (17, 23, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_scene_is_reproducible_bit_for_bit() -> None:
    a, b = generate_scene(item_seed(7, 3), SMALL), generate_scene(item_seed(7, 3), SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    assert len(a.instances) == len(b.instances)
    for x, y in zip(a.instances, b.instances, strict=True):
        np.testing.assert_array_equal(x.amodal, y.amodal)
        np.testing.assert_array_equal(x.visible, y.visible)
    c = generate_scene(item_seed(7, 4), SMALL)
    assert not np.array_equal(a.image, c.image)


def test_pillar_is_the_same_scene_plus_an_upright_occluder_in_front() -> None:
    """``pillars`` adds the video world's pillar to a still scene without changing anything
    drawn before it; at 0 the scene is the default scene."""
    cfg = SynthConfig(size=(160, 120))
    with_pillar = SynthConfig(size=(160, 120), pillars=1.0)
    box_id = cfg.classes.index("box") + 1
    for i in range(6):
        base, scene = (
            generate_scene(item_seed(3, i), cfg),
            generate_scene(item_seed(3, i), with_pillar),
        )
        np.testing.assert_array_equal(
            generate_scene(item_seed(3, i), SynthConfig(size=(160, 120), pillars=0.0)).image,
            base.image,
        )
        assert len(scene.instances) == len(base.instances) + 1
        for a, b in zip(base.instances, scene.instances, strict=False):
            np.testing.assert_array_equal(a.amodal, b.amodal)
            assert a.category_id == b.category_id
            assert not np.any(b.visible & ~a.visible)  # the pillar only hides, never reveals
        pillar = scene.instances[-1]
        ys, xs = np.nonzero(pillar.amodal)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert pillar.amodal.sum() == h * w  # an axis-aligned rectangle
        assert 0.14 * 160 - 1 <= w <= 0.22 * 160 + 1 and 0.45 * 120 - 1 <= h <= 0.8 * 120 + 1
        assert pillar.category_id == box_id
        np.testing.assert_array_equal(pillar.visible, pillar.amodal)  # frontmost
    some = [len(generate_scene(item_seed(4, i), SynthConfig(size=(96, 64), pillars=0.5)).instances)
            - len(generate_scene(item_seed(4, i), SynthConfig(size=(96, 64))).instances)
            for i in range(30)]  # fmt: skip
    assert set(some) == {0, 1}


def test_free_shapes_are_connected_mostly_non_convex_and_their_own_category() -> None:
    """Free-form shapes (``free_shapes``) are one piece each, many clearly non-convex (the
    classes' shapes are nearly all convex), overlapping outlines fill as a union, and free
    objects are annotated under ``free`` after the classes."""
    rng = np.random.default_rng(0)
    solidity = []
    for _ in range(300):
        m = shape_mask("free", 80, rng)
        assert m.any(axis=0).all() and m.any(axis=1).all()  # tight
        n_parts, _ = cv2.connectedComponents(m.astype(np.uint8))
        assert n_parts == 2  # background + one piece
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        hull = cv2.convexHull(np.concatenate(contours))
        solidity.append(m.sum() / max(cv2.contourArea(hull), 1.0))
    assert np.mean(np.asarray(solidity) < 0.9) > 0.4
    # two overlapping squares: their union (an even-odd fill would leave the overlap empty)
    sq = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], np.float64)
    union = _rasterise([sq, sq + 1], None, 31)
    assert union.shape == (31, 31) and union[10:20, 10:20].all()
    assert union.sum() == pytest.approx(31 * 31 * 7 / 9, rel=0.05)
    cfg = SynthConfig(size=(160, 120), free_shapes=1.0)
    free_id = len(cfg.classes) + 1
    assert cfg.categories[-1] == {"id": free_id, "name": "free", "supercategory": "shape"}
    assert [c["name"] for c in SynthConfig().categories] == list(SynthConfig().classes)
    for i in range(4):
        assert {x.category_id for x in generate_scene(item_seed(3, i), cfg).instances} == {free_id}
    with pytest.raises(InputError, match="free_shapes"):
        make_sprite(np.random.default_rng(0), SynthConfig(), category="free")


def test_scene_masks_follow_layer_order() -> None:
    for scene in iter_scenes(0, SMALL, stop=10):
        assert scene.image.shape == (96, 128, 3) and scene.image.dtype == np.uint8
        assert SMALL.objects[0] <= len(scene.instances) <= SMALL.objects[1]
        covered = np.zeros((96, 128), bool)
        for inst in reversed(scene.instances):  # front to back
            assert inst.amodal.any()
            assert not (inst.visible & ~inst.amodal).any()  # visible ⊆ amodal
            np.testing.assert_array_equal(inst.visible, inst.amodal & ~covered)
            covered |= inst.amodal
        assert scene.instances[-1].occlusion_rate == 0.0  # nothing is in front of it
        assert [i.depth for i in scene.instances] == sorted(i.depth for i in scene.instances)


def test_visible_pixels_show_the_object_not_the_background() -> None:
    layout = compose_scene(11, SMALL)
    scene = render(layout)
    for inst in scene.instances:
        sprite = layout.sprites[inst.depth]
        x, y = layout.positions[inst.depth]
        h, w = sprite.hw
        local = inst.visible[y : y + h, x : x + w]
        np.testing.assert_array_equal(
            scene.image[y : y + h, x : x + w][local], sprite.texture[local]
        )


def test_occlusion_tracks_the_sampled_target() -> None:
    errors = [
        abs(inst.occlusion_rate - (inst.target_occlusion or 0.0))
        for scene in iter_scenes(1, SMALL, stop=40)
        for inst in scene.instances[:-1]
    ]
    assert np.median(errors) < 0.05
    cfg = SynthConfig(size=(128, 96), objects=(2, 2), occlusion=(0.4, 0.6))
    achieved = [s.instances[0].occlusion_rate for s in iter_scenes(2, cfg, stop=20)]
    assert np.median(achieved) == pytest.approx(0.5, abs=0.1)


def test_iter_scenes_matches_item_seeds() -> None:
    scenes = list(iter_scenes(4, SMALL, start=2, stop=4))
    assert len(scenes) == 2
    np.testing.assert_array_equal(scenes[1].image, generate_scene(item_seed(4, 3), SMALL).image)


def test_dual_scene_shows_the_target_unoccluded() -> None:
    cfg = SynthConfig(size=(128, 96), objects=(3, 4), occlusion=(0.3, 0.6), dual=2)
    found = 0
    for i in range(10):
        layout = compose_scene(item_seed(9, i), cfg)
        scene = render(layout)
        for dual, track in dual_scenes(layout, scene, cfg):
            before = next(x for x in scene.instances if x.track_id == track)
            after = next(x for x in dual.instances if x.track_id == track)
            assert before.occlusion_rate > cfg.dual_min_occlusion
            assert after.occlusion_rate == 0.0
            np.testing.assert_array_equal(before.amodal, after.amodal)
            found += 1
    assert found > 0


def test_generate_dataset_writes_loadable_reproducible_files(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 4, seed=3, cfg=SMALL)
    b = generate_dataset(tmp_path / "b", 4, seed=3, cfg=SMALL)
    assert a.read_bytes() == b.read_bytes()
    ds = load_amodal_coco(a)
    assert ds.layout == "native" and ds.has_visible
    assert [c["name"] for c in ds.categories] == list(CLASS_NAMES)
    for img in ds.images:
        assert (tmp_path / "b" / img.file_name).read_bytes() == (
            tmp_path / "a" / img.file_name
        ).read_bytes()
        assert ds.load_image(img.id).shape == (96, 128, 3)
    duals = [img for img in ds.images if img.dual_of is not None]
    assert duals, "expected dual images"
    for dual in duals:
        track = dual.extra["dual_track_id"]
        inst = next(a for a in ds.annotations_of(dual.id) if a.track_id == track)
        orig = next(a for a in ds.annotations_of(dual.dual_of) if a.track_id == track)
        assert inst.occlusion_rate == 0.0 < orig.occlusion_rate
        np.testing.assert_array_equal(inst.amodal_mask(), orig.amodal_mask())
    # Scene i does not depend on how many scenes the run has.
    short = load_amodal_coco(generate_dataset(tmp_path / "c", 1, seed=3, cfg=SMALL))
    first = [a.to_coco() for a in ds.annotations_of(1)]
    assert [a.to_coco() for a in short.annotations_of(1)] == first


def test_generate_video_tracks_and_full_occlusion(tmp_path: Path) -> None:
    cfg = SynthConfig(size=(160, 120))
    path = generate_video(tmp_path, 24, seed=0, cfg=cfg, fps=12, write_frames=True)
    doc = json.loads(path.read_text())
    assert doc["videos"][0]["num_frames"] == 24
    ds = load_amodal_coco(path)
    assert [img.frame_index for img in ds.images] == list(range(24))
    assert all(img.video_id == 1 for img in ds.images)
    tracks: dict[int, list[np.ndarray]] = {}
    for img in ds.images:
        ids = [a.track_id for a in ds.annotations_of(img.id)]
        assert None not in ids and len(ids) == len(set(ids))
        for a in ds.annotations_of(img.id):
            tracks.setdefault(int(a.track_id or 0), []).append(a.amodal_mask())
    moving = [t for t, masks in tracks.items() if not np.array_equal(masks[0], masks[-1])]
    assert len(moving) >= VideoConfig().moving[0]
    hidden = [a for a in ds.annotations if a.occlusion_rate == 1.0]
    assert hidden, "expected a frame with a fully occluded object"
    assert hidden[0].to_coco()["visible_bbox"] == [0.0, 0.0, 0.0, 0.0]
    cap = cv2.VideoCapture(str(tmp_path / "video.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 24
    assert ds.load_image(ds.images[3].id).shape == (120, 160, 3)


def test_video_is_reproducible(tmp_path: Path) -> None:
    cfg = SynthConfig(size=(96, 64))
    a = generate_video(tmp_path / "a", 6, seed=2, cfg=cfg).read_bytes()
    b = generate_video(tmp_path / "b", 6, seed=2, cfg=cfg).read_bytes()
    assert a == b


@pytest.mark.parametrize("amplitude", [0.0, 0.4, 0.79])
@pytest.mark.parametrize("cycles", [1.0, 2.0])
def test_time_warp_runs_monotonically_from_0_to_1(amplitude: float, cycles: float) -> None:
    warp = TimeWarp(amplitude, cycles)
    u = np.array([warp(float(t)) for t in np.linspace(0.0, 1.0, 201)])
    assert u[0] == 0.0 and u[-1] == pytest.approx(1.0)
    assert np.all(np.diff(u) > 0)
    if amplitude:
        assert not np.allclose(u, np.linspace(0.0, 1.0, 201))  # the speed really varies


@pytest.mark.parametrize(
    "motion",
    [
        Linear((10.0, 20.0), (90.0, 60.0), TimeWarp(0.7, 2.0)),
        Curved((10.0, 20.0), (90.0, 60.0), (50.0, -30.0), TimeWarp(0.5, 1.0)),
        Through((10.0, 20.0), (90.0, 60.0), (40.0, 70.0), 0.4),
    ],
)
def test_path_motions_run_from_start_to_end(motion: Linear | Curved | Through) -> None:
    assert motion.centre(0.0) == pytest.approx(motion.start)
    assert motion.centre(1.0) == pytest.approx(motion.end)


def test_curved_bends_towards_its_control_point_and_through_meets_its_point() -> None:
    curved = Curved((0.0, 0.0), (100.0, 0.0), (50.0, 80.0), TimeWarp(0.0, 1.0))
    assert curved.centre(0.5) == pytest.approx((50.0, 40.0))  # a quadratic Bézier's midpoint
    through = Through((0.0, 0.0), (100.0, 0.0), (30.0, 50.0), 0.25)
    assert through.centre(0.25) == pytest.approx((30.0, 50.0))
    assert through.centre(0.125) == pytest.approx((15.0, 25.0))  # constant speed per leg


def test_bouncing_reflects_inside_its_box() -> None:
    box = (10.0, 5.0, 70.0, 45.0)
    motion = Bouncing((20.0, 25.0), (500.0, -300.0), box, TimeWarp(0.3, 2.0))
    xy = np.array([motion.centre(float(t)) for t in np.linspace(0.0, 1.0, 400)])
    assert np.all((xy >= [box[0], box[1]]) & (xy <= [box[2], box[3]]))
    # It travels far further than the box is wide, so it reaches both walls on each axis.
    assert xy[:, 0].min() < 12 and xy[:, 0].max() > 68
    assert xy[:, 1].min() < 7 and xy[:, 1].max() > 43


def test_video_tracks_move_as_their_motions_say() -> None:
    cfg = SynthConfig(size=(160, 120))
    bg, tracks = compose_video(item_seed(4, 0), cfg, VideoConfig(occluders=(2, 2)), 11)
    kinds = [tr.kind for tr in tracks]
    assert kinds[0] == "through" and kinds[-2:] == ["static", "static"]
    assert set(kinds[1:-2]) <= {"linear", "curved", "bouncing"}
    assert all(tr.kind == tr.motion.kind for tr in tracks)
    through, pillar = tracks[0].motion, tracks[-2].motion
    assert isinstance(through, Through) and isinstance(pillar, Static)
    assert through.via == pillar.at  # it passes behind the first pillar ...
    assert through.t_via * 10 == pytest.approx(round(through.t_via * 10))  # ... on a frame
    hidden = video_frame(bg, tracks, through.t_via).instances[0]
    assert hidden.track_id == 1 and hidden.occlusion_rate == 1.0
    checked = 0
    for i in (0, 7, 10):
        frame = video_frame(bg, tracks, i / 10)
        for inst in frame.instances:
            tr = tracks[inst.track_id - 1]
            cx, cy = tr.centre(i / 10)
            h, w = tr.sprite.hw
            x0, y0 = round(cx - w / 2), round(cy - h / 2)
            ys, xs = np.nonzero(inst.amodal)
            if x0 >= 0 and y0 >= 0 and x0 + w <= 160 and y0 + h <= 120:  # not truncated
                assert (xs.min(), ys.min()) == (x0, y0)
                assert np.array_equal(inst.amodal[y0 : y0 + h, x0 : x0 + w], tr.sprite.mask)
                checked += 1
    assert checked >= 6


def test_export_yolo(tmp_path: Path) -> None:
    data = export_yolo(tmp_path, 5, seed=1, cfg=SMALL, val_fraction=0.2)
    meta = yaml.safe_load(data.read_text())
    assert meta["names"] == dict(enumerate(CLASS_NAMES))
    train = sorted((tmp_path / "labels" / "train").glob("*.txt"))
    val = sorted((tmp_path / "labels" / "val").glob("*.txt"))
    assert len(train) == 4 and len(val) == 1
    assert len(list((tmp_path / "images" / "train").glob("*.png"))) == 4
    rows = [line.split() for f in train + val for line in f.read_text().splitlines()]
    assert rows
    for row in rows:
        assert 0 <= int(row[0]) < len(CLASS_NAMES)
        assert all(0.0 <= float(v) <= 1.0 for v in row[1:]) and len(row) == 5


def test_cli_images_video_yolo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _make_cli()
    common = ["--seed", "5", "--size", "96x64", "--quiet"]
    args = parser.parse_args(
        ["synth", "images", "--out", str(tmp_path / "img"), "--count", "2", "--occlusion",
         "0.2,0.5", *common]
    )  # fmt: skip
    assert args.func(args) == 0
    ds = load_amodal_coco(tmp_path / "img" / "annotations.json")
    assert sum(img.dual_of is None for img in ds.images) == 2
    assert ds.info["config"]["occlusion"] == [0.2, 0.5]
    args = parser.parse_args(
        ["synth", "images", "--out", str(tmp_path / "pil"), "--count", "2", "--pillars", "1",
         "--classes", "disc,box", *common]
    )  # fmt: skip
    assert args.func(args) == 0
    ds = load_amodal_coco(tmp_path / "pil" / "annotations.json")
    assert ds.info["config"]["pillars"] == 1.0
    assert [c["name"] for c in ds.categories] == ["disc", "box"]
    args = parser.parse_args(
        ["synth", "video", "--out", str(tmp_path / "vid"), "--frames", "5", "--fps", "5", *common]
    )
    assert args.func(args) == 0
    assert (tmp_path / "vid" / "video.mp4").stat().st_size > 0
    args = parser.parse_args(
        ["synth", "yolo", "--out", str(tmp_path / "yolo"), "--count", "2", "--classes",
         "star,ring", *common]
    )  # fmt: skip
    assert args.func(args) == 0
    names = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())["names"]
    assert names == {0: "star", 1: "ring"}
    assert "wrote" in capsys.readouterr().out


def test_cli_rejects_bad_size() -> None:
    with pytest.raises(SystemExit):
        _make_cli().parse_args(["synth", "images", "--out", "x", "--count", "1", "--size", "9"])


@pytest.mark.skipif(
    "synth" not in __import__("edge_sameo.cli").cli.COMMANDS, reason="synth not in cli.COMMANDS"
)
def test_cli_main_runs_synth_and_maps_errors(tmp_path: Path) -> None:
    from edge_sameo.cli import main

    out = tmp_path / "img"
    assert main(["synth", "images", "--out", str(out), "--count", "1", "--size", "64x48",
                 "--quiet"]) == 0  # fmt: skip
    assert (out / "annotations.json").is_file()
    assert main(["synth", "images", "--out", str(out), "--count", "0", "--quiet"]) == 2
