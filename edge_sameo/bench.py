"""Per-stage latency, throughput, memory and mask agreement of every runtime.

The original-code-equivalent baseline (torch eager fp32 with the original explicit
attention) is set up first and every runtime is timed in the same run, in rounds taken in
turn (round-robin), so that the machine's drift and load fall on all of them alike. With a
refiner, each box count also times the refiner on the crops the predictor builds, and the
masks compared are the predictor's final (refined) masks.

:func:`run_compare` instead puts two models side by side on each runtime: whole frames
(``set_image`` + ``predict`` of N boxes, as the app runs them), taken in turn so that the
machine's noise falls on both alike, and the ratio of one model's cost to the other's.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from edge_sameo.backends.base import Backend
from edge_sameo.backends.recording import RecordingBackend
from edge_sameo.errors import InputError
from edge_sameo.masks import mask_iou
from edge_sameo.modeling import EfficientSam
from edge_sameo.predictor import AmodalPredictor, best_masks
from edge_sameo.preprocess import resize_pixels

if TYPE_CHECKING:
    from edge_sameo.backends.registry import Export
    from edge_sameo.backends.tensorrt_backend import EngineBuild

BASELINE = "torch-eager fp32"
#: The stages of ``Prediction.speed`` reported per model in a comparison.
FRAME_STAGES = ("preprocess", "encoder", "decoder", "refiner", "postprocess")
#: The network's own stages: encoder, both decoder heads and the refiner.
COMPUTE_STAGES = ("encoder", "decoder", "refiner")
#: CPU flags (``/proc/cpuinfo``) that decide which kernels the CPU runtimes pick.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class BenchConfig:
    """What ``edge-sameo bench`` times: decoder box counts N, timed ``iters`` and
    untimed ``warmup`` rounds per runtime, and the seed of the random boxes."""

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
    """Over a stage's iterations: p50 and p95 in ms, and the spread, the interquartile
    range in % of p50."""

    p50_ms: float
    p95_ms: float
    spread_pct: float = 0.0

    @staticmethod
    def of(times_s: Sequence[float]) -> StageStats:
        """The statistics of per-iteration times in seconds."""
        ms = np.asarray(times_s) * 1e3
        p25, p50, p75, p95 = (float(x) for x in np.percentile(ms, [25, 50, 75, 95]))
        return StageStats(p50, p95, 100.0 * (p75 - p25) / p50 if p50 > 0 else 0.0)


@dataclass
class RuntimeResult:
    """One runtime; per-box-count stages keyed by N. ``refiner``: ``backend.refine`` on the
    crops of N boxes (empty without a refiner); ``postprocess``: masks from the decoder's
    logits, or with a refiner the predictor's crop building and pasting. ``rss_added_mib``:
    resident memory added by the runtime's set-up and first pass; ``rounds``: timed
    iterations."""

    name: str
    description: str
    setup_s: float
    preprocess: StageStats
    encoder: StageStats
    decoder: dict[int, StageStats]
    postprocess: dict[int, StageStats]
    rss_added_mib: float
    embedding_rel_err: float
    mask_iou: dict[int, float]
    throughput_fps: dict[int, float] = field(default_factory=dict)
    refiner: dict[int, StageStats] = field(default_factory=dict)
    rounds: int = 0


def bench_boxes(image_hw: tuple[int, int], n: int, seed: int) -> NDArray[np.float32]:
    """n deterministic boxes inside an image, XYXY pixels."""
    h, w = image_hw
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1, (n, 2)) * [w * 0.7, h * 0.7]
    wh = rng.uniform(0.1, 0.3, (n, 2)) * [w, h]
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def current_rss_mib() -> float:
    """Resident memory of this process now (VmRSS), MiB; 0 where /proc has none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class _Runtime:
    """One runtime under test, set up once; :meth:`round` times one pass of every stage
    (preprocess, encoder, then per box count the decoder, and the refiner or the masks'
    postprocessing), so :func:`run_bench` can take the runtimes' rounds in turn."""

    def __init__(
        self, name: str, make: Callable[[], Backend], image: NDArray[np.uint8], cfg: BenchConfig
    ) -> None:
        self.name, self.image, self.cfg = name, image, cfg
        rss = current_rss_mib()
        t0 = time.perf_counter()
        self.backend = make()
        self.setup_s = time.perf_counter() - t0
        h, w = image.shape[:2]
        s = self.backend.img_size
        self.scale = np.array([s / w, s / h, s / w, s / h], np.float32)
        self.boxes = {n: bench_boxes((h, w), n, cfg.seed) for n in cfg.box_counts}
        # The refiner's stages run through the app's own path (decoder -> crops -> refine
        # -> paste).
        self.recorder = RecordingBackend(self.backend)
        self.predictor = AmodalPredictor(self.recorder)
        if self.backend.has_refiner:
            self.predictor.set_image(image)
        self.times: dict[str, list[float]] = {}
        self.outputs: dict[str, Any] = {"masks": {}}
        self.round(record=cfg.warmup == 0)  # the first pass: set-up work the runtime defers
        self.rss_added_mib = current_rss_mib() - rss
        for _ in range(cfg.warmup - 1):
            self.round(record=False)

    def _time(self, key: str, record: bool, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        if record:
            self.times.setdefault(key, []).append(time.perf_counter() - t)
        return out

    def round(self, record: bool = True) -> None:
        b, s = self.backend, self.backend.img_size
        pixels = self._time("preprocess", record, partial(resize_pixels, self.image, s))
        emb = self._time("encoder", record, partial(b.encode, pixels))
        self.outputs["embedding"] = emb
        for n, boxes in self.boxes.items():
            out = self._time(f"decoder/{n}", record, partial(b.decode, emb, boxes * self.scale))
            if b.has_refiner:
                pred = self.predictor.predict(boxes)
                assert self.recorder.crops is not None
                self._time(f"refiner/{n}", record, partial(b.refine, self.recorder.crops))
                if record:
                    self.times.setdefault(f"postprocess/{n}", []).append(
                        pred.speed["postprocess"] / 1e3
                    )
                masks = pred.masks
            else:
                hw = self.image.shape[:2]
                fn = partial(best_masks, out.low_res_logits, out.iou_predictions, hw)
                masks, _ = self._time(f"postprocess/{n}", record, fn)
            self.outputs["masks"][n] = masks

    def result(self, reference: dict[str, Any] | None) -> RuntimeResult:
        """Figures of the recorded rounds; ``reference``: the baseline's outputs (None: this
        is the baseline)."""
        t = self.times
        counts = self.cfg.box_counts
        ious, fps = {}, {}
        for n in counts:
            if reference is None:
                ious[n] = 1.0
            else:
                pairs = zip(self.outputs["masks"][n], reference["masks"][n], strict=True)
                ious[n] = float(np.mean([mask_iou(a, b) for a, b in pairs]))
            keys = ["preprocess", "encoder", f"decoder/{n}", f"postprocess/{n}"]
            keys += [f"refiner/{n}"] if f"refiner/{n}" in t else []
            fps[n] = float(1.0 / sum(float(np.median(t[k])) for k in keys))
        rel = 0.0
        if reference is not None:
            emb, ref_emb = self.outputs["embedding"], reference["embedding"]
            rel = float(np.abs(emb - ref_emb).max() / np.abs(ref_emb).max())
        return RuntimeResult(
            name=self.name,
            description=self.backend.describe(),
            setup_s=self.setup_s,
            preprocess=StageStats.of(t["preprocess"]),
            encoder=StageStats.of(t["encoder"]),
            decoder={n: StageStats.of(t[f"decoder/{n}"]) for n in counts},
            postprocess={n: StageStats.of(t[f"postprocess/{n}"]) for n in counts},
            rss_added_mib=self.rss_added_mib,
            embedding_rel_err=rel,
            mask_iou=ious,
            throughput_fps=fps,
            refiner={n: StageStats.of(t[f"refiner/{n}"]) for n in counts if f"refiner/{n}" in t},
            rounds=len(t["encoder"]),
        )

    def close(self) -> None:
        self.backend.close()


def candidate_runtimes(
    model: EfficientSam,
    export_dir: Path | None,
    wanted: Sequence[str] | None,
    threads: int | None = None,
    *,
    export: Export | None = None,
    build: EngineBuild | None = None,
) -> list[tuple[str, Callable[[], Backend]]]:
    """Every (name, factory) available here; the baseline first. The model is exported
    (once, cached; by ``export``, see ``registry.export_dir_for``) only when a runtime that
    reads the export is selected; ``build`` builds missing TensorRT engines."""
    import copy

    from edge_sameo.backends.registry import export_dir_for, is_available
    from edge_sameo.backends.torch_backend import TorchBackend

    def keep(name: str) -> bool:
        return not wanted or name == BASELINE or any(w in name for w in wanted)

    def torch_factory(precision: str, attention: str) -> Callable[[], Backend]:
        return lambda: TorchBackend(copy.deepcopy(model), precision, "cpu", attention)

    runs: list[tuple[str, Callable[[], Backend]]] = [
        (BASELINE, torch_factory("fp32", "explicit")),
        ("torch-sdpa fp32", torch_factory("fp32", "sdpa")),
        ("torch-sdpa bf16", torch_factory("bf16", "sdpa")),
    ]
    # (name, factory of the export folder, the file it needs beyond the fp32 graphs)
    exported: list[tuple[str, Callable[[Path], Backend], str | None]] = []
    if is_available("onnxruntime"):
        from edge_sameo.backends.onnxruntime_backend import OnnxRuntimeBackend

        for p in ("fp32", "fp16", "int8"):
            need = None if p == "fp32" else f"encoder.{p}.onnx"
            exported.append(
                (
                    f"onnxruntime {p}",
                    partial(OnnxRuntimeBackend, precision=p, threads=threads),
                    need,
                )
            )
    if is_available("openvino"):
        from edge_sameo.backends.openvino_backend import OpenVINOBackend

        for p in ("fp32", "bf16", "int8"):
            need = "encoder.int8.onnx" if p == "int8" else None
            exported.append(
                (f"openvino {p}", partial(OpenVINOBackend, precision=p, threads=threads), need)
            )
        # what auto runs where bf16 pays: a bf16 encoder, an fp32 decoder, a bf16 refiner
        mixed = OpenVINOBackend.default_options("bf16")
        exported.append(
            (
                "openvino bf16 enc + fp32 dec",
                partial(OpenVINOBackend, precision="bf16", threads=threads, **mixed),
                None,
            )
        )
    if is_available("tensorrt"):
        from edge_sameo.backends.registry import backend_class

        trt: Callable[..., Backend] = backend_class("tensorrt")
        for p in ("fp16", "int8"):
            exported.append((f"tensorrt {p}", partial(trt, precision=p, build=build), None))
    exported = [e for e in exported if keep(e[0])]
    if exported:
        directory = export_dir or export_dir_for(model, export)
        runs += [
            (name, partial(make, directory))
            for name, make, need in exported
            if need is None or (directory / need).is_file()
        ]
    return [r for r in runs if keep(r[0])]


def machine_info() -> dict[str, Any]:
    """``{"cpu": model name, "cores": os.cpu_count(), "python": version}``."""
    import os

    cpu = _cpuinfo_field("model name") or platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def _cpuinfo_field(name: str) -> str:
    """The first ``/proc/cpuinfo`` line starting with ``name``: its value ("" if none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def isa_flags() -> dict[str, bool]:
    """Which of :data:`ISA_FLAGS` the CPU reports (empty where ``/proc/cpuinfo`` has none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return {flag: flag in present for flag in ISA_FLAGS}
    return {}


def cpu_clock_ghz() -> float | None:
    """The clock the kernel reports (``cpu MHz`` of ``/proc/cpuinfo``; in a VM the host's
    nominal clock, below what turbo reaches, so a runtime may show more than 100 % of the
    peak), GHz; None where it reports none."""
    try:
        return float(_cpuinfo_field("cpu MHz")) / 1e3
    except ValueError:  # no such line
        return None


def flops_per_cycle(isa: Mapping[str, bool], vendor: str, family: int = 0) -> dict[str, int]:
    """Nominal FLOP per cycle per core (an FMA counts 2) by precision, from the ISA flags:
    AVX2 + FMA: two 256-bit FMA pipes, 32 fp32; AVX-512: 64 on Intel (two 512-bit FMA units;
    parts with one reach 32), 32 on AMD Zen 4 (512-bit instructions on 256-bit pipes), 64 on
    Zen 5 (family 26); ``avx512_bf16`` doubles the fp32 rate for bf16 dot products; AMX:
    1024 bf16 per cycle (Intel's figure for one tile unit). A nominal figure, not a
    measured one."""
    if isa.get("avx512f"):
        fp32 = 32 if vendor == "AuthenticAMD" and family < 26 else 64
    elif isa.get("avx2"):
        fp32 = 32
    else:
        fp32 = 8  # SSE: two 128-bit pipes, no FMA
    rates = {"fp32": fp32, "bf16": fp32}
    if isa.get("avx512_bf16"):
        rates["bf16"] = 2 * fp32
    if isa.get("amx_bf16"):
        rates["bf16"] = 1024
    return rates


def machine_peak(threads: int | None = None) -> dict[str, Any]:
    """The CPU's nominal peak GFLOP/s for fp32 and bf16 over ``threads`` cores (default:
    the CPUs this process may run on): cores × clock × :func:`flops_per_cycle`. The clock
    is what the kernel reports (:func:`cpu_clock_ghz`), and logical CPUs are counted as
    cores, so on a machine with SMT siblings the figure is an upper bound. Empty where the
    clock is unknown."""
    import os

    ghz = cpu_clock_ghz()
    if ghz is None:
        return {}
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    cores = min(threads, available) if threads else available
    family = _cpuinfo_field("cpu family")
    rates = flops_per_cycle(
        isa_flags(), _cpuinfo_field("vendor_id"), int(family) if family.isdigit() else 0
    )
    return {
        "ghz": round(ghz, 3),
        "cores": cores,
        "flops_per_cycle": rates,
        "gflops": {k: round(cores * ghz * v, 1) for k, v in rates.items()},
    }


#: Side of the square matrix product :func:`gemm_ceiling` times.
GEMM_SIZE = 2048


def gemm_ceiling(precisions: Sequence[str], repeats: int = 5) -> dict[str, float]:
    """Measured GFLOP/s of one :data:`GEMM_SIZE`² matrix product in torch (its vendor GEMM,
    on torch's threads; the best of ``repeats`` after one warm-up) per precision of
    ``precisions`` (fp32, bf16). The nominal peak (:func:`machine_peak`) takes the clock the
    kernel reports, which in a VM is the host's base clock, below what turbo reaches; a
    vendor GEMM is the nearest a program comes to the true peak, so a stage's share of it is
    a ceiling that a runtime cannot pass by a clock the kernel does not report."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    size = GEMM_SIZE
    out: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    for name in precisions:
        a = torch.randn(size, size, generator=gen).to(dtypes[name])
        b = torch.randn(size, size, generator=gen).to(dtypes[name])
        best = float("inf")
        with torch.inference_mode():
            for i in range(repeats + 1):
                start = time.perf_counter()
                torch.mm(a, b)
                if i:  # the first is the warm-up
                    best = min(best, time.perf_counter() - start)
        out[name] = round(2 * size**3 / best / 1e9, 1)
    return out


def stage_flops(
    backend: Backend, image: NDArray[np.uint8], box_counts: Sequence[int], seed: int
) -> dict[str, float]:
    """FLOP of the encoder and of the decoder per box count, counted by torch's
    ``FlopCounterMode`` on a torch ``backend`` (matrix products and convolutions; the
    element-wise rest is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    def count(fn: Callable[[], Any]) -> tuple[float, Any]:
        with FlopCounterMode(display=False) as counter:
            out = fn()
        return float(counter.get_total_flops()), out

    h, w = image.shape[:2]
    s = backend.img_size
    scale = np.array([s / w, s / h, s / w, s / h], np.float32)
    flops: dict[str, float] = {}
    flops["encoder"], emb = count(partial(backend.encode, resize_pixels(image, s)))
    for n in box_counts:
        boxes = bench_boxes((h, w), n, seed) * scale
        flops[f"decoder/{n}"], _ = count(partial(backend.decode, emb, boxes))
    return flops


def vs_peers(result: RuntimeResult, peers: Sequence[Any]) -> dict[str, dict[int, float]]:
    """Per peer and box count: the peer's frame p50 over this runtime's (preprocess +
    encoder + decoder + refiner + postprocess p50s), > 1 where this runtime is faster."""
    out = {}
    for peer in peers:
        out[peer.name] = {
            n: float(np.median(peer.times[f"frame/{n}"])) * result.throughput_fps[n]
            for n in result.throughput_fps
        }
    return out


def efficiency(
    result: RuntimeResult, flops: Mapping[str, float], peak: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Achieved GFLOP/s of the encoder and each decoder row at p50, and its share of the
    peak of the precision the stage runs in (bf16 where the runtime's name says so)."""
    name = result.name
    # int8 and fp16 runtimes get GFLOP/s but no share: the peak of their kernels is another.
    enc_prec = "bf16" if "bf16" in name else "fp32" if "fp32" in name else None
    dec_prec = "fp32" if "fp32 dec" in name else enc_prec
    rows = {"encoder": (result.encoder, enc_prec)}
    rows |= {f"decoder/{n}": (st, dec_prec) for n, st in result.decoder.items()}
    out: dict[str, dict[str, Any]] = {}
    for key, (stats, prec) in rows.items():
        if key not in flops or stats.p50_ms <= 0:
            continue
        gflops = flops[key] / (stats.p50_ms * 1e6)
        top = peak.get("gflops", {}).get(prec) if prec else None
        share = 100 * gflops / top if top else None
        gemm = peak.get("gemm", {}).get(prec) if prec else None
        out[key] = {
            "gflops": gflops,
            "pct_of_peak": share,
            "pct_of_gemm": 100 * gflops / gemm if gemm else None,
            "peak": prec,
        }
    return out


def machine_report() -> dict[str, Any]:
    """:func:`machine_info` plus the torch version and its thread count."""
    import torch

    return {**machine_info(), "torch": torch.__version__, "threads": torch.get_num_threads()}


def run_bench(
    model: EfficientSam,
    image: NDArray[np.uint8],
    cfg: BenchConfig,
    export_dir: Path | None = None,
    wanted: Sequence[str] | None = None,
    progress: Callable[[str], None] = print,
    threads: int | None = None,
    peers: Sequence[str] = (),
    *,
    export: Export | None = None,
    build: EngineBuild | None = None,
) -> dict[str, Any]:
    """Benchmark every runtime (``threads``: one count for torch, ONNX Runtime and
    OpenVINO alike, so the comparison stays fair on a shared machine) and the ``peers``
    (:mod:`edge_sameo.bench_peers`) in the same rounds; ``export`` and ``build`` as in
    :func:`candidate_runtimes`."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    runtimes: list[_Runtime] = []

    def failed(rt_name: str, exc: Exception) -> None:
        # One runtime failing must not lose the others' figures.
        progress(f"  {rt_name} failed: {type(exc).__name__}: {exc}")

    for name, make in candidate_runtimes(
        model, export_dir, wanted, threads, export=export, build=build
    ):
        progress(f"setting up {name} ...")
        try:
            runtimes.append(_Runtime(name, make, image, cfg))
        except Exception as exc:
            failed(name, exc)
    from edge_sameo.bench_peers import make_peer

    others: list[Any] = []
    torch_threads = torch.get_num_threads()
    for peer in peers:
        progress(f"setting up {peer} ...")
        try:
            boxes = {n: bench_boxes(image.shape[:2], n, cfg.seed) for n in cfg.box_counts}
            others.append(make_peer(peer, image, boxes))
        except Exception as exc:
            failed(peer, exc)
        finally:
            # ultralytics' device set-up leaves torch one thread fewer than the cores (one
            # of two here): the peer and the torch runtimes must run on the same threads.
            torch.set_num_threads(torch_threads)
    flops: dict[str, float] = {}
    if runtimes and runtimes[0].name == BASELINE:
        try:
            flops = stage_flops(runtimes[0].backend, image, cfg.box_counts, cfg.seed)
        except Exception as exc:  # the FLOP figures are extras: never the run's end
            failed("FLOP count", exc)
    # Round-robin: every runtime's k-th iteration falls in the same stretch of time, so
    # the machine's drift and other load fall on all of them alike; the order turns each
    # round so that no runtime always follows the same one.
    for k in range(cfg.iters - (cfg.warmup == 0)):
        progress(f"round {k + 1 + (cfg.warmup == 0)} of {cfg.iters}")
        timed = runtimes + others
        turn = k % max(len(timed), 1)
        for rt in timed[turn:] + timed[:turn]:
            try:
                rt.round()
            except Exception as exc:
                failed(rt.name, exc)
                (runtimes if rt in runtimes else others).remove(rt)
                rt.close()
    if cfg.warmup == 0:
        for peer in list(others):  # its set-up pass was not recorded: one more round
            try:
                peer.round()
            except Exception as exc:
                failed(peer.name, exc)
                others.remove(peer)
    results: list[RuntimeResult] = []
    reference: dict[str, Any] | None = None
    for rt in runtimes:
        results.append(rt.result(reference))
        if rt.name == BASELINE:
            reference = rt.outputs
        rt.close()
    for peer in others:
        peer.close()
    if not results or results[0].name != BASELINE:
        raise InputError(f"the baseline ({BASELINE}) failed, so there is nothing to compare with")
    base = results[0]
    peak = machine_peak(threads)
    if peak:
        # fp32, and bf16 where the CPU multiplies it natively (a faster nominal rate);
        # elsewhere torch emulates bf16. On torch's threads: `threads` when given.
        rates = peak["flops_per_cycle"]
        native = [p for p in ("fp32", "bf16") if p == "fp32" or rates[p] > rates["fp32"]]
        peak["gemm"] = gemm_ceiling(native)
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
        "machine": {**machine_report(), "isa": isa_flags()},
        "model": model.config.name,
        "image_hw": list(image.shape[:2]),
        "config": asdict(cfg),
        "baseline": BASELINE,
        "results": [asdict(r) for r in results],
        "speedup_vs_baseline": ratios,
        "flops": flops,
        "peak": peak,
        "efficiency": {r.name: efficiency(r, flops, peak) for r in results},
        "peers": [peer.report() for peer in others],
        "vs_peers": {r.name: vs_peers(r, others) for r in results},
    }


def _cell(stats: Mapping[str, float], digits: int = 1) -> str:
    """``p50 (IQR %)`` of a stage."""
    return f"{stats['p50_ms']:.{digits}f} ({stats.get('spread_pct', 0.0):.0f} %)"


def markdown_table(report: dict[str, Any]) -> str:
    """One row per runtime, p50 ms with the interquartile range in % of it. With a refiner
    each decoder cell reads ``decoder + refiner`` (p50 ms of ``decode`` and of ``refine``
    for the same N boxes)."""
    counts = report["config"]["box_counts"]
    refined = any(r.get("refiner") for r in report["results"])
    stage = "decoder + refiner" if refined else "decoder"
    head = (
        "| runtime | encoder p50 ms (IQR) | "
        + " | ".join(f"{stage} N={n} p50 ms" for n in counts)
        + " | enc × | "
        + " | ".join(f"dec{n} ×" for n in counts)
        + f" | mask IoU (N={counts[-1]}) | emb rel err | FPS (N={counts[-1]}) | RSS added MiB"
        + f" | enc GFLOP/s (% peak, % GEMM) | dec{counts[-1]} GFLOP/s (% peak, % GEMM) |"
    )
    sep = "|" + "---|" * (head.count("|") - 1)
    rows = [head, sep]
    for r in report["results"]:
        ratio = report["speedup_vs_baseline"][r["name"]]
        eff = report.get("efficiency", {}).get(r["name"], {})
        last = str(counts[-1]) if str(counts[-1]) in r["decoder"] else counts[-1]
        cells = []
        for k in r["decoder"]:
            cell = _cell(r["decoder"][k])
            if r.get("refiner"):
                cell += " + " + _cell(r["refiner"][k])
            cells.append(cell)
        rows.append(
            f"| {r['name']} | {_cell(r['encoder'], 0)} | "
            + " | ".join(cells)
            + f" | {ratio['encoder']:.1f} | "
            + " | ".join(f"{ratio[f'decoder_{n}']:.1f}" for n in counts)
            + f" | {r['mask_iou'][last]:.3f} | {r['embedding_rel_err']:.1e}"
            + f" | {r['throughput_fps'][last]:.2f} | {r['rss_added_mib']:.0f}"
            + f" | {_gflops(eff.get('encoder'))} | {_gflops(eff.get(f'decoder/{counts[-1]}'))} |"
        )
    return "\n".join(rows) + _peak_line(report.get("peak", {})) + _peer_table(report)


def _peer_table(report: dict[str, Any]) -> str:
    """Frame p50 of each peer, and each runtime's speed-up over it (its frame p50 over
    ours) per box count."""
    peers = report.get("peers") or []
    if not peers:
        return ""
    counts = report["config"]["box_counts"]
    lines = ["", ""]
    for peer in peers:
        frames = ", ".join(f"N={n} {peer['stages'][f'frame/{n}']['p50_ms']:.0f} ms" for n in counts)
        lines.append(f"peer {peer['name']}: frame p50 {frames} (set-up {peer['setup_s']:.1f} s)")
    names = [peer["name"] for peer in peers]
    head = "| runtime | " + " | ".join(f"× {m} N={n}" for m in names for n in counts) + " |"
    lines += ["", head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["results"]:
        ratio = report["vs_peers"][r["name"]]
        cells = [f"{ratio[m][n]:.2f}" for m in names for n in counts]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gflops(e: Mapping[str, Any] | None) -> str:
    if not e:
        return "–"
    if e.get("pct_of_peak") is None:
        return f"{e['gflops']:.1f}"
    gemm = f", {e['pct_of_gemm']:.0f} % GEMM" if e.get("pct_of_gemm") is not None else ""
    return f"{e['gflops']:.1f} ({e['pct_of_peak']:.0f} % {e['peak']}{gemm})"


def _peak_line(peak: Mapping[str, Any]) -> str:
    if not peak:
        return ""
    g = peak["gflops"]
    return (
        f"\n\npeak: {peak['cores']} cores × {peak['ghz']:.2f} GHz × FLOP/cycle "
        f"{peak['flops_per_cycle']} = fp32 {g['fp32']:.0f}, bf16 {g['bf16']:.0f} GFLOP/s"
        + _gemm_note(peak)
    )


def _gemm_note(peak: Mapping[str, Any]) -> str:
    """The measured GEMM ceiling (:func:`gemm_ceiling`) and, where it passes the nominal
    peak, the clock it implies."""
    gemm = peak.get("gemm")
    if not gemm:
        return ""
    rates = ", ".join(f"{k} {v:.0f}" for k, v in gemm.items())
    note = f"; measured GEMM (torch, {GEMM_SIZE}²): {rates} GFLOP/s"
    fp32 = gemm.get("fp32", 0.0)
    if fp32 > peak["gflops"]["fp32"]:
        ghz = fp32 / (peak["cores"] * peak["flops_per_cycle"]["fp32"])
        note += f" (the cores run at ≥ {ghz:.2f} GHz: the reported clock is not the turbo clock)"
    return note


def plot(report: dict[str, Any], path: Path) -> None:
    """A horizontal bar chart of p50 latencies (encoder, decoder per N, refiner
    stacked) per runtime of ``report``, log scale, saved to ``path``."""
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


#: Files :func:`write_report` and :func:`write_compare` write into their folder.
REPORT_FILES = ("bench.json", "bench.md", "bench.png")
COMPARE_FILES = ("compare.json", "compare.md")


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``bench.json``, ``bench.md`` (the table) and ``bench.png`` (:func:`plot`)
    of ``report`` into ``out_dir``; return their paths."""
    from edge_sameo.io import atomic_write_bytes, atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    md = markdown_table(report)
    paths = [out_dir / name for name in REPORT_FILES]
    atomic_write_json(paths[0], json.loads(json.dumps(report)))
    atomic_write_bytes(paths[1], (md + "\n").encode())
    plot(report, paths[2])
    return paths


@dataclass
class FrameStats:
    """One model's frames on one runtime. ``frame``: wall time of ``set_image`` +
    ``predict`` of N boxes; ``compute``: encoder + decoder + refiner (``Prediction.speed``)
    summed per frame; ``stages``: p50 ms of each of :data:`FRAME_STAGES`."""

    frame: StageStats
    compute: StageStats
    stages: dict[str, float]

    @staticmethod
    def of(frames: Sequence[tuple[float, Mapping[str, float]]]) -> FrameStats:
        """From (seconds, ``Prediction.speed`` in ms) per frame."""
        speeds = [speed for _, speed in frames]
        compute_s = [sum(sp.get(k, 0.0) for k in COMPUTE_STAGES) / 1e3 for sp in speeds]
        return FrameStats(
            frame=StageStats.of([t for t, _ in frames]),
            compute=StageStats.of(compute_s),
            stages={
                k: float(np.percentile([sp.get(k, 0.0) for sp in speeds], 50)) for k in FRAME_STAGES
            },
        )


@dataclass
class PairResult:
    """Both models on one runtime, per box count N: their frames, and model / baseline
    ratios of the p50 frame time (``frame_ratio``) and of the p50 encoder + decoder +
    refiner time (``compute_ratio``); above 1 means the model costs more."""

    name: str
    description: str
    model: dict[int, FrameStats]
    baseline: dict[int, FrameStats]
    frame_ratio: dict[int, float]
    compute_ratio: dict[int, float]


def timed_frame(
    predictor: AmodalPredictor, image: NDArray[np.uint8], boxes: NDArray[np.float32]
) -> tuple[float, dict[str, float]]:
    """One frame of the segmenter's work: seconds of ``set_image(image)`` + ``predict(boxes)``
    ((N, 4) float32 XYXY image pixels), and the prediction's per-stage ms."""
    t0 = time.perf_counter()
    predictor.set_image(image)
    prediction = predictor.predict(boxes)
    return time.perf_counter() - t0, prediction.speed


def interleaved_frames(
    predictors: Sequence[AmodalPredictor],
    image: NDArray[np.uint8],
    boxes: NDArray[np.float32],
    iters: int,
    warmup: int,
) -> list[list[tuple[float, dict[str, float]]]]:
    """``iters`` timed frames per predictor after ``warmup`` untimed ones, the predictors
    taking turns (A, B, A, B, ...) so that drift and noise of the machine fall on all alike."""
    for _ in range(warmup):
        for predictor in predictors:
            timed_frame(predictor, image, boxes)
    frames: list[list[tuple[float, dict[str, float]]]] = [[] for _ in predictors]
    for _ in range(iters):
        for predictor, out in zip(predictors, frames, strict=True):
            out.append(timed_frame(predictor, image, boxes))
    return frames


def compare_backends(
    name: str,
    make_model: Callable[[], Backend],
    make_baseline: Callable[[], Backend],
    image: NDArray[np.uint8],
    cfg: BenchConfig,
) -> PairResult:
    """Time both models' frames on one runtime, interleaved, for every box count of ``cfg``."""
    backends: list[Backend] = []
    try:
        for make in (make_model, make_baseline):
            backends.append(make())
        predictors = [AmodalPredictor(b) for b in backends]
        ours: dict[int, FrameStats] = {}
        theirs: dict[int, FrameStats] = {}
        for n in cfg.box_counts:
            boxes = bench_boxes(image.shape[:2], n, cfg.seed)
            a, b = interleaved_frames(predictors, image, boxes, cfg.iters, cfg.warmup)
            ours[n], theirs[n] = FrameStats.of(a), FrameStats.of(b)
        return PairResult(
            name=name,
            description=backends[0].describe(),
            model=ours,
            baseline=theirs,
            frame_ratio={n: ours[n].frame.p50_ms / theirs[n].frame.p50_ms for n in ours},
            compute_ratio={n: ours[n].compute.p50_ms / theirs[n].compute.p50_ms for n in ours},
        )
    finally:
        for backend in backends:
            backend.close()


def model_summary(model: EfficientSam, label: str) -> dict[str, Any]:
    """How a compared model is named in the report: label, config name and whether it
    has a modal decoder and a refiner."""
    return {
        "label": label,
        "config": model.config.name,
        "modal_decoder": model.modal_decoder is not None,
        "refiner": model.refiner is not None,
    }


def run_compare(
    model: EfficientSam,
    baseline: EfficientSam,
    image: NDArray[np.uint8],
    cfg: BenchConfig,
    export_dir: Path | None = None,
    wanted: Sequence[str] | None = None,
    progress: Callable[[str], None] = print,
    threads: int | None = None,
    labels: tuple[str, str] = ("model", "baseline"),
    *,
    export: Export | None = None,
    build: EngineBuild | None = None,
) -> dict[str, Any]:
    """``model`` against ``baseline`` on every runtime both run here (``wanted``: substrings
    of the runtime names to keep; ``export_dir``: ``model``'s export folder, the baseline is
    exported on demand by ``export``; ``threads`` as in :func:`run_bench`, ``build`` as in
    :func:`candidate_runtimes`)."""
    import torch

    from edge_sameo.errors import InputError

    if threads:
        torch.set_num_threads(threads)
    made = partial(candidate_runtimes, wanted=wanted, threads=threads, export=export, build=build)
    ours, theirs = dict(made(model, export_dir)), dict(made(baseline, None))
    # Unlike run_bench, no runtime is kept for mask agreement: only the ones asked for.
    names = [n for n in ours if n in theirs and (not wanted or any(w in n for w in wanted))]
    if not names:
        raise InputError(f"no runtime available here matches {', '.join(wanted or [])}")
    results: list[PairResult] = []
    failed: dict[str, str] = {}
    for name in names:
        progress(f"comparing on {name} ...")
        try:
            results.append(compare_backends(name, ours[name], theirs[name], image, cfg))
        except Exception as exc:  # one runtime failing must not lose the others' figures
            failed[name] = f"{type(exc).__name__}: {exc}"
            progress(f"  {name} failed: {failed[name]}")
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine_report(), "isa": isa_flags()},
        "model": model_summary(model, labels[0]),
        "baseline": model_summary(baseline, labels[1]),
        "image_hw": list(image.shape[:2]),
        "config": asdict(cfg),
        "results": [asdict(r) for r in results],
        "failed": failed,
    }


def compare_table(report: dict[str, Any]) -> str:
    """One row per runtime and box count: p50/p95 frame ms of each model, their per-stage
    p50 ms (encoder / decoder / refiner / postprocess) and the model / baseline ratios."""
    stages = ("encoder", "decoder", "refiner", "postprocess")
    rows = [
        "| runtime | N | model frame p50/p95 ms | baseline frame p50/p95 ms | frame × "
        "| model enc / dec / ref / post ms | baseline enc / dec / ref / post ms "
        "| enc+dec+ref × |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        for n, ours in r["model"].items():
            theirs = r["baseline"][n]
            frames = [
                f"{s['frame']['p50_ms']:.1f} / {s['frame']['p95_ms']:.1f}" for s in (ours, theirs)
            ]
            split = [" / ".join(f"{s['stages'][k]:.1f}" for k in stages) for s in (ours, theirs)]
            rows.append(
                f"| {r['name']} | {n} | {frames[0]} | {frames[1]} | {r['frame_ratio'][n]:.2f} "
                f"| {split[0]} | {split[1]} | {r['compute_ratio'][n]:.2f} |"
            )
    return "\n".join(rows)


def write_compare(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """``compare.json`` (the whole report) and ``compare.md`` (its table) in ``out_dir``."""
    from edge_sameo.io import atomic_write_bytes, atomic_write_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in COMPARE_FILES]
    atomic_write_json(paths[0], json.loads(json.dumps(report)))
    atomic_write_bytes(paths[1], (compare_table(report) + "\n").encode())
    return paths
