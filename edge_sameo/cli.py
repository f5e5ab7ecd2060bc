"""``edge-sameo`` command line. Each subcommand lives in ``edge_sameo/commands/<name>.py``
with ``register(subparsers)``; library errors become one line on stderr and exit code 2.
Ctrl-C exits 130 and SIGTERM 143 (128 + the signal), both after finishing the outputs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from edge_sameo.errors import EdgeSameoError, Interrupted

#: Subcommand modules under ``edge_sameo.commands``, in ``--help`` order.
COMMANDS = (
    "run",
    "segment",
    "synth",
    "evaluate",
    "export",
    "calibrate",
    "build",
    "train",
    "bench",
    "demo",
)

EXIT_USAGE = 2
#: An unexpected error (a runtime's own exception, a bug): one line, the traceback only with
#: ``EDGE_SAMEO_DEBUG=1`` in the environment.
EXIT_UNEXPECTED = 1
#: ``run``: a live source gone for longer than ``--reconnect-timeout`` (outputs are kept).
EXIT_SOURCE_LOST = 3


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (and exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="edge-sameo", description="Amodal segmentation (SAMEO on EfficientSAM) for the edge."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"edge_sameo.commands.{name}")
        module.register(sub)
    return parser


class StderrHandler(logging.Handler):
    """Library log records as ``edge-sameo: warning: ...`` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"edge-sameo: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handled as Ctrl-C: the command stops cleanly and finishes its outputs. A
    second SIGTERM is ignored while it does (SIGKILL still ends it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = logging.getLogger()
    if not root.handlers:  # an application (or pytest) that set up logging keeps its own
        root.addHandler(StderrHandler(logging.WARNING))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        result = args.func(args)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
        print(f"edge-sameo: {what}", file=sys.stderr)
        return 128 + signum
    except (EdgeSameoError, OSError) as exc:
        print(f"edge-sameo {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if os.environ.get("EDGE_SAMEO_DEBUG"):
            raise
        detail = " ".join(str(exc).split())[:300]
        print(
            f"edge-sameo {args.command}: unexpected error: {type(exc).__name__}: {detail} "
            "(EDGE_SAMEO_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
