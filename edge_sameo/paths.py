"""Paths given on the command line, checked before anything is read or written.

* :func:`require_file`: an input file, with "not found" and "is a directory" told apart;
* :func:`check_outputs`: no output may be an input or another output of the same command
  (resolved paths and hard links), be a directory, or lie in a folder that cannot be
  written — checked before a command opens its inputs, so nothing is written yet.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_sameo.errors import InputError

PathLike = str | Path

#: Containers ``edge-sameo run --out`` writes (OpenCV, mp4v).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov")


def require_file(path: PathLike, what: str) -> Path:
    """``path`` when it is a file; otherwise ``InputError`` saying that it is missing or
    that it is a directory."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} is a directory, not a file: {p}")
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    return p


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: equal once resolved, or hard links of one file."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist (yet)
        return False


def _writable_folder(path: Path, label: str) -> None:
    """The nearest existing folder above ``path`` must be a folder we may write in."""
    folder = path.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {label} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {label} {path}: no permission to write in {folder}")


def check_outputs(
    inputs: Mapping[str, PathLike | None],
    outputs: Mapping[str, PathLike | None],
    suffixes: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Refuse (``InputError``, one line) before anything is written: an output that is the
    same file as an input or as another output, an output that is a directory, one whose
    folder cannot be written, or one whose extension is not in ``suffixes[label]``.

    Keys are the option names shown to the user (``"--out"``); ``None`` values are skipped."""
    given_in = {k: Path(v) for k, v in inputs.items() if v is not None}
    given_out = {k: Path(v) for k, v in outputs.items() if v is not None}
    for label, path in given_out.items():
        if path.is_dir():
            raise InputError(f"{label} {path} is a directory; give a file name")
        allowed = (suffixes or {}).get(label)
        if allowed and path.suffix.lower() not in allowed:
            raise InputError(f"{label} must end in {', '.join(allowed)}, got {path}")
        for in_label, source in given_in.items():
            if same_file(path, source):
                raise InputError(
                    f"{label} {path} is the same file as {in_label} {source}: "
                    "refusing to overwrite an input"
                )
        _writable_folder(path, label)
    labels = list(given_out)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            if same_file(given_out[a], given_out[b]):
                raise InputError(
                    f"{a} and {b} are the same file ({given_out[a]}); give each output its own name"
                )
