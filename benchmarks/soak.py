"""Soak test of the streaming app: ``edge-sameo run`` on the live MJPEG test stream
(``tests/mjpeg_stream.py``) for N minutes, with two cuts of the stream, sampling the run's
memory (RSS) every few seconds.

    python benchmarks/soak.py --minutes 10 --json out/soak.json [--detector gt-free args]

The stream loops synthetic frames (``--size``, ``--fps``). At 1/3 and 2/3 of the time the
server drops the connection and refuses new ones for ``--cut-s`` seconds; the run must
reconnect. At the end the server goes away for good, so the run gives up after
``--reconnect-timeout`` (exit 3) and writes its ``--summary``: every frame the server
served is either processed or counted as dropped. Reports RSS after the warm-up and at
the end (before the stream goes), its growth in %, frames served vs processed + dropped,
and reconnects, and writes them as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edge_sameo.commands.synth import parse_size
from edge_sameo.stream.sources import SyntheticVideoSource

if TYPE_CHECKING:
    from tests.mjpeg_stream import MjpegServer

ROOT = Path(__file__).resolve().parents[1]


def load_test_stream() -> ModuleType:
    """The live MJPEG test stream of the test suite (``tests/mjpeg_stream.py``), loaded from
    this checkout by its path: the soak serves the same stream the stream tests do."""
    path = ROOT / "tests" / "mjpeg_stream.py"
    spec = importlib.util.spec_from_file_location("mjpeg_stream", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the test stream {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (psutil where installed, else /proc); None once
    the process is gone."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return float(psutil.Process(pid).memory_info().rss) / 2**20
        except psutil.NoSuchProcess:
            return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def stream_frames(size: tuple[int, int], count: int = 60) -> list[bytes]:
    """JPEG frames of the synthetic occlusion video, so the detector finds objects."""
    source = SyntheticVideoSource(count, seed=11, size=size)
    return [
        cv2.imencode(".jpg", cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))[1].tobytes()
        for f in source.frames()
    ]


def run_command(url: str, out: Path, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "edge_sameo", "run", "--source", url, "--quiet",
           "--reconnect-timeout", str(args.reconnect_timeout),
           "--summary", str(out / "summary.json"),
           "--jsonl", str(out / "soak.jsonl"), "--out", str(out / "soak.mp4")]  # fmt: skip
    for flag in ("detector", "sam", "backend"):
        if getattr(args, flag):
            cmd += [f"--{flag}", getattr(args, flag)]
    return cmd


def soak(srv: MjpegServer, url: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run the app against the stream; cut it twice, then stop it; sample RSS meanwhile."""
    duration = args.minutes * 60
    cuts = [duration / 3, 2 * duration / 3]
    samples: list[tuple[float, float]] = []
    ended_at: float | None = None
    next_sample = 0.0
    with open(out / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(run_command(url, out, args), cwd=ROOT, stderr=err)
        t0 = time.monotonic()
        while proc.poll() is None:
            t = time.monotonic() - t0
            if cuts and t >= cuts[0]:
                cuts.pop(0)
                srv.drop(args.cut_s)
            if ended_at is None and t >= duration:
                ended_at = t
                srv.drop(1e9)  # gone for good: the run gives up after --reconnect-timeout
            if ended_at is None and t >= next_sample:
                mb = rss_mb(proc.pid)
                if mb is not None:
                    samples.append((round(t, 1), round(mb, 1)))
                next_sample += args.sample_s
            if ended_at is not None and t > ended_at + args.reconnect_timeout + 60:
                proc.kill()  # it never gave up: reported by its exit code
            time.sleep(0.2)
    stderr = (out / "stderr.txt").read_text(errors="replace")
    return {"exit_code": proc.returncode, "samples": samples, "stderr_tail": stderr[-2000:]}


def rss_trend(
    samples: list[tuple[float, float]], warmup: float, window: float = 60.0
) -> tuple[float | None, float | None, float | None]:
    """RSS after the warm-up and at the end, each the median of the samples of one
    ``window`` (a single sample swings with the frames in flight and the heap trims), and
    the least-squares slope after the warm-up in MiB per minute."""
    after = [(t, mb) for t, mb in samples if t >= warmup]
    if len(after) < 2:
        return None, None, None
    first = [mb for t, mb in after if t < warmup + window]
    last = [mb for t, mb in after if t >= after[-1][0] - window]
    t, mb = np.array(after).T
    slope = float(np.polyfit(t / 60.0, mb, 1)[0])
    return float(np.median(first)), float(np.median(last)), round(slope, 2)


def report(
    result: dict[str, Any], served: int, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    samples = result["samples"]
    warmup = min(args.warmup_s, args.minutes * 60 / 2)
    warm, end, slope = rss_trend(samples, warmup)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    processed, dropped = summary.get("frames", 0), summary.get("dropped_frames", 0)
    return {
        "minutes": args.minutes,
        "stream": {"fps": args.fps, "size": list(args.size), "cuts": 2, "cut_s": args.cut_s},
        "exit_code": result["exit_code"],
        "rss_mb_after_warmup": warm,
        "warmup_s": warmup,
        "rss_mb_end": end,
        "rss_growth_pct": round(100 * (end - warm) / warm, 2) if warm and end else None,
        "rss_slope_mb_per_min": slope,
        "served": served,
        "processed": processed,
        "dropped": dropped,
        "unaccounted": served - processed - dropped,
        "reconnects": summary.get("reconnects"),
        "gave_up": summary.get("gave_up"),
        "fps": summary.get("fps"),
        "rss_samples": samples,
        "summary": summary,
        "stderr_tail": result["stderr_tail"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--fps", type=float, default=15.0, help="frame rate of the stream")
    p.add_argument("--size", type=parse_size, default=(640, 480), help="WxH of the stream")
    p.add_argument("--cut-s", type=float, default=2.0, help="seconds each cut lasts")
    p.add_argument("--warmup-s", type=float, default=60.0, help="RSS baseline after this")
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period")
    p.add_argument("--reconnect-timeout", type=float, default=10.0)
    p.add_argument("--detector", help="passed to edge-sameo run (default: bundled)")
    p.add_argument("--sam", help="passed to edge-sameo run (default: bundled)")
    p.add_argument("--backend", help="passed to edge-sameo run (default: auto)")
    p.add_argument("--json", type=Path, default=ROOT / "out" / "soak.json")
    args = p.parse_args()
    srv, port = load_test_stream().mjpeg_server(stream_frames(args.size), args.fps)
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        try:
            result = soak(srv, url, Path(tmp), args)
        finally:
            srv.shutdown()
        row = report(result, srv.served, Path(tmp), args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(row, indent=1) + "\n")
    print(
        f"{args.minutes:g} min, exit {row['exit_code']}: RSS (median of a minute) "
        f"{row['rss_mb_after_warmup']} MiB after {row['warmup_s']:g} s -> {row['rss_mb_end']} "
        f"MiB in the last minute ({row['rss_growth_pct']} %, slope "
        f"{row['rss_slope_mb_per_min']} MiB/min); served {row['served']} = processed "
        f"{row['processed']} "
        f"+ dropped {row['dropped']} + unaccounted {row['unaccounted']}; "
        f"reconnects {row['reconnects']}; wrote {args.json}"
    )


if __name__ == "__main__":
    main()
