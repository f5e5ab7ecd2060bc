"""Per-stage latency, throughput, peak memory and mask agreement of every runtime.

The original-code-equivalent baseline (torch eager fp32 with the original explicit
attention) always runs first, so every ratio comes from one run on one machine. With a
refiner, each box count also times the refiner on the crops the predictor builds, and the
masks compared are the predictor's final (refined) masks.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend
from edge_sameo.backends.recording import RecordingBackend
from edge_sameo.masks import mask_iou
from edge_sameo.modeling import EfficientSam
from edge_sameo.predictor import AmodalPredictor, best_masks
from edge_sameo.preprocess import resize_pixels

BASELINE = "torch-eager fp32"


@dataclass(frozen=True)
class BenchConfig:
    box_counts: tuple[int, ...] = (1, 4, 16)
    iters: int = 5
    warmup: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iters < 1 or self.warmup < 0:
            raise ValueError("iters must be >= 1 and warmup >= 0")
        if not self.box_counts or min(self.box_counts) < 1:
            raise ValueError("box counts must be >= 1")


@dataclass
class StageStats:
    p50_ms: float
    p95_ms: float

    @staticmethod
    def of(times_s: Sequence[float]) -> StageStats:
        ms = np.asarray(times_s) * 1e3
        return StageStats(float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))


@dataclass
class RuntimeResult:
    """One runtime; per-box-count stages keyed by N. ``refiner``: ``backend.refine`` on the
    crops of N boxes (empty without a refiner); ``postprocess``: masks from the decoder's
    logits, or with a refiner the predictor's crop building and pasting."""

    name: str
    description: str
    setup_s: float
    preprocess: StageStats
    encoder: StageStats
    decoder: dict[int, StageStats]
    postprocess: dict[int, StageStats]
    peak_rss_mib: float
    embedding_rel_err: float
    mask_iou: dict[int, float]
    throughput_fps: dict[int, float] = field(default_factory=dict)
    refiner: dict[int, StageStats] = field(default_factory=dict)


def _timed(fn: Callable[[], Any], iters: int, warmup: int) -> tuple[list[float], Any]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process, where Linux allows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_boxes(image_hw: tuple[int, int], n: int, seed: int) -> NDArray[np.float32]:
    """n deterministic boxes inside an image, XYXY pixels."""
    h, w = image_hw
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1, (n, 2)) * [w * 0.7, h * 0.7]
    wh = rng.uniform(0.1, 0.3, (n, 2)) * [w, h]
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def refined_stages(
    predictor: AmodalPredictor,
    recorder: RecordingBackend,
    boxes: NDArray[np.float32],
    cfg: BenchConfig,
) -> tuple[list[float], list[float], NDArray[np.bool_]]:
    """The refiner's stages for (N, 4) XYXY image-pixel ``boxes`` through ``predictor``
    (over ``recorder``, its image already set): seconds of ``refine`` on the crops the
    predictor builds, seconds of the predictor's own crop building and pasting per call,
    and its final (N, H, W) masks."""
    for _ in range(cfg.warmup):
        predictor.predict(boxes)
    preds = [predictor.predict(boxes) for _ in range(cfg.iters)]
    assert recorder.crops is not None
    ref_t, _ = _timed(partial(recorder.inner.refine, recorder.crops), cfg.iters, cfg.warmup)
    return ref_t, [p.speed["postprocess"] / 1e3 for p in preds], preds[-1].masks


def run_backend(
    name: str,
    make: Callable[[], Backend],
    image: NDArray[np.uint8],
    cfg: BenchConfig,
    reference: dict[str, Any] | None,
) -> tuple[RuntimeResult, dict[str, Any]]:
    """Benchmark one runtime; ``reference`` holds the baseline's outputs (None: this is it)."""
    reset_peak_rss()
    t0 = time.perf_counter()
    backend = make()
    setup = time.perf_counter() - t0
    h, w = image.shape[:2]
    s = backend.img_size
    pre_t, pixels = _timed(partial(resize_pixels, image, s), cfg.iters, cfg.warmup)
    enc_t, emb = _timed(partial(backend.encode, pixels), cfg.iters, cfg.warmup)
    outputs: dict[str, Any] = {"embedding": emb, "masks": {}}
    dec, post, refine, ious, fps = {}, {}, {}, {}, {}
    scale = np.array([s / w, s / h, s / w, s / h], np.float32)
    # The refiner's stages run through the app's own path (decoder -> crops -> refine -> paste).
    recorder = RecordingBackend(backend)
    predictor = AmodalPredictor(recorder)
    if backend.has_refiner:
        predictor.set_image(image)
    for n in cfg.box_counts:
        boxes = bench_boxes((h, w), n, cfg.seed)
        dec_t, out = _timed(partial(backend.decode, emb, boxes * scale), cfg.iters, cfg.warmup)
        ref_t: list[float] = []
        if backend.has_refiner:
            ref_t, post_t, masks = refined_stages(predictor, recorder, boxes, cfg)
            refine[n] = StageStats.of(ref_t)
        else:
            post_t, (masks, _) = _timed(
                partial(best_masks, out.low_res_logits, out.iou_predictions, (h, w)),
                cfg.iters,
                cfg.warmup,
            )
        dec[n], post[n] = StageStats.of(dec_t), StageStats.of(post_t)
        outputs["masks"][n] = masks
        if reference is not None:
            ref_masks = reference["masks"][n]
            ious[n] = float(
                np.mean([mask_iou(a, b) for a, b in zip(masks, ref_masks, strict=True)])
            )
        else:
            ious[n] = 1.0
        stages = (pre_t, enc_t, dec_t, post_t) + ((ref_t,) if ref_t else ())
        fps[n] = float(1.0 / sum(float(np.median(t)) for t in stages))
    if reference is not None:
        ref_emb = reference["embedding"]
        rel = float(np.abs(emb - ref_emb).max() / np.abs(ref_emb).max())
    else:
        rel = 0.0
    result = RuntimeResult(
        name=name,
        description=backend.describe(),
        setup_s=setup,
        preprocess=StageStats.of(pre_t),
        encoder=StageStats.of(enc_t),
        decoder=dec,
        postprocess=post,
        peak_rss_mib=peak_rss_mib(),
        embedding_rel_err=rel,
        mask_iou=ious,
        throughput_fps=fps,
        refiner=refine,
    )
    backend.close()
    return result, outputs


def candidate_runtimes(
    model: EfficientSam,
    export_dir: Path | None,
    wanted: Sequence[str] | None,
    threads: int | None = None,
) -> list[tuple[str, Callable[[], Backend]]]:
    """Every (name, factory) available here; the baseline first."""
    import copy

    from edge_sameo.backends.registry import export_dir_for, is_available
    from edge_sameo.backends.torch_backend import TorchBackend

    def torch_factory(precision: str, attention: str) -> Callable[[], Backend]:
        return lambda: TorchBackend(copy.deepcopy(model), precision, "cpu", attention)

    def onnx_factory(cls: Callable[..., Backend], precision: str) -> Callable[[], Backend]:
        return lambda: cls(directory, precision, threads=threads)

    runs: list[tuple[str, Callable[[], Backend]]] = [
        (BASELINE, torch_factory("fp32", "explicit")),
        ("torch-sdpa fp32", torch_factory("fp32", "sdpa")),
        ("torch-sdpa bf16", torch_factory("bf16", "sdpa")),
    ]
    directory = export_dir or export_dir_for(model)
    if is_available("onnxruntime"):
        from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend

        for p in ("fp32", "fp16", "int8"):
            if p == "fp32" or (directory / f"encoder.{p}.onnx").is_file():
                runs.append((f"onnxruntime {p}", onnx_factory(OnnxRuntimeBackend, p)))
    if is_available("openvino"):
        from edge_sameo.backends.openvino_backend import OpenVINOBackend

        for p in ("fp32", "bf16", "int8"):
            if p != "int8" or (directory / "encoder.int8.onnx").is_file():
                runs.append((f"openvino {p}", onnx_factory(OpenVINOBackend, p)))
        runs.append(
            (
                "openvino bf16 enc + fp32 dec",
                lambda: OpenVINOBackend(
                    directory, "bf16", threads=threads, decoder_precision="fp32"
                ),
            )
        )
    if is_available("tensorrt"):
        from edge_sameo.backends.registry import backend_class

        trt: Callable[..., Backend] = backend_class("tensorrt")
        for p in ("fp16", "int8"):
            runs.append((f"tensorrt {p}", partial(trt, directory, p)))
    if wanted:
        keep = [r for r in runs if r[0] == BASELINE or any(w in r[0] for w in wanted)]
        return keep
    return runs


def machine_info() -> dict[str, Any]:
    import os

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def run_bench(
    model: EfficientSam,
    image: NDArray[np.uint8],
    cfg: BenchConfig,
    export_dir: Path | None = None,
    wanted: Sequence[str] | None = None,
    progress: Callable[[str], None] = print,
    threads: int | None = None,
) -> dict[str, Any]:
    """Benchmark every runtime (``threads``: one count for torch, ONNX Runtime and
    OpenVINO alike, so the comparison stays fair on a shared machine)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    results: list[RuntimeResult] = []
    reference: dict[str, Any] | None = None
    for name, make in candidate_runtimes(model, export_dir, wanted, threads):
        progress(f"benchmarking {name} ...")
        try:
            res, outputs = run_backend(name, make, image, cfg, reference)
        except Exception as exc:  # one runtime failing must not lose the others' figures
            progress(f"  {name} failed: {type(exc).__name__}: {exc}")
            continue
        if reference is None:
            reference = outputs
        results.append(res)
    base = results[0]
    ratios = {
        r.name: {
            "encoder": base.encoder.p50_ms / r.encoder.p50_ms,
            **{
                f"decoder_{n}": base.decoder[n].p50_ms / r.decoder[n].p50_ms for n in cfg.box_counts
            },
        }
        for r in results
    }
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            **machine_info(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "model": model.config.name,
        "image_hw": list(image.shape[:2]),
        "config": asdict(cfg),
        "baseline": BASELINE,
        "results": [asdict(r) for r in results],
        "speedup_vs_baseline": ratios,
    }


def markdown_table(report: dict[str, Any]) -> str:
    """One row per runtime. With a refiner each decoder cell reads ``decoder + refiner``
    (p50 ms of ``decode`` and of ``refine`` for the same N boxes)."""
    counts = report["config"]["box_counts"]
    refined = any(r.get("refiner") for r in report["results"])
    stage = "decoder + refiner" if refined else "decoder"
    head = (
        "| runtime | encoder p50/p95 ms | "
        + " | ".join(f"{stage} N={n} p50 ms" for n in counts)
        + " | enc × | "
        + " | ".join(f"dec{n} ×" for n in counts)
        + f" | mask IoU (N={counts[-1]}) | emb rel err | FPS (N={counts[-1]}) | peak RSS MiB |"
    )
    sep = "|" + "---|" * (head.count("|") - 1)
    rows = [head, sep]
    for r in report["results"]:
        ratio = report["speedup_vs_baseline"][r["name"]]
        last = str(counts[-1]) if str(counts[-1]) in r["decoder"] else counts[-1]
        cells = []
        for k in r["decoder"]:
            cell = f"{r['decoder'][k]['p50_ms']:.1f}"
            if r.get("refiner"):
                cell += f" + {r['refiner'][k]['p50_ms']:.1f}"
            cells.append(cell)
        rows.append(
            f"| {r['name']} | {r['encoder']['p50_ms']:.0f} / {r['encoder']['p95_ms']:.0f} | "
            + " | ".join(cells)
            + f" | {ratio['encoder']:.1f} | "
            + " | ".join(f"{ratio[f'decoder_{n}']:.1f}" for n in counts)
            + f" | {r['mask_iou'][last]:.3f} | {r['embedding_rel_err']:.1e}"
            + f" | {r['throughput_fps'][last]:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(rows)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_sameo.io import save_figure

    names = [r["name"] for r in report["results"]]
    counts = report["config"]["box_counts"]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(names) + 2))
    y = np.arange(len(names))
    height = 0.8 / (1 + len(counts))
    enc = [r["encoder"]["p50_ms"] for r in report["results"]]
    ax.barh(y, enc, height, label="encoder")
    for i, n in enumerate(counts):
        vals = [r["decoder"][n]["p50_ms"] for r in report["results"]]
        bars = ax.barh(y + (i + 1) * height, vals, height, label=f"decoder N={n}")
        refine = [r["refiner"][n]["p50_ms"] if r.get("refiner") else 0.0 for r in report["results"]]
        if any(refine):
            # The refiner stacked on its decoder bar, hatched in the same colour.
            ax.barh(
                y + (i + 1) * height,
                refine,
                height,
                left=vals,
                color=bars.patches[0].get_facecolor(),
                hatch="//",
                alpha=0.5,
                label=f"+ refiner N={n}",
            )
    ax.set_yticks(y + height * len(counts) / 2, names)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency, ms (log)")
    ax.invert_yaxis()
    ax.legend()
    ax.set_title(f"{report['model']} on {report['machine']['cpu']} ({report['date'][:10]})")
    fig.tight_layout()
    save_figure(fig, path)


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    from edge_sameo.io import atomic_write_bytes, atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown_table(report)
    paths = [out_dir / "bench.json", out_dir / "bench.md", out_dir / "bench.png"]
    atomic_write_json(paths[0], json.loads(json.dumps(report)))
    atomic_write_bytes(paths[1], (md + "\n").encode())
    plot(report, paths[2])
    return paths
