"""The synthetic amodal world: procedural scenes and videos with exact amodal ground truth.

Scenes are composed layer by layer (background and clutter, then objects back to front),
so every object's complete (amodal) mask and its visible (modal) mask are known exactly.
Object class = shape family (``CLASS_NAMES``), drawn so that a whole shape names its class
(sharp-cornered boxes, triangles and pentagons, lobed blobs, elliptic discs; scenes made
before 2026-12-01 rounded some boxes and polygons and differ); textures are random.
Everything is a pure function of the seed: the same ``(seed, index)`` gives the same
pixels on every machine (only numpy's PCG64 and OpenCV's integer rasteriser are involved).

Coordinate frames: images are (H, W, 3) uint8 RGB; masks (H, W) bool; a sprite's
position is the integer pixel ``(x, y)`` of its top-left corner in the image.

Modules: ``config`` (what is drawn, seeding), ``sprites`` (shapes, textures, pillars,
backgrounds), ``layout`` (placement towards target occlusions, rendering, dual
annotation), ``video`` (motions and clips).
"""

from __future__ import annotations

from edge_sameo.data.synth.config import (
    CLASS_NAMES,
    TEXTURES,
    Progress,
    SeedLike,
    SynthConfig,
    VideoConfig,
    item_seed,
    make_rng,
)
from edge_sameo.data.synth.layout import (
    Instance,
    Layout,
    Scene,
    compose_scene,
    dual_scenes,
    generate_scene,
    iter_scenes,
    paste_mask,
    place_occluder,
    render,
)
from edge_sameo.data.synth.sprites import (
    Sprite,
    background,
    make_sprite,
    pillar_sprite,
    shape_mask,
    texture,
)
from edge_sameo.data.synth.video import (
    Bouncing,
    Curved,
    Linear,
    Motion,
    Static,
    Through,
    TimeWarp,
    Track,
    compose_video,
    video_frame,
)

__all__ = [
    "CLASS_NAMES",
    "TEXTURES",
    "Bouncing",
    "Curved",
    "Instance",
    "Layout",
    "Linear",
    "Motion",
    "Progress",
    "Scene",
    "SeedLike",
    "Sprite",
    "Static",
    "SynthConfig",
    "Through",
    "TimeWarp",
    "Track",
    "VideoConfig",
    "background",
    "compose_scene",
    "compose_video",
    "dual_scenes",
    "generate_scene",
    "item_seed",
    "iter_scenes",
    "make_rng",
    "make_sprite",
    "paste_mask",
    "pillar_sprite",
    "place_occluder",
    "render",
    "shape_mask",
    "texture",
    "video_frame",
]
