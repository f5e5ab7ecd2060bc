"""The bundled edge-sameo nano model: config and its two-stage recipe, end to end.

    python -m edge_sameo.train nano --config configs/nano.yaml        # or: edge-sameo train nano

1. data: the synthetic world (``edge-sameo synth``) as COCO-amodal sets with dual images — a
   training set, a validation set and a held-out test set, each from its own seed;
2. stage 1 (full training): encoder + prompt encoder + decoder from random weights on
   **visible** masks with modal boxes — an EfficientSAM of the synthetic world;
3. stage 2 (the SAMEO recipe): the stage-1 decoder fine-tuned on **amodal** masks with
   modal/amodal boxes 50:50, the encoder frozen (embedding cache), the stage-1 decoder
   kept as the modal head;
4. stage 3 (when the config has a ``refiner`` section): the object-resolution refiner
   trained on fresh scenes over the frozen stage-2 model (``train.refiner``);
5. test: the held-out set scored through the app's path with modal and with amodal box
   prompts; the model (``nano.pt``), its SAMEO decoder checkpoint and ``metrics.json`` are
   written.

Every stage resumes where it stopped: run the same command again after an interruption.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_sameo.build import CONFIGS
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_json
from edge_sameo.modeling import ModelConfig

#: Sized for real time on a 2-core CPU (see docs/TRAINING.md for the latency table):
#: 256 px input, 16×16 tokens, 4 narrow blocks; 64×64 low-res masks.
NANO_CONFIG: ModelConfig = CONFIGS["nano"]


@dataclass(frozen=True)
class NanoRecipe:
    """Data sizes and seeds, and the TrainConfig fields of each stage."""

    out: Path = Path("runs/nano")
    synth: Mapping[str, Any] = field(default_factory=dict)
    train_seed: int = 2000
    train_count: int = 2500
    val_seed: int = 2100
    val_count: int = 100
    test_seed: int = 9100
    test_count: int = 300
    threads: int = 1
    progress: bool = True
    #: Start stage 1 from the stage-1 model inside this edge-sameo nano checkpoint (its
    #: encoder and modal decoder) instead of random weights: a retraining of a bundled
    #: model on a changed world, or a longer schedule in two runs.
    warm_start: Path | None = None
    #: The YAML this recipe came from (recorded in metrics.json and the model card).
    config_file: str | None = None
    stage1: Mapping[str, Any] = field(default_factory=dict)
    stage2: Mapping[str, Any] = field(default_factory=dict)
    #: Stage 3, the refiner (``train.refiner.STAGE_DEFAULTS`` keys); empty: no refiner.
    refiner: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.warm_start is not None:
            object.__setattr__(self, "warm_start", Path(self.warm_start))
        seeds = {self.train_seed, self.val_seed, self.test_seed}
        if len(seeds) != 3:
            raise InputError("train, val and test seeds must differ (held-out data)")

    def replace(self, **changes: Any) -> NanoRecipe:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_yaml(
        cls,
        path: str | Path | None,
        out: Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> NanoRecipe:
        """The recipe of a YAML file (None: the defaults) with ``overrides`` (``stage1.lr``
        style keys reach a section) and ``out``; :class:`InputError` on unknown keys."""
        from edge_sameo.train.config import load_yaml

        data: dict[str, Any] = load_yaml(path) if path is not None else {}
        for key, value in (overrides or {}).items():
            section, dot, name = key.partition(".")
            if dot and section in ("stage1", "stage2", "synth", "refiner"):
                data.setdefault(section, {})[name] = value
            else:
                data[key] = value
        if out is not None:
            data["out"] = out
        if path is not None:
            data.setdefault("config_file", str(path))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown nano recipe keys: {', '.join(unknown)}")
        return cls(**data)

    # ------------------------------------------------------------------ paths

    def data_json(self, split: str) -> Path:
        """``out/data/<split>/annotations.json``: the generated ``split`` set."""
        return self.out / "data" / split / "annotations.json"

    @property
    def runs(self) -> Path:
        """``out/runs``: the training runs of the stages."""
        return self.out / "runs"

    @property
    def warm_start_model(self) -> Path:
        """``out/warm_start.pt``: the stage-1 model taken from ``warm_start``."""
        return self.out / "warm_start.pt"


def stage_configs(recipe: NanoRecipe) -> tuple[Any, Any]:
    """The TrainConfigs of stage 1 and stage 2."""
    from edge_sameo.train.config import TrainConfig

    common: dict[str, Any] = {
        "val": recipe.data_json("val"),
        "cache_dir": recipe.out / "cache",
        "threads": recipe.threads,
        "progress": recipe.progress,
        "seed": recipe.train_seed,
    }
    warm: dict[str, Any] = {}
    if recipe.warm_start is not None:
        warm["init"] = recipe.warm_start_model
    s1 = TrainConfig(
        **{
            "out": recipe.runs / "stage1",
            "train": [recipe.data_json("train")],
            "model": "nano",
            **warm,
            "mode": "full",
            "target": "visible",
            "amodal_box_prob": 0.0,
            "keep_modal": False,
            **common,
            **dict(recipe.stage1),
        }
    )
    s2 = TrainConfig(
        **{
            "out": recipe.runs / "stage2",
            "train": [recipe.data_json("train")],
            "init": recipe.runs / "stage1" / "best.pt",
            "mode": "decoder",
            "target": "amodal",
            "amodal_box_prob": 0.5,
            "keep_modal": True,
            **common,
            **dict(recipe.stage2),
        }
    )
    return s1, s2


def write_warm_start(source: Path, dest: Path) -> None:
    """The stage-1 model inside a nano checkpoint: its encoders, with the modal decoder
    (what stage 1 trained) as the mask decoder and no second decoder."""
    from edge_sameo.checkpoint import load_model, save_model

    model = load_model(source)
    if model.modal_decoder is not None:
        model.mask_decoder = model.modal_decoder
        model.modal_decoder = None
    save_model(model, dest, {"warm_start_from": str(source)})


def make_data(recipe: NanoRecipe) -> dict[str, float]:
    """Generate the three synthetic sets (skipped when already there)."""
    from edge_sameo.data import SynthConfig, generate_dataset

    synth = SynthConfig(**dict(recipe.synth))
    seconds: dict[str, float] = {}
    for split, count, seed in (
        ("train", recipe.train_count, recipe.train_seed),
        ("val", recipe.val_count, recipe.val_seed),
        ("test", recipe.test_count, recipe.test_seed),
    ):
        if recipe.data_json(split).is_file():
            continue
        t = time.perf_counter()
        generate_dataset(recipe.data_json(split).parent, count, seed, synth)
        seconds[split] = time.perf_counter() - t
    return seconds


def test_model(recipe: NanoRecipe, model_path: Path) -> dict[str, Any]:
    """Held-out scores: amodal head with modal and amodal box prompts, modal head."""
    from edge_sameo.train.score import score_nano

    test = score_nano(model_path, recipe.data_json("test"), recipe.threads)
    return {"seed": recipe.test_seed, "scenes": recipe.test_count, **test}


def run_recipe(recipe: NanoRecipe) -> dict[str, Any]:
    """Data, stage 1, stage 2, test; returns (and writes) ``metrics.json``'s content."""
    from edge_sameo.checkpoint import load_model, save_model
    from edge_sameo.train.export import write_sameo_decoder
    from edge_sameo.train.trainer import fit

    t0 = time.perf_counter()
    recipe.out.mkdir(parents=True, exist_ok=True)
    data_s = make_data(recipe)
    if recipe.warm_start is not None and not recipe.warm_start_model.is_file():
        write_warm_start(recipe.warm_start, recipe.warm_start_model)
    s1, s2 = stage_configs(recipe)
    sum1 = fit(s1, resume=True)
    sum2 = fit(s2, resume=True)
    model = load_model(s2.out / "best.pt")
    meta = {
        "recipe": "python -m edge_sameo.train nano",
        "stage1": str(s1.out),
        "stage2": str(s2.out),
        "weights": "synthetic world only (edge-sameo synth): not for real photos",
    }
    write_sameo_decoder(model, recipe.out / "nano_sameo_decoder.pt", meta)
    refiner: dict[str, Any] | None = None
    if recipe.refiner:
        import torch

        from edge_sameo.modeling import MaskRefiner, RefinerConfig
        from edge_sameo.train.refiner import train_stage

        decoders = recipe.runs / "decoders.pt"
        save_model(model, decoders, meta)
        t = time.perf_counter()
        stage = train_stage(
            decoders, recipe.runs / "refiner", recipe.train_seed, recipe.val_seed,
            dict(recipe.refiner),
        )  # fmt: skip
        obj = torch.load(stage["weights"], weights_only=True)
        model.refiner = MaskRefiner(RefinerConfig.from_dict(obj["config"]))
        model.refiner.load_state_dict(obj["state_dict"])
        model.refiner.eval()
        refiner = {**stage, "config": obj["config"], "wall_s": time.perf_counter() - t}
    save_model(model, recipe.out / "nano.pt", meta)
    test = test_model(recipe, recipe.out / "nano.pt")
    result = {
        "model_config": model.config.to_dict(),
        "data": {
            "train": {"seed": recipe.train_seed, "scenes": recipe.train_count},
            "val": {"seed": recipe.val_seed, "scenes": recipe.val_count},
            "test": {"seed": recipe.test_seed, "scenes": recipe.test_count},
            "generate_s": data_s,
            "synth": dict(recipe.synth),
        },
        "warm_start": None if recipe.warm_start is None else str(recipe.warm_start),
        "config_file": recipe.config_file,
        "stage1": {"config": s1.to_dict(), "summary": sum1},
        "stage2": {"config": s2.to_dict(), "summary": sum2},
        **({"refiner_stage": refiner} if refiner else {}),
        "test": test,
        "wall_s_this_invocation": time.perf_counter() - t0,
        "train_s": float(sum1["elapsed_s"]) + float(sum2["elapsed_s"]),
    }
    atomic_write_json(recipe.out / "metrics.json", result)
    return result
