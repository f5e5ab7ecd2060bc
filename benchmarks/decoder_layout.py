"""What the token-layout decoder buys on the CPU runtimes.

    python benchmarks/decoder_layout.py --model vitt --threads 2 --iters 5 --json out.json

Exports the decoder twice from the same model — the original code path (transposed
convolutions on NCHW maps, head-split image->token attention) and the token layout the
export now uses (``edge_sameo.modeling.set_token_layout``) — and times both, interleaved,
on ONNX Runtime fp32 and OpenVINO fp32/bf16 with N boxes, plus their largest difference.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from edge_sameo.commands.export import load_model_arg
from edge_sameo.contract import BOXES, IMAGE_EMBEDDINGS, decoder_contract
from edge_sameo.engines.export import DecoderGraph, _export, inference_copy
from edge_sameo.modeling import set_token_layout

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def export_decoder(model: Any, token_layout: bool, path: Path) -> None:
    m = inference_copy(model)
    set_token_layout(m, token_layout)
    c = m.config
    emb = torch.randn(1, c.embed_dim, c.grid_size, c.grid_size)
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.5], [0.3, 0.2, 0.9, 0.95], [0.05, 0.5, 0.4, 0.9]])
    contract = decoder_contract(c, modal=False, box_profile=(1, 8, 64))
    path.write_bytes(_export(DecoderGraph(m, False), (emb, boxes * c.img_size), contract, 17))


def runners(path: Path, threads: int) -> dict[str, Runner]:
    import onnxruntime as ort
    import openvino as ov

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out: dict[str, Runner] = {"onnxruntime fp32": lambda feed: sess.run(None, feed)}
    core = ov.Core()
    for hint in ("f32", "bf16"):
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": hint,
            "INFERENCE_NUM_THREADS": str(threads),
        }
        req = core.compile_model(str(path), "CPU", config).create_infer_request()

        def run(feed: dict[str, np.ndarray], req: Any = req) -> list[np.ndarray]:
            return [np.array(v) for v in req.infer(feed).values()]

        out[f"openvino {hint.replace('f32', 'fp32')}"] = run
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vitt", help="checkpoint or config name (seeded)")
    ap.add_argument("--boxes", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, label = load_model_arg(args.model, None)
    c = model.config
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, c.img_size * 0.5, (args.boxes, 2))
    wh = rng.uniform(c.img_size * 0.1, c.img_size * 0.5, (args.boxes, 2))
    feed = {
        IMAGE_EMBEDDINGS: rng.standard_normal((1, c.embed_dim, c.grid_size, c.grid_size)).astype(
            np.float32
        ),
        BOXES: np.concatenate([xy, xy + wh], 1).astype(np.float32),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {layout: Path(tmp) / f"{layout}.onnx" for layout in ("original", "token")}
        for layout, path in paths.items():
            export_decoder(model, layout == "token", path)
        run = {layout: runners(path, args.threads) for layout, path in paths.items()}
        for name in run["original"]:
            times: dict[str, list[float]] = {"original": [], "token": []}
            outs = {}
            for it in range(args.iters + 1):  # first round is warm-up
                for layout in ("original", "token"):
                    t = time.perf_counter()
                    outs[layout] = run[layout][name](feed)
                    if it:
                        times[layout].append(time.perf_counter() - t)
            a, b = outs["original"][0], outs["token"][0]
            row: dict[str, Any] = {
                "runtime": name,
                "original_ms": 1e3 * statistics.median(times["original"]),
                "token_ms": 1e3 * statistics.median(times["token"]),
                "logits_max_abs_diff": float(np.abs(a - b).max()),
                "logits_max_abs": float(np.abs(a).max()),
            }
            row["speedup"] = row["original_ms"] / row["token_ms"]
            rows.append(row)
            print(
                f"{name:18s} original {row['original_ms']:8.1f} ms  token {row['token_ms']:8.1f} ms"
                f"  x{row['speedup']:.2f}  max|diff| {row['logits_max_abs_diff']:.2e}"
                f" (of {row['logits_max_abs']:.1f})",
                flush=True,
            )
    report = {
        "model": label,
        "boxes": args.boxes,
        "threads": args.threads,
        "iters": args.iters,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version},
        "date": time.strftime("%Y-%m-%d"),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
