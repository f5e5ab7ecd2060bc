"""The live view (``edge-sameo run --serve``): its routes answer while a paced synthetic run
goes on, a stalled client does not hold the run, closing the run releases the port, and a
headless Chromium renders the page: the annotated stream and the objects table."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_sameo import build_model, save_model
from edge_sameo.annotators import color
from edge_sameo.cli import main
from edge_sameo.errors import InputError
from edge_sameo.seeded import manifest_of, seeded_state_dict
from edge_sameo.stream.pipeline import FrameResult
from edge_sameo.stream.serve import LiveView
from edge_sameo.stream.sources import Frame

#: The synthetic world's class names (what the ground-truth detector reports).
SYNTH_CLASSES = {"box", "disc", "polygon", "star", "blob"}
#: The line a run prints once its live view listens.
URL = re.compile(r"serving the live view on (http://\S+)")
#: A run longer than any test (10 min at 5 FPS): stopped with SIGTERM once a test is done.
LONG = 3000


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = build_model("tiny", modal_decoder=True)
    model.load_state_dict(seeded_state_dict(manifest_of(model.state_dict()), seed=2))
    path = tmp_path_factory.mktemp("serve") / "dual.pt"
    save_model(model, path)
    return path


def run_args(ckpt: Path, frames: int, max_fps: float, port: str = "0") -> list[str]:
    return ["run", "--source", "synth:3", "--frames", str(frames), "--max-fps", str(max_fps),
            "--detector", "gt", "--sam", str(ckpt), "--backend", "torch", "--quiet",
            "--serve", port]  # fmt: skip


class Run:
    """``edge-sameo run`` in a thread of this process (its port must be free again after)."""

    def __init__(self, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.rc: int | None = None
        self.out = ""
        self.thread = threading.Thread(target=self._main, args=(argv,), daemon=True)
        self.thread.start()

    def _main(self, argv: list[str]) -> None:
        self.rc = main(argv)

    def url(self, timeout: float = 60.0) -> str:
        """The URL the run prints once, read from its stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.out += self.capsys.readouterr().out
            if found := URL.search(self.out):
                return found.group(1)
            assert self.thread.is_alive(), self.out
            time.sleep(0.05)
        raise AssertionError(f"no URL printed: {self.out!r}")

    def join(self, timeout: float = 120.0) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        assert self.rc is not None
        return self.rc


class Service:
    """``edge-sameo run`` as a service manager runs it: its own process, no terminal,
    stopped with SIGTERM (so the run lasts as long as a test needs, however busy the
    machine)."""

    def __init__(self, argv: list[str]) -> None:
        cmd = [sys.executable, "-m", "edge_sameo", *argv]
        # stderr merged and read all along: a full pipe would block the run
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.decode())
            self.lines.put(self.output[-1])

    def url(self, timeout: float = 120.0) -> str:
        """The URL the run prints once, read from its stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            with contextlib.suppress(queue.Empty):
                if found := URL.search(self.lines.get(timeout=0.5)):
                    return found.group(1)
        self.proc.kill()
        raise AssertionError(f"no URL printed: {''.join(self.output)}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, as ``systemctl stop`` or ``docker stop`` send; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.alive():  # a failed test: no run left behind
            self.proc.kill()
            self.proc.wait()


def wait_frames(url: str, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while get_json(url + "health")["frames"] < n:
        assert time.monotonic() < deadline, f"fewer than {n} frames after {timeout} s"
        time.sleep(0.1)


def get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read()


def get_json(url: str) -> Any:
    status, ctype, body = get(url)
    assert status == 200 and ctype == "application/json"
    return json.loads(body)


def mjpeg_parts(url: str, n: int, indices: list[int] | None = None) -> list[np.ndarray]:
    """The first ``n`` JPEG parts of an MJPEG stream, decoded (H, W, 3) uint8 BGR; their
    frame indices appended to ``indices``."""
    images = []
    with urllib.request.urlopen(url, timeout=30) as r:
        ctype = r.headers["Content-Type"]
        assert ctype.startswith("multipart/x-mixed-replace")
        boundary = ctype.split("boundary=")[1].encode()
        while len(images) < n:
            assert r.readline().strip() == b"--" + boundary
            headers = {}
            while line := r.readline().strip():
                key, value = line.decode().split(":", 1)
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            data = r.read(int(headers["content-length"]))
            assert r.readline() == b"\r\n"
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            assert image is not None, "a part is not a JPEG"
            images.append(image)
            if indices is not None:
                indices.append(int(headers["x-frame-index"]))
    return images


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url + "health", timeout=5)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


@contextlib.contextmanager
def stalled_client(url: str) -> Iterator[socket.socket]:
    """A stream client that never reads (a tiny receive buffer, so its server side blocks)."""
    host, port = url.split("//")[1].strip("/").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    try:
        yield sock
    finally:
        sock.close()


def test_live_view_answers_while_the_run_goes_on(ckpt: Path) -> None:
    with Service(run_args(ckpt, frames=LONG, max_fps=5)) as run:
        url = run.url()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url) and not url.endswith(":0/")
        check_routes(url)
        assert run.alive()  # all of it while the run went on
        assert run.stop() == 143  # SIGTERM: stopped cleanly
    assert refused(url)


def check_routes(url: str) -> None:
    with stalled_client(url):
        wait_frames(url, 2)
        status, ctype, page = get(url)
        assert status == 200 and ctype.startswith("text/html")
        assert b'src="/stream.mjpg"' in page and b"http" not in page.split(b"<body>")[1]

        record = get_json(url + "objects")
        assert record["objects"] and {"frame", "timestamp", "timings_ms"} <= record.keys()
        obj = record["objects"][0]
        assert {"track_id", "class_name", "score", "occlusion_ratio", "order"} <= obj.keys()
        assert obj["class_name"] in SYNTH_CLASSES

        metrics = get_json(url + "metrics?format=json")
        assert metrics["frames"] >= 2 and metrics["fps"] > 0
        assert {"detect", "encoder", "decoder"} <= metrics["stage_p50_ms"].keys()
        assert metrics["latency_p50_ms"] > 0
        assert metrics["dropped_frames"] >= 0 and metrics["reconnects"] == 0
        status, ctype, text = get(url + "metrics")
        assert ctype.startswith("text/plain; version=0.0.4")
        samples = dict(
            line.rsplit(" ", 1) for line in text.decode().splitlines() if line[:1] != "#"
        )
        assert int(samples["edge_sameo_frames_total"]) >= 2
        assert float(samples['edge_sameo_stage_latency_p50_ms{stage="encoder"}']) > 0
        assert "edge_sameo_dropped_frames_total" in samples
        assert "edge_sameo_reconnects_total" in samples

        indices: list[int] = []
        frames = mjpeg_parts(url + "stream.mjpg", 2, indices)
        assert all(f.shape == (480, 640, 3) for f in frames)
        assert indices[0] < indices[1]  # two frames, not one sent twice
        later = get_json(url + "health")
        assert later["status"] == "ok" and later["frames"] > metrics["frames"]


def test_a_stalled_client_does_not_hold_the_run(
    ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Unpaced: the run goes as fast as it can while a client reads nothing.
    run = Run(run_args(ckpt, frames=12, max_fps=1000), capsys)
    url = run.url()
    with stalled_client(url) as sock:
        assert run.join() == 0
        assert refused(url)
        sock.settimeout(5)
        got = b""
        while chunk := sock.recv(1 << 20):  # the server ended the connection: EOF
            got += chunk
    assert got.startswith(b"HTTP/1.0 200")
    assert "12 frames" in run.out + capsys.readouterr().out


def test_port_in_use_is_one_line_exit_2(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(run_args(ckpt, frames=2, max_fps=5, port=str(port))) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"port {port}" in err and "in use" in err
        with pytest.raises(InputError, match="in use"):
            LiveView("127.0.0.1", port)
        demo = ["demo", "--frames", "2", "--detector", "gt", "--sam", str(ckpt),
                "--backend", "torch", "--out-dir", str(tmp_path), "--serve", str(port)]  # fmt: skip
        assert main(demo) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "in use" in err
    assert main(run_args(ckpt, frames=2, max_fps=5, port="70000")) == 2
    assert "0..65535" in capsys.readouterr().err


def test_live_view_before_a_frame_and_after_close() -> None:
    view = LiveView("127.0.0.1", 0)
    url = view.url
    assert get_json(url + "health") == {"status": "ok", "frames": 0}
    with pytest.raises(urllib.error.HTTPError) as exc:
        get(url + "objects")
    assert exc.value.code == 503
    with pytest.raises(urllib.error.HTTPError) as exc:
        get(url + "nothing-here")
    assert exc.value.code == 404
    assert get_json(url + "metrics?format=json")["fps"] == 0.0
    view.close()
    view.close()  # idempotent
    assert refused(url)
    with LiveView("127.0.0.1", view.port) as again:  # the port is free again at once
        assert again.port == view.port


def test_only_requests_naming_this_machine_are_answered_on_loopback() -> None:
    """DNS rebinding: a page elsewhere whose name resolves to 127.0.0.1 sends its own name
    as Host; the view bound to this machine refuses it (403) and answers local names."""
    with LiveView("127.0.0.1", 0) as view:
        local = (f"localhost:{view.port}", 200), (f"127.0.0.1:{view.port}", 200)
        for host, status in (("evil.example", 403), ("localhost.evil.example", 403), *local):
            with socket.create_connection(("127.0.0.1", view.port), timeout=5) as conn:
                conn.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                assert conn.recv(64).split()[1] == str(status).encode(), host
    with pytest.raises(InputError, match="empty address"):
        LiveView("", 0)


def test_the_view_asks_for_the_drawn_frame_only_while_someone_watches() -> None:
    with LiveView("127.0.0.1", 0) as view:
        assert not view.wants_image
        with urllib.request.urlopen(view.url + "stream.mjpg", timeout=5):
            deadline = time.monotonic() + 5
            while not view.wants_image and time.monotonic() < deadline:
                time.sleep(0.01)
            assert view.wants_image


def test_a_client_before_the_first_frame_gets_the_frames_written() -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]  # RGB, one per frame
    images = [np.full((48, 64, 3), c, np.uint8) for c in colours]
    with LiveView("127.0.0.1", 0) as view:
        got: list[np.ndarray] = []
        indices: list[int] = []
        reader = threading.Thread(
            target=lambda: got.extend(mjpeg_parts(view.url + "stream.mjpg", 2, indices)),
            daemon=True,
        )
        reader.start()
        deadline = time.monotonic() + 30
        while view.metrics()["stream_clients"] == 0:  # encoded only while someone watches
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for i, image in enumerate(images):
            result = FrameResult(Frame(i, i / 30, image), [], {"encoder": 1.0}, latency_ms=2.0)
            view.write(result, result.to_json(), image)
            time.sleep(0.3)  # the reader takes each frame before the next replaces it
        reader.join(30)
        assert get_json(view.url + "objects") == images_record(2)
    assert len(got) == 2 and indices == [0, 1]
    for colour, part in zip(colours[:2], got, strict=True):  # frames 0 and 1, in order
        assert np.abs(part[..., ::-1].mean(axis=(0, 1)) - colour).max() < 8


def images_record(index: int) -> dict[str, Any]:
    """The JSONL record of an object-less frame ``index`` written at 30 FPS."""
    return {"frame": index, "timestamp": round(index / 30, 4), "objects": [],
            "timings_ms": {"encoder": 1.0}, "latency_ms": 2.0}  # fmt: skip


CHROMIUM = shutil.which("chromium")


def chromium(url: str, profile: Path, *flags: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
           f"--user-data-dir={profile}", "--window-size=800,700",
           # the budget lets the page's scripts run; the timeout ends a page whose
           # stream never sends a frame (its load never completes)
           "--virtual-time-budget=3000", "--timeout=8000", *flags, url]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, timeout=90, check=True)


def longest_run(flags: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the longest run of True in a 1-D bool array ((0, 0): none)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    starts, stops = edges[::2], edges[1::2]
    if starts.size == 0:
        return 0, 0
    i = int(np.argmax(stops - starts))
    return int(starts[i]), int(stops[i])


def image_region(png: np.ndarray) -> np.ndarray:
    """The part of a page screenshot (H, W, 3) BGR covered by a picture: the longest band
    of rows, then of columns, mostly unlike the page's near-black background (a table's
    1-pixel borders and lines of text are not)."""
    content = (np.abs(png.astype(np.int16) - 17) > 12).any(axis=2)
    top, bottom = longest_run(content.mean(axis=1) > 0.5)
    left, right = longest_run(content[top:bottom].mean(axis=0) > 0.5)
    return png[top:bottom, left:right]


def colour_count(region: np.ndarray) -> int:
    """Distinct colours of ``region`` (H, W, 3), 16 levels per channel."""
    return len(np.unique((region // 16).reshape(-1, 3), axis=0))


def flat_share(region: np.ndarray) -> float:
    """The share of ``region``'s pixels in its most common colour (1: a flat box)."""
    _, counts = np.unique((region // 16).reshape(-1, 3), axis=0, return_counts=True)
    return float(counts.max() / counts.sum()) if counts.size else 1.0


def palette_pixels(region: np.ndarray, track_ids: set[int]) -> int:
    """Pixels of ``region`` (BGR) within JPEG error of the mask colours of ``track_ids``."""
    rgb = region[..., ::-1].astype(np.int16)
    hits = np.zeros(rgb.shape[:2], bool)
    for t in track_ids:
        hits |= (np.abs(rgb - np.array(color(t), np.int16)) <= 24).all(axis=2)
    return int(hits.sum())


@pytest.mark.slow  # 15-30 s: a paced run, three browser starts
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt install "
                    "chromium); the page is checked in a real headless browser")  # fmt: skip
def test_chromium_renders_the_stream_and_the_objects_table(ckpt: Path, tmp_path: Path) -> None:
    # The control: the same page before any frame, so without a picture.
    with LiveView("127.0.0.1", 0) as idle:
        chromium(idle.url, tmp_path / "p0", f"--screenshot={tmp_path / 'idle.png'}")
    idle_png = cv2.imread(str(tmp_path / "idle.png"))
    assert flat_share(image_region(idle_png)) > 0.8  # at most the empty placeholder

    with Service(run_args(ckpt, frames=LONG, max_fps=5)) as run:
        url = run.url()
        wait_frames(url, 3)
        chromium(url, tmp_path / "p1", f"--screenshot={tmp_path / 'live.png'}")
        dom = chromium(url, tmp_path / "p2", "--dump-dom").stdout.decode()
        assert run.alive()
        assert run.stop() == 143

    live = cv2.imread(str(tmp_path / "live.png"))
    assert live.shape[:2] == idle_png.shape[:2] == (700, 800)
    region = image_region(live)
    assert region.shape[:2] == (480, 640)  # the 640x480 stream, shown at its size
    assert flat_share(region) < 0.2 and colour_count(region) > 100  # a picture
    rows = re.findall(r'<tr data-track="(\d+)">(.*?)</tr>', dom)
    assert rows, "the objects table was not filled"
    tracks = {int(t) for t, _ in rows}
    classes = set(re.findall(r'<td class="cls">(\w+)</td>', dom))
    assert len(classes) >= 1 and classes <= SYNTH_CLASSES
    assert re.search(r'id="status">frame \d+, \d+ objects, [\d.]+ FPS', dom)
    # The masks are drawn in their tracks' colours (also the table's swatches).
    assert palette_pixels(region, tracks) > 500
    assert palette_pixels(idle_png, tracks) == 0
