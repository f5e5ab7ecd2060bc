"""Does int8 pay on this CPU? The ViT encoder at full size on ONNX Runtime and OpenVINO.

Variants of the *encoder* graph (the decoder is ~1 % of a frame): ORT fp32; ORT int8 in
several recipes (TensorRT's Q/DQ with and without the attention MatMuls, per-tensor
weights, uint8 activations, reduce_range, QOperator, dynamic quantization); OpenVINO
fp32, bf16 and int8 (OpenVINO reading the Q/DQ graphs). For each: median ms/frame at a
fixed thread count and the embedding's relative L2 error against ORT fp32 on a held-out
image. Seeded weights are fine for speed; calibration uses a few synthetic scenes.

    .venv/bin/python benchmarks/int8_cpu.py --threads 2 --iters 3 --json int8_cpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from edge_sameo.calib.batcher import BatcherConfig, ImageBatcher
from edge_sameo.calib.qdq import QdqConfig, quantize_graph
from edge_sameo.calib.report import rel_l2
from edge_sameo.contract import IMAGE_EMBEDDINGS, PIXELS, ExportContract

Runner = Callable[[NDArray[np.float32]], NDArray[np.float32]]


@dataclass(frozen=True)
class Result:
    name: str
    runtime: str
    ms_median: float
    ms_all: tuple[float, ...]
    rel_err: float
    build_s: float
    peak_rss_mb: int
    note: str = ""


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux; no-op elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> int:
    """Peak RSS since the last reset, MB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def export_vitt(out: Path) -> None:
    """Seeded ViT-Ti at 1024 px -> encoder.onnx/decoder.onnx/contract.json in ``out``."""
    from edge_sameo import build_model
    from edge_sameo.engines.export import ExportConfig, export_onnx
    from edge_sameo.seeded import manifest_of, seeded_state_dict

    model = build_model("vitt")
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=0))
    export_onnx(model, ExportConfig(out_dir=out, check=False))


def ort_runner(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(x: NDArray[np.float32]) -> NDArray[np.float32]:
        out: NDArray[np.float32] = sess.run([IMAGE_EMBEDDINGS], {PIXELS: x})[0]
        return out

    return run


def ov_runner(path: Path, threads: int, precision: str) -> Runner:
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": precision,
    }
    compiled = core.compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()

    def run(x: NDArray[np.float32]) -> NDArray[np.float32]:
        request.infer({PIXELS: x})
        return np.asarray(request.get_output_tensor(0).data).copy()

    return run


def timed(run: Runner, x: NDArray[np.float32], iters: int) -> tuple[list[float], NDArray[Any]]:
    out = run(x)  # warm-up (kernel selection, first-touch allocations)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return times, out


def measure(
    runtime: str, path: Path, threads: int, precision: str, x: NDArray[np.float32], iters: int
) -> tuple[list[float], NDArray[Any], int]:
    """Runs in a child process: (times ms, embedding, peak RSS MB)."""
    reset_peak_rss()
    run = ort_runner(path, threads) if runtime == "ort" else ov_runner(path, threads, precision)
    times, out = timed(run, x, iters)
    return times, out, peak_rss_mb()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", type=Path, help="export folder (default: export seeded vitt)")
    ap.add_argument("--work", type=Path, help="where variants are written (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--calib", type=int, default=4, help="calibration images")
    ap.add_argument("--reuse", action="store_true", help="reuse variants found in --work")
    ap.add_argument("--only", nargs="*", help="run only these variant names")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="edge-sameo-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    src_dir = args.onnx or work / "vitt"
    if not (src_dir / "contract.json").is_file():
        print(f"exporting seeded vitt to {src_dir} ...", flush=True)
        export_vitt(src_dir)
    contract = ExportContract.read(src_dir)
    enc = src_dir / contract.encoder.file
    s = contract.model.img_size
    data = BatcherConfig(source="synthetic", count=args.calib, seed=0, progress=False)
    batcher = ImageBatcher(data, s)
    feeds = list(batcher.encoder_feeds())
    held_out = next(iter(batcher.held_out(1).encoder_feeds()))[PIXELS]

    def qdq(name: str, **kw: Any) -> Callable[[], Path]:
        def build() -> Path:
            dst = work / f"encoder.{name}.onnx"
            if args.reuse and dst.is_file():
                return dst
            quantize_graph(enc, dst, feeds, QdqConfig(**kw))
            return dst

        return build

    def dynamic() -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        dst = work / "encoder.dynamic.onnx"
        if args.reuse and dst.is_file():
            return dst
        quantize_dynamic(
            str(enc),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        return dst

    linear = {"quantize_attention": False}
    builders: dict[str, Callable[[], Path]] = {
        "qdq_s8s8_all": qdq("qdq_s8s8_all", quantize_attention=True),
        "qdq_s8s8_linear": qdq("qdq_s8s8_linear", **linear),
        "qdq_s8s8_linear_pertensor": qdq("qdq_s8s8_linear_pt", per_channel=False, **linear),
        "qdq_u8s8_linear": qdq(
            "qdq_u8s8_linear", activation_type="uint8", symmetric_activations=False, **linear
        ),
        "qdq_u8s8_linear_rr": qdq(
            "qdq_u8s8_linear_rr",
            activation_type="uint8",
            symmetric_activations=False,
            reduce_range=True,
            **linear,
        ),
        "qop_u8s8_linear": qdq(
            "qop_u8s8_linear",
            activation_type="uint8",
            symmetric_activations=False,
            quant_format="qoperator",
            **linear,
        ),
        "dynamic_u8s8_linear": dynamic,
    }
    variants: list[tuple[str, str, str, str]] = [
        # name, runtime, graph (builder key or "fp32"), runtime precision
        ("ort_fp32", "ort", "fp32", ""),
        ("ort_qdq_s8s8_all (naive)", "ort", "qdq_s8s8_all", ""),
        ("ort_qdq_s8s8_linear (default recipe)", "ort", "qdq_s8s8_linear", ""),
        ("ort_qdq_u8s8_linear", "ort", "qdq_u8s8_linear", ""),
        ("ort_qdq_u8s8_linear_reduce_range", "ort", "qdq_u8s8_linear_rr", ""),
        ("ort_qoperator_u8s8_linear", "ort", "qop_u8s8_linear", ""),
        ("ort_dynamic_u8s8_linear", "ort", "dynamic_u8s8_linear", ""),
        ("ov_fp32", "ov", "fp32", "f32"),
        ("ov_bf16", "ov", "fp32", "bf16"),
        ("ov_int8 (qdq_s8s8_all)", "ov", "qdq_s8s8_all", "f32"),
        ("ov_int8 (qdq_s8s8_linear)", "ov", "qdq_s8s8_linear", "f32"),
        ("ov_int8+bf16 (qdq_s8s8_all)", "ov", "qdq_s8s8_all", "bf16"),
        # int8 linear layers on AMX/VNNI, attention in bf16: the mixed route for CPUs
        # with AMX (OpenVINO runs what the Q/DQ graph leaves float at the bf16 hint).
        ("ov_int8+bf16_linear (qdq_s8s8_linear)", "ov", "qdq_s8s8_linear", "bf16"),
    ]
    # Opt-in only (--only): with per-tensor weight scales ORT 1.32 peaked at ~11 GB RSS and
    # 2.4-10 s/frame here, enough to get the whole run OOM-killed on a 23 GB machine.
    heavy = [("ort_qdq_s8s8_linear_pertensor", "ort", "qdq_s8s8_linear_pertensor", "")]
    if args.only:
        variants = [v for v in variants + heavy if v[0].split(" ")[0] in args.only]

    # Build every graph first: calibration peaks at ~12 GB RSS at 1024 px, so no session
    # may be alive meanwhile (a quantized ORT session can hold as much again).
    graphs: dict[str, tuple[Path, float]] = {"fp32": (enc, 0.0)}
    for _, _, graph, _ in variants:
        if graph not in graphs:
            print(f"building {graph} ...", flush=True)
            t0 = time.perf_counter()
            graphs[graph] = (builders[graph](), time.perf_counter() - t0)
    reference = ort_runner(enc, args.threads)(held_out)
    results: list[Result] = []
    print(f"{'variant':<40}{'ms median':>10}{'rel err':>10}{'peak MB':>9}  runs", flush=True)
    # One fresh process per variant: a quantized ORT session peaked at ~18 GB RSS here and
    # freed memory is not always returned to the OS, so variants must not share a process.
    ctx = multiprocessing.get_context("spawn")
    for name, runtime, graph, precision in variants:
        path, build_s = graphs[graph]
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            job = pool.submit(measure, runtime, path, args.threads, precision, held_out, args.iters)
            try:
                times, out, peak = job.result()
            except Exception as exc:  # a runtime refusing a variant (or OOM) is a result too
                print(f"{name:<40} failed: {exc!r}", flush=True)
                results.append(Result(name, runtime, math.nan, (), math.nan, build_s, 0, repr(exc)))
                continue
        err = rel_l2(out, reference)
        med = statistics.median(times)
        results.append(Result(name, runtime, med, tuple(times), err, build_s, peak))
        runs = " ".join(f"{t:.0f}" for t in times)
        print(f"{name:<40}{med:>10.0f}{err:>10.2e}{peak:>9}  {runs}", flush=True)

    if args.json:
        import onnxruntime
        import openvino

        args.json.write_text(
            json.dumps(
                {
                    "command": " ".join(sys.argv),
                    "cpu": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(),
                    "threads": args.threads,
                    "iters": args.iters,
                    "onnxruntime": onnxruntime.__version__,
                    "openvino": openvino.__version__,
                    "img_size": s,
                    "results": [r.__dict__ for r in results],
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
