"""File I/O with atomic writes, and image reading/conversion to (H, W, 3) uint8 RGB."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: a reader
    (or a crash) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Render a matplotlib figure to PNG, close it and write it atomically."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_image(path: str | Path, image: NDArray[np.uint8]) -> None:
    """Write an (H, W, 3) uint8 RGB image; the format follows the file extension."""
    ext = Path(path).suffix.lower()
    if ext not in {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}:
        raise InputError(f"cannot write image {path}: unsupported extension {ext!r} (use .png)")
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"cannot encode image {path}")
    atomic_write_bytes(path, buf.tobytes())


def to_rgb_uint8(image: NDArray[Any], name: str = "image") -> NDArray[np.uint8]:
    """Convert a grayscale, RGB or RGBA image of uint8 or uint16 to (H, W, 3) uint8 RGB.

    Channel order is taken as RGB(A). 16-bit values are scaled to 8 bits; RGBA drops
    alpha. Anything else (floats, other dtypes or shapes, empty) raises ``InputError``.
    """
    arr = np.asarray(image)
    if arr.dtype == np.uint16:
        arr = np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise InputError(
            f"{name} has dtype {arr.dtype}; expected uint8 (or uint16) pixels in 0..255"
            + (" — scale float images by 255 first" if arr.dtype.kind == "f" else "")
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise InputError(
            f"{name} has shape {arr.shape}; expected (H, W), (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr)


def read_image(path: str | Path) -> NDArray[np.uint8]:
    """Read an image file (8/16-bit, gray/RGB/RGBA) as (H, W, 3) uint8 RGB."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"cannot read image {p}: not an image file or corrupt")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return to_rgb_uint8(img, name=str(p))
