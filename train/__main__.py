"""``python -m edge_sameo.train``: the same entry as ``edge-sameo train`` (see ``train/cli.py``)."""

from __future__ import annotations

from edge_sameo.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
