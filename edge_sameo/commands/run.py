"""``edge-sameo run``: detector boxes -> amodal masks on a file, camera or network stream."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sameo.errors import InputError
from edge_sameo.precision import PRECISIONS

#: Frames of the synthetic source when ``--frames`` is not given.
SYNTH_FRAMES = 150


def probability(text: str) -> float:
    """argparse ``type``: a number in [0, 1] (``--conf``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type``: an integer >= 1 (``--frames``, ``--imgsz``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def class_ids(text: str) -> list[int]:
    """argparse ``type``: ``"0,2"`` -> [0, 2] (``--classes``)."""
    try:
        ids = [int(c) for c in text.split(",")]
    except ValueError:
        ids = [-1]
    if any(i < 0 for i in ids):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class ids (integers >= 0), e.g. 0,2, got {text!r}"
        )
    return ids


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Add the segmenter flags shared by ``run`` and ``demo``: ``--sam``, ``--base``,
    ``--backend``, ``--precision``, ``--smoothing``, ``--persistence``, ``--shape-memory``,
    ``--sequential``."""
    p.add_argument(
        "--sam",
        help="EfficientSAM/SAMEO checkpoint or export folder "
        "(default: the bundled edge-sameo nano)",
    )
    p.add_argument("--base", help="base EfficientSAM checkpoint for a SAMEO decoder-only --sam")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime", "openvino", "tensorrt"],
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="every graph at this precision (default: the backend's; OpenVINO runs the "
        "encoder in bf16 and the decoder and refiner in fp32 where bf16 pays: AMX or an AMD "
        "CPU with AVX512-BF16; elsewhere all in fp32)",
    )
    p.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        help="temporal smoothing weight of the previous mask, 0 = off (default; smoothing "
        "measured no better, docs/BENCHMARKS.md)",
    )
    p.add_argument(
        "--persistence",
        type=int,
        default=30,
        help="frames a fully hidden object is carried on (its best-seen amodal mask moved "
        "at its velocity) before its track is dropped; 0 = off (default 30)",
    )
    p.add_argument(
        "--shape-memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="complete a partly hidden object with the amodal mask it had when best seen, "
        "aligned to its visible pixels (on unless --no-shape-memory)",
    )
    p.add_argument("--sequential", action="store_true", help="run stages one after another")


def register(sub: Any) -> None:
    """Add the ``run`` subcommand to the ``edge-sameo`` subparsers ``sub``."""
    p = sub.add_parser(
        "run",
        help="live amodal segmentation of a video, camera, stream or folder",
        description="YOLO boxes -> amodal masks per frame, with visible/occluded split, "
        "occlusion order and tracking. Writes an annotated MP4 and/or JSONL (flushed per frame).",
        epilog="Outputs are written as .NAME.XXXXXXXX.part files next to their path and moved "
        "into place at the end; a run that fails leaves earlier files as they were (its frames "
        "stay in the .part files, named in a warning). Ctrl-C and SIGTERM stop cleanly: "
        "outputs finalised, summary printed and written. Exit codes: 0 done; 2 bad input; "
        "1 a failure at run time; "
        "3 a live stream gone for longer than --reconnect-timeout (outputs kept); 130 Ctrl-C; "
        "143 SIGTERM.",
    )
    p.add_argument(
        "--source",
        required=True,
        help="video file, image folder, camera index, rtsp/http URL, or synth[:SEED]",
    )
    p.add_argument(
        "--detector",
        help="YOLO weights (.pt/.onnx/openvino dir/.engine), a replay "
        "file (.jsonl / COCO .json), 'gt' (or 'gt-amodal': amodal boxes) for the synthetic "
        "source, or 'float' / 'int8' for the bundled detector's float / INT8 export "
        "(default: the bundled detector, INT8 on x86 CPUs without AVX-512, else float)",
    )
    add_amodal_boxes_arg(p)
    p.add_argument("--conf", type=probability, default=0.25, help="detector confidence, 0..1")
    p.add_argument("--classes", type=class_ids, help="comma-separated class ids to keep")
    p.add_argument("--max-objects", type=int, default=20)
    p.add_argument("--tracker", default="bytetrack", choices=["bytetrack", "botsort", "none"])
    p.add_argument("--imgsz", type=positive_int, default=None, help="detector input size")
    add_detect_every_arg(p)
    add_model_args(p)
    p.add_argument("--out", type=Path, help="annotated video (.mp4)")
    p.add_argument("--jsonl", type=Path, help="one JSON line per frame")
    p.add_argument("--coco", type=Path, help="COCO results JSON for edge-sameo eval")
    p.add_argument(
        "--mcap",
        type=Path,
        help="MCAP recording (.mcap) of the camera frames, annotated frames and objects, "
        "for Foxglove or ROS 2 (docs/INTEGRATIONS.md)",
    )
    p.add_argument(
        "--mcap-format",
        choices=["foxglove", "ros2"],
        default="foxglove",
        help="foxglove: JSON with Foxglove's schemas (default); ros2: CDR with ROS 2 messages, "
        "for ros2 bag and rosbags",
    )
    p.add_argument("--show", action="store_true", help="show a window")
    add_serve_args(p)
    p.add_argument("--max-fps", type=float, help="pace file sources to at most this rate")
    p.add_argument(
        "--queue",
        choices=["auto", "latency", "throughput"],
        default="auto",
        help="latency: a new frame replaces the oldest one waiting for the detector (dropped, "
        "counted); throughput: every frame waits its turn; auto (default): latency for live "
        "sources and --max-fps, throughput for files",
    )
    p.add_argument(
        "--frames",
        type=positive_int,
        metavar="N",
        help=f"process at most N frames (default: all; the synthetic source: {SYNTH_FRAMES})",
    )
    p.add_argument("--summary", type=Path, help="write the run summary JSON here")
    p.add_argument(
        "--reconnect-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="give up on a camera/stream after S seconds without a frame (default 60; exit 3)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=run)


def add_amodal_boxes_arg(
    p: argparse.ArgumentParser,
    boxes: str = "the detector's boxes are amodal (each the whole object's extent: a YOLO "
    "trained on amodal boxes, replayed amodal boxes, or gt-amodal)",
) -> None:
    """``--amodal-boxes`` (``run``, ``demo``, ``segment``); ``boxes`` says which boxes."""
    p.add_argument(
        "--amodal-boxes", action="store_true", help=f"{boxes}: the masks are cut to them"
    )


def add_serve_args(p: argparse.ArgumentParser) -> None:
    """Add ``--serve`` and ``--serve-host`` (the live view) to ``p``."""
    p.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="serve a live view on this port while the run goes: the annotated stream "
        "(/stream.mjpg) and a table of the objects on a web page (/), the latest frame's JSON "
        "(/objects), /health and /metrics; 0 picks a free port (the URL is printed)",
    )
    p.add_argument(
        "--serve-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the live view listens on (default 127.0.0.1: this machine only; "
        "0.0.0.0: every network, without authentication)",
    )


@contextlib.contextmanager
def live_view(args: argparse.Namespace) -> Iterator[Any]:
    """The ``--serve`` live view, or None: listening from the start of the block (a port in
    use fails before the models load), closed at its end on every path (the outputs close it
    too; closing twice is harmless)."""
    if args.serve is None:
        yield None
        return
    from edge_sameo.stream.serve import LiveView

    with LiveView(args.serve_host, args.serve) as view:
        # flushed: a service manager's journal or a pipe shows the URL at once
        print(f"serving the live view on {view.url}", flush=True)
        yield view


def make_recording(args: argparse.Namespace) -> Any:
    """The ``--mcap`` recording sink (its file is opened at the first frame), or None."""
    if args.mcap is None:
        return None
    from edge_sameo.stream.recording import McapSink

    return McapSink(args.mcap, args.mcap_format)


def add_detect_every_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--detect-every`` (run the detector on every K-th frame) to ``p``."""
    p.add_argument(
        "--detect-every",
        type=positive_int,
        default=1,
        metavar="K",
        help="run the detector on every K-th frame only; tracked boxes move on at their "
        "velocity in between (default 1: every frame)",
    )


@dataclass(frozen=True)
class DetectorOptions:
    """How ``run`` and ``demo`` make their detector: the flags of the same names."""

    conf: float = 0.25
    classes: tuple[int, ...] | None = None
    max_objects: int = 20
    tracker: str = "bytetrack"
    imgsz: int | None = None
    detect_every: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DetectorOptions:
        """The options from parsed ``run``/``demo`` flags."""
        classes = tuple(args.classes) if args.classes is not None else None
        return cls(
            args.conf, classes, args.max_objects, args.tracker, args.imgsz, args.detect_every
        )


def describe_detector(spec: str | None) -> str:
    """How the run line names the detector ``spec`` (None: the bundled one, and which)."""
    from edge_sameo import bundled

    if spec is None:
        return f"bundled YOLOv8n ({bundled.default_detector()[1]})"
    if spec in ("float", "int8"):
        return f"bundled YOLOv8n ({'INT8' if spec == 'int8' else 'float'})"
    return str(spec)


def make_detector(spec: str | None, opts: DetectorOptions) -> Any:
    """The detector ``spec`` names (None: the bundled one), on every
    ``opts.detect_every``-th frame."""
    detector = _detector(spec, opts)
    if opts.detect_every > 1:
        from edge_sameo.stream import KeyframeDetector

        return KeyframeDetector(detector, opts.detect_every)
    return detector


def _detector(spec: str | None, opts: DetectorOptions) -> Any:
    from edge_sameo import bundled
    from edge_sameo.stream import GroundTruthDetector, ReplayDetector, YOLODetector

    if spec in ("gt", "gt-amodal"):
        return GroundTruthDetector(amodal=spec == "gt-amodal")
    named = {
        None: bundled.default_detector()[0],
        "float": bundled.DETECTOR,
        "int8": bundled.DETECTOR_INT8,
    }
    path = named[spec] if spec in named else Path(str(spec))
    if spec in named and not path.exists():
        raise InputError(f"bundled detector missing ({path}); pass --detector")
    if path.suffix in (".jsonl", ".json"):
        return ReplayDetector(path)
    tracker = None if opts.tracker == "none" else f"{opts.tracker}.yaml"
    classes = list(opts.classes) if opts.classes is not None else None
    return YOLODetector(path, opts.conf, classes, opts.max_objects, tracker, opts.imgsz)


@dataclass(frozen=True)
class ModelOptions:
    """Which segmenter ``run`` and ``demo`` load: the flags of the same names."""

    sam: Path | None = None
    base: Path | None = None
    backend: str = "auto"
    precision: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelOptions:
        sam, base = (Path(p) if p else None for p in (args.sam, args.base))
        return cls(sam, base, args.backend, args.precision)


def make_predictor(opts: ModelOptions) -> Any:
    """An :class:`~edge_sameo.AmodalPredictor` on ``opts.sam`` (default: the bundled nano)
    and its backend / precision; an export or TensorRT engine is made on demand."""
    from edge_sameo import AmodalPredictor, bundled
    from edge_sameo.backends.registry import create_backend
    from edge_sameo.engines.on_demand import on_demand

    sam = opts.sam or bundled.NANO
    if not sam.exists():
        raise InputError(f"SAM checkpoint/export not found: {sam}")
    source: Any = sam
    if opts.base is not None:
        from edge_sameo.checkpoint import load_model

        source = load_model(sam, base=opts.base)
    return AmodalPredictor(create_backend(source, opts.backend, opts.precision, **on_demand()))


def stream_config(args: argparse.Namespace) -> Any:
    """The :class:`~edge_sameo.stream.StreamConfig` of the parsed flags."""
    from edge_sameo.stream import StreamConfig, TemporalConfig

    return StreamConfig(
        pipelined=not args.sequential,
        max_fps=getattr(args, "max_fps", None),
        max_objects=getattr(args, "max_objects", 20),
        temporal=TemporalConfig(args.smoothing, args.persistence, args.shape_memory),
        queue_policy=getattr(args, "queue", "auto"),
        amodal_boxes=getattr(args, "amodal_boxes", False),
    )


def print_summary(summary: dict[str, Any], backend: str) -> None:
    """Print a run summary (``RunStats.summary``) as three lines: rate and latency,
    per-stage p50, drops and reconnects."""
    stages = ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_p50_ms"].items())
    print(
        f"{summary['frames']} frames in {summary['wall_s']} s: {summary['fps']:.1f} FPS "
        f"on {backend} (steady {summary['steady_fps']:.1f} FPS after a first frame of "
        f"{summary['first_frame_s']:.2f} s); latency p50 {summary['latency_p50_ms']} ms, "
        f"p95 {summary['latency_p95_ms']} ms"
    )
    print(f"per-stage p50 ms: {stages}")
    print(
        f"dropped frames {summary['dropped_frames']}, reconnects {summary['reconnects']}, "
        f"skipped {summary['skipped_frames']}, invalid boxes {summary['invalid_boxes']}"
        + (", source truncated" if summary["truncated"] else "")
    )


def report(
    summary: dict[str, Any], backend: str, path: Path | None, extra: dict[str, Any] | None = None
) -> None:
    """Print the run summary and write it, with ``extra`` keys, to ``path`` (``--summary``)
    when given."""
    from edge_sameo.io import atomic_write_json

    print_summary(summary, backend)
    if path:
        atomic_write_json(path, {**summary, **(extra or {})})


def check_paths(args: argparse.Namespace) -> None:
    """Refuse, before anything is opened, an output that would overwrite an input or another
    output, or that cannot be written."""
    from edge_sameo.paths import VIDEO_EXTENSIONS, check_outputs

    inputs = {"--source": args.source, "--detector": args.detector, "--sam": args.sam}
    inputs["--base"] = args.base
    check_outputs(
        {k: v for k, v in inputs.items() if v is not None and Path(v).exists()},
        {
            "--out": args.out,
            "--jsonl": args.jsonl,
            "--coco": args.coco,
            "--mcap": args.mcap,
            "--summary": args.summary,
        },
        {"--out": VIDEO_EXTENSIONS, "--mcap": (".mcap",)},
    )


def run(args: argparse.Namespace) -> int:
    """``edge-sameo run``: segment ``--source`` into the requested outputs; return the
    exit code (0, or 3 when a live source was given up on)."""
    from edge_sameo.cli import EXIT_SOURCE_LOST
    from edge_sameo.errors import Interrupted
    from edge_sameo.stream import ReconnectPolicy, open_source
    from edge_sameo.stream.app import Outputs, run_app
    from edge_sameo.stream.limit import FrameLimit
    from edge_sameo.stream.sources import SyntheticVideoSource

    given = (args.out, args.jsonl, args.coco, args.mcap, args.serve)
    if all(o is None for o in given) and not args.show:
        raise InputError(
            "nothing to write: give --out, --jsonl, --coco, --mcap, --show and/or --serve"
        )
    check_paths(args)
    recording = make_recording(args)  # a missing mcap package is refused before the models load
    cfg = stream_config(args)
    policy = ReconnectPolicy(give_up_s=args.reconnect_timeout)
    with live_view(args) as view:
        detector = make_detector(args.detector, DetectorOptions.from_args(args))
        predictor = make_predictor(ModelOptions.from_args(args))
        source = open_source(args.source, synth_frames=args.frames or SYNTH_FRAMES, policy=policy)
        if args.frames is not None and not isinstance(source, SyntheticVideoSource):
            source = FrameLimit(source, args.frames)
        backend = predictor.backend.describe()
        described = {"backend": backend, "detector": describe_detector(args.detector)}
        print(
            f"source: {source.describe()}; detector: {described['detector']}; segmenter: {backend}"
        )
        outputs = Outputs(args.out, args.jsonl, args.coco, args.show, progress=not args.quiet)
        if recording is not None:
            outputs.sinks.append(recording)
        if view is not None:
            view.source = source
            outputs.sinks.append(view)
        try:
            summary = run_app(source, detector, predictor, cfg, outputs)
        except Interrupted as exc:
            if exc.summary is not None:
                report(exc.summary, backend, args.summary, described)
            print("interrupted: every finished frame is on disk")
            raise
    report(summary, backend, args.summary, described)
    written = [str(p) for p in (args.out, args.jsonl, args.coco, args.mcap) if p]
    if written:
        print("wrote " + ", ".join(written))
    if summary["truncated"]:
        print(json.dumps({"warning": "source ended early (truncated video)"}))
    if summary["gave_up"]:
        print(
            f"edge-sameo run: error: gave up on {source.describe()}: no frame for "
            f"{args.reconnect_timeout:g} s (--reconnect-timeout)",
            file=sys.stderr,
        )
        return EXIT_SOURCE_LOST
    return 0
