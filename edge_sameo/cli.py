"""``edge-sameo`` command line. Each subcommand lives in ``edge_sameo/commands/<name>.py``
with ``register(subparsers)``; library errors become one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from edge_sameo.errors import EdgeSameoError

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("edge-sameo: interrupted", file=sys.stderr)
        return 130
    except (EdgeSameoError, OSError) as exc:
        print(f"edge-sameo {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
