"""``edge-sameo train``: the SAMEO training recipe (also ``python -m edge_sameo.train``)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from edge_sameo.train.cli import add_subcommands

    p = sub.add_parser(
        "train",
        help="train, benchmark the embedding cache, export (SAMEO recipe)",
        description="Fine-tune the mask decoder (SAMEO recipe) or train fully; see "
        "docs/TRAINING.md. Also: python -m edge_sameo.train ...",
    )
    add_subcommands(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from edge_sameo.train.cli import run as run_train

    return run_train(args)
