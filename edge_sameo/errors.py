"""Exceptions raised by the library. Only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class EdgeSameoError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(EdgeSameoError, ValueError):
    """Bad user input (a file, an image, a box, an option). The CLI exits with code 2."""


class CheckpointError(InputError):
    """A file that is not a checkpoint this project can load (names the file and why)."""


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
