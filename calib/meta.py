"""``calib_meta.json``: one entry per precision graph — its recipe, what stayed float, and
the data that calibrated it. Written beside the graphs; runtimes and builders may read it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edge_sameo.contract import CALIB_META_FILE
from edge_sameo.errors import InputError
from edge_sameo.io import atomic_write_json

META_VERSION = 1


def read_calib_meta(directory: str | Path) -> dict[str, Any]:
    """The sidecar of ``directory`` (an empty one when there is none)."""
    path = Path(directory) / CALIB_META_FILE
    if not path.is_file():
        return {"version": META_VERSION, "graphs": {}}
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version") != META_VERSION:
        raise InputError(f"{path}: not a version-{META_VERSION} calibration sidecar")
    meta.setdefault("graphs", {})
    return meta


def record_graph(directory: str | Path, graph_path: Path, entry: dict[str, Any]) -> None:
    """Add or replace the entry of ``graph_path`` (a file in ``directory``), with its sha256."""
    meta = read_calib_meta(directory)
    digest = hashlib.sha256(Path(graph_path).read_bytes()).hexdigest()
    meta["graphs"][Path(graph_path).name] = {**entry, "sha256": digest}
    atomic_write_json(Path(directory) / CALIB_META_FILE, meta)
