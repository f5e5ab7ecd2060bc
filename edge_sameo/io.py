"""File I/O with atomic writes, and image reading/conversion to (H, W, 3) uint8 RGB."""

from __future__ import annotations

import json
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.errors import InputError
from edge_sameo.paths import require_file

log = logging.getLogger(__name__)


def temp_sibling(path: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty file ``.NAME.XXXXXXXX<suffix>`` in ``path``'s folder (created if
    missing), so that :func:`commit_temp` can move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def commit_temp(tmp: str | Path, path: str | Path) -> None:
    """Give a :func:`temp_sibling` the mode a plain ``open()`` would have (``mkstemp``
    creates 0600) and move it onto ``path`` with ``os.replace``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: a reader
    (or a crash) never sees a half-written file."""
    tmp = temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        commit_temp(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (one trailing newline) to ``path`` atomically: through
    a temporary file in the same folder, moved into place, so a reader never sees half."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


#: MP4 boxes that hold other boxes on the way from ``moov`` to the chunk offsets.
_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


def _mp4_boxes(f: IO[bytes], end: int) -> list[tuple[bytes, int, int]]:
    """Top-level boxes of an MP4 as (type, offset, size)."""
    boxes, pos = [], 0
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
        elif size == 0:
            size = end - pos
        if size < 8 or pos + size > end:
            raise ValueError(f"bad MP4 box {kind!r} at {pos}")
        boxes.append((kind, pos, size))
        pos += size
    return boxes


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, before: int, shift: int) -> None:
    """Add ``shift`` to every chunk offset (``stco``/``co64``) under ``moov[start:end]``
    that points before ``before`` (the data ahead of where ``moov`` was)."""
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", moov, start)
        if size < 8:
            raise ValueError(f"bad MP4 box {kind!r} in moov")
        if kind in _MP4_CONTAINERS:
            _shift_chunk_offsets(moov, start + 8, start + size, before, shift)
        elif kind in (b"stco", b"co64"):
            fmt = ">I" if kind == b"stco" else ">Q"
            width = struct.calcsize(fmt)
            (count,) = struct.unpack_from(">I", moov, start + 12)
            for i in range(count):
                at = start + 16 + i * width
                value = struct.unpack_from(fmt, moov, at)[0]
                value += shift if value < before else 0
                if value >= 1 << (8 * width):
                    raise ValueError("chunk offset overflows stco")
                struct.pack_into(fmt, moov, at, value)
        start += size


def move_mp4_faststart(src: str | Path, dst: str | Path) -> None:
    """Move the MP4 ``src`` to ``dst`` (atomically) with its index (``moov``) ahead of the
    media data, as ``ffmpeg -movflags +faststart`` writes it: a truncated copy still plays
    up to the cut. A file that is already fast-start, or one this cannot parse, is moved
    as it is."""
    src, dst = Path(src), Path(dst)
    with open(src, "rb") as f:
        try:
            boxes = _mp4_boxes(f, src.stat().st_size)
            kinds = [kind for kind, _, _ in boxes]
            moov_at = kinds.index(b"moov")
            if kinds[0] != b"ftyp" or moov_at < kinds.index(b"mdat"):
                raise ValueError("nothing to move")
            _, offset, size = boxes[moov_at]
            f.seek(offset)
            moov = bytearray(f.read(size))
            _shift_chunk_offsets(moov, 8, size, offset, size)
        except ValueError:
            os.replace(src, dst)
            return
        tmp = temp_sibling(dst, suffix=dst.suffix)
        try:
            with open(tmp, "wb") as out:
                for i in [0, moov_at] + [i for i in range(1, len(boxes)) if i != moov_at]:
                    if i == moov_at:
                        out.write(moov)
                        continue
                    f.seek(boxes[i][1])
                    _copy_bytes(f, out, boxes[i][2])
            commit_temp(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    src.unlink()


def _copy_bytes(src: IO[bytes], dst: IO[bytes], n: int, chunk: int = 1 << 20) -> None:
    while n > 0:
        data = src.read(min(chunk, n))
        if not data:
            raise OSError("file shorter than its MP4 boxes")
        dst.write(data)
        n -= len(data)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> None:
    """Render a matplotlib figure to PNG, close it and write it atomically."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


#: Extensions :func:`write_image` writes.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def image_extension(path: str | Path) -> str:
    """The extension of an image to write, or ``InputError`` when it is not one."""
    ext = Path(path).suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise InputError(f"cannot write image {path}: unsupported extension {ext!r} (use .png)")
    return ext


def write_image(path: str | Path, image: NDArray[np.uint8]) -> None:
    """Write an (H, W, 3) uint8 RGB image; the format follows the file extension."""
    ext = image_extension(path)
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


#: Truncated JPEGs already warned about: once per file and process (epochs read again).
_TRUNCATED_WARNED: set[str] = set()


def warn_if_truncated_jpeg(path: str | Path) -> None:
    """Warn (one log line, once per file) when a JPEG file lacks its end-of-image marker, as
    a cut download or copy does: OpenCV decodes it without an error, grey below the cut."""
    if str(path) in _TRUNCATED_WARNED:
        return
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - 64, 0))
        tail = f.read()
    if head == b"\xff\xd8" and not tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        _TRUNCATED_WARNED.add(str(path))
        log.warning("%s is a truncated JPEG (no end marker): its lower part is missing", path)


def read_image(path: str | Path) -> NDArray[np.uint8]:
    """Read an image file (8/16-bit, gray/RGB/RGBA) as (H, W, 3) uint8 RGB."""
    p = require_file(path, "image")
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"cannot read image {p}: not an image file or corrupt")
    warn_if_truncated_jpeg(p)
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return to_rgb_uint8(img, name=str(p))
