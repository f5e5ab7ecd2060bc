"""``edge-sameo`` command line. Each subcommand lives in ``edge_sameo/commands/<name>.py``
with ``register(subparsers)``. :func:`run_command` runs it, as it runs the project's other
entry points (``python -m edge_sameo.train``, ``python -m edge_sameo.train.detector``): an
error is one line on stderr and exit code 2 (bad usage or input) or 1 (a failure at run
time); Ctrl-C exits 130 and SIGTERM 143 (128 + the signal), both after finishing the
outputs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import NoReturn

from edge_sameo.backends.cuda_memory import NoGpuError
from edge_sameo.errors import EdgeSameoError, InputError, Interrupted, MissingDependencyError

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

#: Bad usage or input: what the command line asked for cannot be done as asked (a flag, a
#: file, an optional package or a GPU this machine lacks).
EXIT_USAGE = 2
#: A failure at run time (an engine build, an export check, a runtime's own exception, a
#: bug): one line, the traceback only with ``EDGE_SAMEO_DEBUG=1`` in the environment.
EXIT_FAILURE = 1
#: ``run``: a live source gone for longer than ``--reconnect-timeout`` (outputs are kept).
EXIT_SOURCE_LOST = 3


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (and exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        """Exit with code 2 and ``<prog>: error: <message> (see <prog> --help)``."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``edge-sameo`` parser with every subcommand of :data:`COMMANDS` registered."""
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
        """Print ``record`` as ``edge-sameo: <level>: <message>`` on stderr."""
        print(f"edge-sameo: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handled as Ctrl-C: the command stops cleanly and finishes its outputs. A
    second SIGTERM is ignored while it does (SIGKILL still ends it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def run_command(command: Callable[[], int | None], prog: str, name: str | None = None) -> int:
    """Run ``command`` (a parsed command line) and return its exit code, as every entry point
    of the project does. Library log records become ``edge-sameo: warning: ...`` lines, and
    SIGTERM stops the command as Ctrl-C does (it finishes its outputs). What it raises is one
    line on stderr, headed ``prog name``:

    * bad usage or input (``InputError``, a missing optional package or GPU, ``OSError``):
      ``EXIT_USAGE``;
    * any other ``EdgeSameoError`` (an engine build, an export check) and any other
      exception (a runtime's own, a bug): ``EXIT_FAILURE``, re-raised with its traceback when
      ``EDGE_SAMEO_DEBUG`` is set;
    * Ctrl-C: 130, SIGTERM: 143.

    Usage errors of the parser (:class:`Parser`) exit 2 before any command runs.
    """
    label = prog if name is None else f"{prog} {name}"
    root = logging.getLogger()
    if not root.handlers:  # an application (or pytest) that set up logging keeps its own
        root.addHandler(StderrHandler(logging.WARNING))
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        result = command()
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        what = "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)"
        print(f"{prog}: {what}", file=sys.stderr)
        return 128 + signum
    except (InputError, MissingDependencyError, NoGpuError, OSError) as exc:
        print(f"{label}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        if os.environ.get("EDGE_SAMEO_DEBUG"):
            raise
        if isinstance(exc, EdgeSameoError):  # raised on purpose: its message says it all
            print(f"{label}: error: {exc}", file=sys.stderr)
        else:
            detail = " ".join(str(exc).split())[:300]
            print(
                f"{label}: unexpected error: {type(exc).__name__}: {detail} "
                "(EDGE_SAMEO_DEBUG=1 shows the traceback)",
                file=sys.stderr,
            )
        return EXIT_FAILURE
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return int(result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``edge-sameo``."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args), "edge-sameo", args.command)


if __name__ == "__main__":
    sys.exit(main())
