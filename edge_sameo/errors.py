"""Exceptions raised by the library. Only the CLI turns them into messages and exit codes."""

from __future__ import annotations

import signal
from typing import Any


class EdgeSameoError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(EdgeSameoError, ValueError):
    """Bad user input (a file, an image, a box, an option). The CLI exits with code 2."""


class CheckpointError(InputError):
    """A file that is not a checkpoint this project can load (names the file and why)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM (what ``docker stop`` and service managers send) stopped a
    run cleanly: outputs finalised with every finished frame. ``summary`` is the run summary
    of those frames where one was made. The CLI exits with 128 + the signal number (130 for
    Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, signum: int = signal.SIGINT, summary: dict[str, Any] | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.summary = summary


class MissingDependencyError(EdgeSameoError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise an error that names the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'edge-sameo[{extra}]'"
        ) from exc
