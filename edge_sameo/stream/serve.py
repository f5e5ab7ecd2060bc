"""The live view of a run over HTTP, for devices without a screen (``edge-sameo run --serve
PORT``): a standard-library server in a daemon thread, fed by the render/write stage as a
:class:`~edge_sameo.stream.app.ResultSink`.

Routes:

- ``/``: a self-contained HTML page (no external assets) with the annotated stream and a
  table of the latest frame's objects, refreshed by inline JavaScript polling ``/objects``;
- ``/stream.mjpg``: the annotated frames as MJPEG (``multipart/x-mixed-replace``);
- ``/objects``: the latest frame's JSONL record (:meth:`FrameResult.to_json`);
- ``/health``: ``{"status": "ok", "frames": n}`` while the run goes on;
- ``/metrics``: Prometheus text format, or JSON with ``?format=json``: FPS, per-stage and
  end-to-end latency over the recent frames, dropped frames, reconnects.

The pipeline never waits for a client: each frame is JPEG-encoded once (only while a stream
client is connected), kept as the latest frame and shared by every client; a slow client
skips the frames it had no time for.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
from numpy.typing import NDArray

from edge_sameo.annotators import PALETTE
from edge_sameo.errors import InputError
from edge_sameo.stream.pipeline import FrameResult
from edge_sameo.stream.sources import FrameSource

log = logging.getLogger(__name__)

#: Recent frames the latency medians of ``/metrics`` cover.
METRICS_WINDOW = 120
#: Seconds of recent frames ``/metrics`` counts for its FPS (0 once the frames stop).
FPS_WINDOW_S = 5.0
#: The MJPEG part boundary.
BOUNDARY = b"edge-sameo-frame"


class LiveView:
    """Serves the live view of a run on ``host:port`` (``port`` 0: a free one, see
    :attr:`url`) from the moment it is made until :meth:`close`.

    ``source``: the run's frame source, read for its ``dropped`` and ``reconnects``
    counters (may be set after construction; None: reported as 0). ``quality``: JPEG
    quality, 1..100. Raises :class:`InputError` when the address cannot be listened on
    (a port in use, an address not of this machine)."""

    #: No file: nothing to keep for a failed run.
    path: Path | None = None

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        source: FrameSource | None = None,
        quality: int = 80,
    ) -> None:
        if not 0 <= port <= 65535:
            raise InputError(f"--serve: expected a port in 0..65535, got {port}")
        if not host.strip():  # "" would listen on every network (an unset shell variable)
            raise InputError("--serve-host: empty address; give 127.0.0.1, or 0.0.0.0 for all")
        if not 1 <= quality <= 100:
            raise InputError(f"JPEG quality must be in 1..100, got {quality}")
        self.source = source
        self.quality = quality
        self._cond = threading.Condition()
        self._closed = False
        self._frames = 0
        self._record = b""  # the latest /objects body
        self._jpeg = b""
        self._jpeg_index = -1  # the frame index of _jpeg
        self._latest_index = -1  # the frame index of the latest frame
        self._clients = 0
        self._arrivals: deque[float] = deque(maxlen=METRICS_WINDOW)
        self._stages: deque[dict[str, float]] = deque(maxlen=METRICS_WINDOW)
        self._latency: deque[float] = deque(maxlen=METRICS_WINDOW)
        self._objects = 0
        self._server = _bind(host, port, self)
        bound_host, bound_port = self._server.server_address[:2]
        name = str(bound_host)
        shown = f"[{name}]" if ":" in name else name
        #: Where the page is served, with the port actually bound (``port`` 0 picks one).
        self.url = f"http://{shown}:{bound_port}/"
        self.port = int(bound_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="live-view", daemon=True
        )
        self._thread.start()

    @property
    def wants_image(self) -> bool:
        """The annotated frame is drawn for the view only while someone watches the stream."""
        return self._clients > 0

    def write(
        self, result: FrameResult, record: dict[str, Any], annotated: NDArray[np.uint8] | None
    ) -> None:
        """Make ``result`` the latest frame. ``record``: its JSONL record; ``annotated``:
        (H, W, 3) uint8 RGB, encoded to JPEG here when a stream client is connected."""
        jpeg = None
        # Read without the lock: a client that joins meanwhile waits for the next frame.
        if annotated is not None and self._clients:
            bgr = cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if ok:
                jpeg = buf.tobytes()
        body = json.dumps(record, separators=(",", ":")).encode()
        with self._cond:
            self._frames += 1
            self._record = body
            self._latest_index = result.index
            self._objects = len(record.get("objects", ()))
            self._arrivals.append(time.monotonic())
            self._stages.append(dict(result.timings))
            self._latency.append(result.latency_ms)
            if jpeg is not None:
                self._jpeg, self._jpeg_index = jpeg, result.index
            self._cond.notify_all()

    def close(self, commit: bool = True) -> None:
        """Stop serving: stream clients are ended, the port is released (idempotent)."""
        with self._cond:
            if self._closed:
                return None
            self._closed = True
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        self._thread.join()
        return None

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the handlers read (under the lock, copied out) --------------------------

    def frames(self) -> int:
        with self._cond:
            return self._frames

    def latest_record(self) -> bytes:
        with self._cond:
            return self._record

    def next_jpeg(self, after: int) -> tuple[int, bytes] | None:
        """Wait for a frame newer than frame index ``after``; None once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._jpeg_index > after)
            if self._closed:
                return None
            return self._jpeg_index, self._jpeg

    def join(self) -> int:
        """A stream client came: frames are JPEG-encoded while any is there. Returns the
        frame index to pass to :meth:`next_jpeg` first (the latest frame is sent at once
        when it was encoded, else the client waits for the next one)."""
        with self._cond:
            self._clients += 1
            fresh = bool(self._jpeg) and self._jpeg_index == self._latest_index
            return self._jpeg_index - 1 if fresh else self._latest_index

    def leave(self) -> None:
        """A stream client went."""
        with self._cond:
            self._clients -= 1

    def metrics(self) -> dict[str, Any]:
        """The ``/metrics`` numbers: ``fps`` over the last :data:`FPS_WINDOW_S` seconds,
        latency medians (ms) over the last :data:`METRICS_WINDOW` frames."""
        with self._cond:
            now = time.monotonic()
            recent = [t for t in self._arrivals if t >= now - FPS_WINDOW_S]
            stages: dict[str, list[float]] = {}
            for timings in self._stages:
                for k, v in timings.items():
                    stages.setdefault(k, []).append(v)
            latency = list(self._latency)
            frames, objects, clients = self._frames, self._objects, self._clients
        span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
        source = self.source
        return {
            "frames": frames,
            "fps": round((len(recent) - 1) / span, 2) if span > 0 else 0.0,
            "stage_p50_ms": {k: round(float(np.median(v)), 2) for k, v in stages.items()},
            "latency_p50_ms": round(float(np.median(latency)), 2) if latency else 0.0,
            "latency_p95_ms": round(float(np.percentile(latency, 95)), 2) if latency else 0.0,
            "dropped_frames": int(getattr(source, "dropped", 0)),
            "reconnects": int(getattr(source, "reconnects", 0)),
            "objects": objects,
            "stream_clients": clients,
            "window_frames": len(latency),
        }


def prometheus_text(metrics: dict[str, Any]) -> str:
    """:meth:`LiveView.metrics` in the Prometheus text exposition format (0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, doc: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP edge_sameo_{name} {doc}")
        lines.append(f"# TYPE edge_sameo_{name} {kind}")
        lines.extend(f"edge_sameo_{name}{labels} {value:g}" for labels, value in samples)

    m = metrics
    metric("frames_total", "counter", "Frames processed.", [("", m["frames"])])
    metric("fps", "gauge", f"Frames per second over the last {FPS_WINDOW_S:g} s.",
           [("", m["fps"])])  # fmt: skip
    stages = [(f'{{stage="{k}"}}', v) for k, v in m["stage_p50_ms"].items()]
    metric("stage_latency_p50_ms", "gauge",
           f"Median latency of each stage over the last {METRICS_WINDOW} frames, ms.",
           stages)  # fmt: skip
    for q in ("p50", "p95"):
        metric(f"latency_{q}_ms", "gauge",
               f"End-to-end latency ({q}, frame read to result) over the last "
               f"{METRICS_WINDOW} frames, ms.", [("", m[f"latency_{q}_ms"])])  # fmt: skip
    metric("dropped_frames_total", "counter", "Frames the source dropped to keep up.",
           [("", m["dropped_frames"])])  # fmt: skip
    metric("reconnects_total", "counter", "Reconnections of a live source.",
           [("", m["reconnects"])])  # fmt: skip
    metric("objects", "gauge", "Objects in the latest frame.", [("", m["objects"])])
    metric("stream_clients", "gauge", "Clients watching /stream.mjpg.",
           [("", m["stream_clients"])])  # fmt: skip
    return "\n".join(lines) + "\n"


class _Server(ThreadingHTTPServer):
    """Keeps its open connections, so :meth:`LiveView.close` can end them at once (a
    stream client would otherwise hold its thread and socket until it disconnects)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: LiveView, family: int) -> None:
        self.address_family = family
        self.view = view
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(address, _Handler)
        # Bound to this machine only: answer requests that name this machine only, so a web
        # page elsewhere cannot reach the camera through DNS rebinding.
        self.loopback = _local_host(str(self.server_address[0]))

    def server_bind(self) -> None:
        # HTTPServer's own also resolves the host's name (socket.getfqdn): a reverse DNS
        # lookup that can stall for seconds on a robot without a name server.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback on stderr for any handler error; a client that
        # went away mid-response is not one the user should read about.
        log.debug("live view: error serving %s", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.lock:
            open_now = list(self.connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:  # already gone
                pass


def _local_host(header: str) -> bool:
    """Whether an HTTP ``Host`` header (or a bare address) names this machine
    (``localhost``, 127.0.0.0/8, ::1)."""
    try:
        name = urlsplit(f"//{header}").hostname or header  # a bare IPv6 address: "::1"
    except ValueError:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int, view: LiveView) -> _Server:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a host name
        family = socket.AF_INET
    try:
        return _Server((host, port), view, family)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"--serve: port {port} on {host} is already in use "
                "(pick another port, or 0 for a free one)"
            ) from None
        if exc.errno == errno.EACCES:
            raise InputError(
                f"--serve: no permission to listen on port {port} (ports below 1024 need "
                "privileges; pick 1024 or above)"
            ) from None
        reason = exc.strerror or str(exc)
        raise InputError(f"--serve-host: cannot listen on {host}:{port}: {reason}") from None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    #: Seconds a client may stall a read or write before its connection is dropped: a
    #: client that stops reading must not hold a thread and a socket for ever.
    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("live view: " + format, *args)

    def do_GET(self) -> None:
        if self.server.loopback and not _local_host(self.headers.get("Host", "")):
            self._send(403, b"forbidden: not a local Host\n", "text/plain; charset=utf-8")
            return
        url = urlsplit(self.path)
        routes: dict[str, Callable[[dict[str, list[str]]], None]] = {
            "/": self._page,
            "/index.html": self._page,
            "/stream.mjpg": self._stream,
            "/objects": self._objects,
            "/health": self._health,
            "/metrics": self._metrics,
        }
        route = routes.get(url.path)
        try:
            if route is None:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")
            else:
                route(parse_qs(url.query))
        except (ConnectionError, TimeoutError):  # the client went away or stalled
            self.close_connection = True

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _page(self, query: dict[str, list[str]]) -> None:
        self._send(200, PAGE.encode(), "text/html; charset=utf-8")

    def _objects(self, query: dict[str, list[str]]) -> None:
        body = self.server.view.latest_record()
        if not body:
            self._json(503, {"error": "no frame yet"})
            return
        self._send(200, body, "application/json")

    def _health(self, query: dict[str, list[str]]) -> None:
        self._json(200, {"status": "ok", "frames": self.server.view.frames()})

    def _metrics(self, query: dict[str, list[str]]) -> None:
        metrics = self.server.view.metrics()
        if query.get("format", [""])[0] == "json":
            self._json(200, metrics)
            return
        text = prometheus_text(metrics).encode()
        self._send(200, text, "text/plain; version=0.0.4; charset=utf-8")

    def _stream(self, query: dict[str, list[str]]) -> None:
        view = self.server.view
        self.send_response(200)
        boundary = BOUNDARY.decode()
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={boundary}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        index = view.join()
        try:
            while (item := view.next_jpeg(index)) is not None:
                index, jpeg = item
                # X-Frame-Index: the frame's index, as in its /objects record
                head = (
                    b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n"
                    b"X-Frame-Index: %d\r\n\r\n"
                )
                self.wfile.write(head % (BOUNDARY, len(jpeg), index) + jpeg + b"\r\n")
        finally:
            view.leave()


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edge-sameo live view</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 12px; background: #111; color: #eee; }
  h1 { font-size: 16px; margin: 0 0 8px; }
  #status { color: #aaa; margin-bottom: 8px; min-height: 1.2em; }
  #view { max-width: 100%; background: #222; display: block; min-height: 120px; }
  table { border-collapse: collapse; margin-top: 10px; }
  th, td { padding: 2px 10px; text-align: right; border-bottom: 1px solid #333; }
  th { color: #aaa; font-weight: normal; }
  td.cls { text-align: left; }
  .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; }
</style>
</head>
<body>
<h1>edge-sameo live view</h1>
<div id="status">waiting for the first frame&hellip;</div>
<img id="view" src="/stream.mjpg" alt="annotated stream">
<table id="objects">
<thead><tr><th></th><th>track</th><th>class</th><th>score</th><th>occluded</th>
<th>order</th><th>behind</th></tr></thead>
<tbody></tbody>
</table>
<script>
"use strict";
const PALETTE = __PALETTE__;
function colour(trackId) {
  const c = PALETTE[Math.max(trackId, 0) % PALETTE.length];
  return "rgb(" + c.join(",") + ")";
}
function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function show(record, metrics) {
  const body = document.querySelector("#objects tbody");
  body.replaceChildren();
  for (const o of record.objects) {
    const row = body.insertRow();
    row.dataset.track = o.track_id;
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = colour(o.track_id);
    cell(row, "").appendChild(sw);
    cell(row, o.track_id);
    cell(row, o.class_name, "cls");
    cell(row, o.score.toFixed(2));
    cell(row, (100 * o.occlusion_ratio).toFixed(0) + "%");
    cell(row, o.order);
    cell(row, o.occluded_by.join(", "));
  }
  let text = "frame " + record.frame + ", " + record.objects.length + " objects";
  if (metrics) {
    text += ", " + metrics.fps.toFixed(1) + " FPS, latency p50 " +
      metrics.latency_p50_ms.toFixed(0) + " ms, dropped " + metrics.dropped_frames +
      ", reconnects " + metrics.reconnects;
  }
  document.getElementById("status").textContent = text;
}
async function poll() {
  try {
    const r = await fetch("/objects", {cache: "no-store"});
    if (r.ok) {
      const record = await r.json();
      let metrics = null;
      const m = await fetch("/metrics?format=json", {cache: "no-store"});
      if (m.ok) metrics = await m.json();
      show(record, metrics);
    }
  } catch (e) {
    document.getElementById("status").textContent = "the run has ended (no connection)";
  }
  setTimeout(poll, 500);
}
poll();
</script>
</body>
</html>
""".replace("__PALETTE__", json.dumps([list(c) for c in PALETTE]))
