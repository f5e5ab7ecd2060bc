"""What the synthetic world draws (``SynthConfig``), its classes and textures, and how
its items are seeded (one independent PCG64 stream per item)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edge_sameo.errors import InputError

#: Object classes, one per shape family; category ids are 1-based positions in
#: ``SynthConfig.classes``.
CLASS_NAMES: tuple[str, ...] = ("disc", "box", "polygon", "star", "ring", "bar", "blob")
#: The category of free-form shapes (``SynthConfig.free_shapes``), after the classes drawn.
FREE_CLASS = "free"
TEXTURES: tuple[str, ...] = ("flat", "gradient", "stripes", "noise", "checker")

Progress = Callable[[int], object] | None
SeedLike = int | np.random.SeedSequence | np.random.Generator


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    if len(value) != 2:
        raise InputError(f"{name} must be a (min, max) pair, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not lo <= hi:
        raise InputError(f"{name} must satisfy min <= max, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class SynthConfig:
    """What the synthetic world draws.

    size: (W, H) image size in pixels.
    objects: (min, max) annotated objects per scene, inclusive.
    occlusion: (min, max) target occlusion ratio sampled per instance (every instance but
        the frontmost one, which nothing can cover); the achieved ratio is recorded.
    object_scale: (min, max) longer side of an object as a fraction of min(W, H).
    classes: object classes to draw, a subset of ``CLASS_NAMES`` (ids follow this order).
    textures: object textures to draw, a subset of ``TEXTURES``.
    clutter: (min, max) unannotated background strokes and dots per scene.
    dual: dual images per scene, each the same scene without the occluders of one
        occluded instance (0 disables dual annotation).
    dual_min_occlusion: an instance counts as occluded for dual annotation above this.
    placement_tries: random placements tried per object besides the occlusion-seeking ones.
    pillars: probability that a scene also gets an upright pillar in front of its objects,
        drawn like the video world's static occluders (``pillar_sprite``, class ``box``) and
        placed across a random object. At 0 (the default) no extra random number is drawn, so
        scenes are pixel-identical to those made before the option existed; above 0 a scene
        is the same scene plus, sometimes, a pillar.
    free_shapes: probability that an object is drawn as a free-form shape
        (``sprites.free_outlines``: deep radial lobes, a jagged polygon or a union of two
        primitives, most of them non-convex) instead of a shape of its class; such objects
        have their own category, ``free`` (id len(classes) + 1). Shape variety for training
        the class-agnostic refiner, so that it does not learn that every object is convex.
        At 0 (the default) no extra random number is drawn: scenes are pixel-identical to
        those made before the option existed.
    """

    size: tuple[int, int] = (640, 480)
    objects: tuple[int, int] = (2, 5)
    occlusion: tuple[float, float] = (0.0, 0.7)
    object_scale: tuple[float, float] = (0.2, 0.45)
    classes: tuple[str, ...] = CLASS_NAMES
    textures: tuple[str, ...] = TEXTURES
    clutter: tuple[int, int] = (3, 12)
    dual: int = 1
    dual_min_occlusion: float = 0.05
    placement_tries: int = 4
    pillars: float = 0.0
    free_shapes: float = 0.0

    def __post_init__(self) -> None:
        w, h = self.size
        if not (isinstance(w, int) and isinstance(h, int)) or w < 32 or h < 32:
            raise InputError(f"size must be integers (W, H) >= 32, got {self.size!r}")
        lo, hi = _pair(self.objects, "objects")
        if lo < 1 or int(lo) != lo or int(hi) != hi:
            raise InputError(f"objects must be integers >= 1, got {self.objects!r}")
        olo, ohi = _pair(self.occlusion, "occlusion")
        if olo < 0.0 or ohi > 0.95:
            raise InputError(f"occlusion must lie in [0, 0.95], got {self.occlusion!r}")
        slo, shi = _pair(self.object_scale, "object_scale")
        if slo < 0.03 or shi > 0.9:
            raise InputError(f"object_scale must lie in [0.03, 0.9], got {self.object_scale!r}")
        if not self.classes or any(c not in CLASS_NAMES for c in self.classes):
            raise InputError(f"classes must be a non-empty subset of {CLASS_NAMES}")
        if len(set(self.classes)) != len(self.classes):
            raise InputError(f"classes has duplicates: {self.classes!r}")
        if not self.textures or any(t not in TEXTURES for t in self.textures):
            raise InputError(f"textures must be a non-empty subset of {TEXTURES}")
        clo, _ = _pair(self.clutter, "clutter")
        if clo < 0:
            raise InputError(f"clutter must be >= 0, got {self.clutter!r}")
        if self.dual < 0 or self.placement_tries < 1:
            raise InputError("dual must be >= 0 and placement_tries >= 1")
        if not 0.0 <= self.pillars <= 1.0:
            raise InputError(f"pillars is a probability in [0, 1], got {self.pillars!r}")
        if not 0.0 <= self.free_shapes <= 1.0:
            raise InputError(f"free_shapes is a probability in [0, 1], got {self.free_shapes!r}")

    @property
    def category_names(self) -> tuple[str, ...]:
        """The categories drawn, in id order (id = position + 1): the classes, then ``free``
        when ``free_shapes`` is on."""
        return self.classes + ((FREE_CLASS,) if self.free_shapes > 0.0 else ())

    @property
    def categories(self) -> list[dict[str, object]]:
        """COCO ``categories`` of :attr:`category_names`."""
        return [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(self.category_names)
        ]


@dataclass(frozen=True)
class VideoConfig:
    """Motion in the synthetic video world (sizes and classes come from ``SynthConfig``).

    moving: (min, max) moving objects. occluders: (min, max) static occluders in front of
    every moving object. full_occlusion: make one small object pass straight behind the
    first static occluder, so the clip contains frames where it is fully hidden.
    """

    moving: tuple[int, int] = (2, 4)
    occluders: tuple[int, int] = (1, 2)
    full_occlusion: bool = True

    def __post_init__(self) -> None:
        lo, _ = _pair(self.moving, "moving")
        olo, _ = _pair(self.occluders, "occluders")
        if lo < 1 or olo < 0:
            raise InputError("moving must be >= 1 and occluders >= 0")
        if self.full_occlusion and self.occluders[1] < 1:
            raise InputError("full_occlusion needs at least one static occluder")


# --------------------------------------------------------------------------- seeding


def make_rng(seed: SeedLike) -> np.random.Generator:
    """A PCG64 generator from an int, a SeedSequence or an existing generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def item_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of item ``index`` of a run seeded ``seed``: independent of the item count
    and of generation order, so any item can be regenerated alone or in parallel."""
    return np.random.SeedSequence([int(seed), int(index)])
