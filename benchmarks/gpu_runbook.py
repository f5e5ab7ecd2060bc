"""GPU runbook: parity and latency of torch CUDA fp32/fp16 and TensorRT fp16/int8.

    python benchmarks/gpu_runbook.py [--config vitt] [--checkpoint PATH] [--boxes 8]
                                     [--warmup 10] [--iters 50] [--work-dir DIR]
                                     [--json runbook.json] [--no-trt]

Reference: torch fp32 on the CPU (ONNX Runtime CPU fp32 for the TensorRT rows, the same
graphs TensorRT builds). Each row: embedding relative error (max |a-b| / max |b|), IoU of
the low-res masks (logits > 0, all N×3 candidates: mean and min), encoder and decoder
latency (median ms; CUDA events around the GPU work for torch, wall clock around the
backend call — host copies included — for TensorRT). Without a GPU (or without
TensorRT) those rows say "skipped" and why; the script still exits 0. It exits 1 only
when a step that could run failed. Weights are the seeded reference weights unless
``--checkpoint`` is given: their masks mean nothing, but parity and latency do.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from edge_sameo import build_model, load_model
from edge_sameo.contract import BOXES, IMAGE_EMBEDDINGS, LOW_RES_LOGITS, PIXELS
from edge_sameo.modeling import EfficientSam
from edge_sameo.preprocess import normalize_resized, resize_pixels
from edge_sameo.seeded import manifest_of, reference_image, seeded_state_dict

Outputs = dict[str, NDArray[np.float32]]


@dataclass
class Row:
    runtime: str
    precision: str
    status: str = "ok"
    emb_rel_err: float | None = None
    mask_iou_mean: float | None = None
    mask_iou_min: float | None = None
    encoder_ms: float | None = None
    decoder_ms: float | None = None
    notes: list[str] = field(default_factory=list)


def rel_err(a: NDArray[Any], b: NDArray[Any]) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def mask_ious(logits: NDArray[Any], ref: NDArray[Any]) -> tuple[float, float]:
    """Mean and min IoU of ``logits > 0`` vs ``ref > 0`` over every (box, candidate)."""
    a = (logits > 0).reshape(-1, logits.shape[-2] * logits.shape[-1])
    b = (ref > 0).reshape(a.shape)
    inter, union = (a & b).sum(1), (a | b).sum(1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return float(iou.mean()), float(iou.min())


def compare(row: Row, got: Outputs, ref: Outputs) -> None:
    row.emb_rel_err = rel_err(got[IMAGE_EMBEDDINGS], ref[IMAGE_EMBEDDINGS])
    row.mask_iou_mean, row.mask_iou_min = mask_ious(got[LOW_RES_LOGITS], ref[LOW_RES_LOGITS])


def median_ms(fn: Callable[[], object], warmup: int, iters: int, cuda: bool) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def load(args: argparse.Namespace) -> EfficientSam:
    if args.checkpoint:
        return load_model(args.checkpoint)
    model = build_model(args.config)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=0))
    return model.eval()


def make_inputs(model: EfficientSam, n: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Pixels (1, 3, S, S) of a 720×1280 synthetic frame and ``n`` boxes (S×S frame)."""
    s = model.config.img_size
    pixels = resize_pixels(reference_image(720, 1280, seed=7), s)
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, s * 0.6, (n, 2))
    wh = rng.uniform(s * 0.1, s * 0.4, (n, 2))
    return pixels, np.concatenate([xy, xy + wh], 1).astype(np.float32)


def torch_run(
    model: EfficientSam,
    pixels: NDArray[np.float32],
    boxes: NDArray[np.float32],
    device: str,
    dtype: torch.dtype,
) -> tuple[Outputs, Callable[[], object], Callable[[], object]]:
    """Outputs (as float32 numpy) and the encoder / decoder calls to time."""
    m = model.to(device=device, dtype=dtype)
    s = model.config.img_size
    x = normalize_resized(torch.from_numpy(pixels).to(device), s).to(dtype)
    b = torch.from_numpy(boxes).to(device)
    with torch.inference_mode():
        emb = m.encode(x)
        logits, _ = m.decode_boxes(emb, b.to(dtype))

    def encode() -> object:
        with torch.inference_mode():
            return m.encode(x)

    def decode() -> object:
        with torch.inference_mode():
            return m.decode_boxes(emb, b.to(dtype))

    out = {
        IMAGE_EMBEDDINGS: emb.float().cpu().numpy(),
        LOW_RES_LOGITS: logits.float().cpu().numpy(),
    }
    return out, encode, decode


def tensorrt_rows(
    args: argparse.Namespace,
    model: EfficientSam,
    pixels: NDArray[np.float32],
    boxes: NDArray[np.float32],
    export_dir: Path,
    ort_ref: Outputs,
    ort_encode: Callable[[NDArray[np.float32]], NDArray[np.float32]],
) -> list[Row]:
    from edge_sameo.backends.tensorrt_backend import TensorRTBackend
    from edge_sameo.backends.tensorrt_loader import load_tensorrt
    from edge_sameo.engines.tensorrt_build import build_for_runtime
    from edge_sameo.errors import EdgeSameoError

    try:
        trt = load_tensorrt()
    except EdgeSameoError as exc:
        return [Row("tensorrt", p, f"skipped: {exc}") for p in ("fp16", "int8")]
    rows = []
    for precision in ("fp16", "int8"):
        row = Row("tensorrt", precision, notes=[f"TensorRT {trt.__version__}"])
        options: dict[str, Any] = {}
        if precision == "int8":
            # Legacy calibration feeds (flags route); calib/'s Q/DQ graph, when present in
            # the export folder, takes precedence in the builder's plan.
            images = [reference_image(720, 1280, seed=i) for i in range(8)]
            enc_feeds = [{PIXELS: resize_pixels(im, model.config.img_size)} for im in images]
            dec_feeds = [{IMAGE_EMBEDDINGS: ort_encode(f[PIXELS]), BOXES: boxes} for f in enc_feeds]
            options["calibration_feeds"] = {"encoder": enc_feeds, "decoder": dec_feeds}
            options["calib_cache"] = Path(args.work_dir or export_dir) / "calib"
        try:
            backend = TensorRTBackend(export_dir, precision, build=build_for_runtime, **options)
        except EdgeSameoError as exc:
            row.status = f"skipped: {exc}"
            rows.append(row)
            continue
        except Exception as exc:  # a runbook reports, it does not stop
            row.status = f"error: {type(exc).__name__}: {exc}"
            rows.append(row)
            continue
        emb = backend.encode(pixels)
        out = backend.decode(emb, boxes)
        compare(row, {IMAGE_EMBEDDINGS: emb, LOW_RES_LOGITS: out.low_res_logits}, ort_ref)
        row.encoder_ms = median_ms(partial(backend.encode, pixels), args.warmup, args.iters, False)
        decode = partial(backend.decode, emb, boxes)
        row.decoder_ms = median_ms(decode, args.warmup, args.iters, False)
        row.notes.append(backend.describe())
        backend.close()
        rows.append(row)
    return rows


def ort_sessions(export_dir: Path) -> tuple[Any, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    cpu = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(str(export_dir / "encoder.onnx"), opts, providers=cpu)
    dec = ort.InferenceSession(str(export_dir / "decoder.onnx"), opts, providers=cpu)
    return enc, dec


def ort_outputs(
    enc: Any, dec: Any, pixels: NDArray[np.float32], boxes: NDArray[np.float32]
) -> tuple[Outputs, Callable[[], object], Callable[[], object]]:
    (emb,) = enc.run([IMAGE_EMBEDDINGS], {PIXELS: pixels})
    (logits,) = dec.run([LOW_RES_LOGITS], {IMAGE_EMBEDDINGS: emb, BOXES: boxes})
    return (
        {IMAGE_EMBEDDINGS: emb, LOW_RES_LOGITS: logits},
        lambda: enc.run(None, {PIXELS: pixels}),
        lambda: dec.run(None, {IMAGE_EMBEDDINGS: emb, BOXES: boxes}),
    )


def trt_status() -> str:
    from edge_sameo.backends.tensorrt_loader import load_tensorrt
    from edge_sameo.errors import EdgeSameoError

    try:
        return f"TensorRT {load_tensorrt().__version__} installed"
    except EdgeSameoError as exc:
        return str(exc)


def fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown(rows: list[Row]) -> str:
    cols: tuple[str, ...] = (
        "runtime",
        "precision",
        "emb rel err",
        "mask IoU mean / min",
        "encoder ms",
    )
    cols += ("decoder ms", "status")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        iou = "–" if r.mask_iou_mean is None else f"{r.mask_iou_mean:.4f} / {r.mask_iou_min:.4f}"
        lines.append(
            f"| {r.runtime} | {r.precision} | {fmt(r.emb_rel_err, '.2e')} | {iou} | "
            f"{fmt(r.encoder_ms, '.2f')} | {fmt(r.decoder_ms, '.2f')} | {r.status} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    from edge_sameo.engines.export import ExportConfig, export_onnx

    torch.manual_seed(0)
    model = load(args)
    pixels, boxes = make_inputs(model, args.boxes)
    rows: list[Row] = []
    cpu = Row("torch cpu", "fp32", notes=["reference"])
    ref, enc, dec = torch_run(model, pixels, boxes, "cpu", torch.float32)
    compare(cpu, ref, ref)
    cpu.encoder_ms = median_ms(enc, min(args.warmup, 2), min(args.iters, 5), False)
    cpu.decoder_ms = median_ms(dec, min(args.warmup, 2), min(args.iters, 5), False)
    rows.append(cpu)

    gpu = torch.cuda.is_available()
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        row = Row("torch cuda", precision)
        if not gpu:
            row.status = "skipped: no CUDA GPU"
        else:
            try:
                out, enc, dec = torch_run(model, pixels, boxes, "cuda", dtype)
                compare(row, out, ref)
                row.encoder_ms = median_ms(enc, args.warmup, args.iters, True)
                row.decoder_ms = median_ms(dec, args.warmup, args.iters, True)
            except Exception as exc:
                row.status = f"error: {type(exc).__name__}: {exc}"
        rows.append(row)
    model.to(device="cpu", dtype=torch.float32)

    with tempfile.TemporaryDirectory() as tmp:
        export_dir = Path(args.work_dir) if args.work_dir else Path(tmp)
        export_onnx(
            model, ExportConfig(out_dir=export_dir, max_boxes=max(64, args.boxes), check=False)
        )
        enc_session, dec_session = ort_sessions(export_dir)
        ort_ref, enc, dec = ort_outputs(enc_session, dec_session, pixels, boxes)
        row = Row("onnxruntime cpu", "fp32", notes=["reference of the TensorRT rows"])
        compare(row, ort_ref, ref)
        row.encoder_ms = median_ms(enc, min(args.warmup, 2), min(args.iters, 5), False)
        row.decoder_ms = median_ms(dec, min(args.warmup, 2), min(args.iters, 5), False)
        rows.append(row)
        if args.no_trt:
            rows += [Row("tensorrt", p, "skipped: --no-trt") for p in ("fp16", "int8")]
        elif not gpu:
            why = f"skipped: no CUDA GPU ({trt_status()})"
            rows += [Row("tensorrt", p, why) for p in ("fp16", "int8")]
        else:

            def ort_encode(x: NDArray[np.float32]) -> NDArray[np.float32]:
                return np.asarray(enc_session.run([IMAGE_EMBEDDINGS], {PIXELS: x})[0])

            rows += tensorrt_rows(args, model, pixels, boxes, export_dir, ort_ref, ort_encode)

    env = {
        "device": torch.cuda.get_device_name(0)
        if gpu
        else f"CPU ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "config": model.config.name,
        "weights": str(args.checkpoint) if args.checkpoint else "seeded (seed 0)",
        "boxes": args.boxes,
        "warmup": args.warmup,
        "iters": args.iters,
    }
    return rows, env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--config", default="vitt", help="model config (vitt, vits, tiny)")
    p.add_argument("--checkpoint", type=Path, help="checkpoint instead of seeded weights")
    p.add_argument("--boxes", type=int, default=8)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--work-dir", type=Path, help="keep the export and engines here")
    p.add_argument("--json", type=Path, default=Path("out/gpu_runbook.json"))
    p.add_argument("--no-trt", action="store_true", help="skip the TensorRT rows")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from edge_sameo.io import atomic_write_json

    args = parse_args(argv)
    rows, env = run(args)
    print(f"device: {env['device']} · torch {env['torch']} · {env['config']} · {env['weights']}")
    print(markdown(rows))
    skipped = [
        f"{r.runtime} {r.precision}: {r.status.removeprefix('skipped: ')}"
        for r in rows
        if r.status.startswith("skipped")
    ]
    if skipped:
        print("skipped:\n  " + "\n  ".join(skipped))
    atomic_write_json(args.json, {"env": env, "rows": [asdict(r) for r in rows]})
    print(f"wrote {args.json}")
    return 1 if any(r.status.startswith("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
