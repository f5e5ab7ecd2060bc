"""The live MJPEG test stream: JPEG frames over HTTP as ``multipart/x-mixed-replace``, as IP
cameras send them. Used by the stream tests and by ``benchmarks/soak.py``."""

from __future__ import annotations

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


class MjpegServer(ThreadingHTTPServer):
    """Counts the frames it ``served``; ``cut`` ends every connection after its current
    frame; :meth:`drop` ends them now and answers 503 for a while (a stream gone)."""

    daemon_threads = True
    cut = False
    served = 0
    epoch = 0
    down_until = 0.0

    def drop(self, down_s: float = 0.0) -> None:
        """End every connection now and refuse new ones (503) for ``down_s`` seconds."""
        self.down_until = time.monotonic() + down_s
        self.epoch += 1


def mjpeg_server(frames: list[bytes], fps: float) -> tuple[MjpegServer, int]:
    """A :class:`MjpegServer` on 127.0.0.1 (a free port) sending ``frames`` in a loop."""

    class Handler(BaseHTTPRequestHandler):
        server: MjpegServer

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            srv = self.server
            if time.monotonic() < srv.down_until:
                self.send_error(503)
                return
            epoch = srv.epoch
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
            self.end_headers()
            try:
                for i in itertools.count():
                    jpg = frames[i % len(frames)]
                    head = b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    self.wfile.write(head % len(jpg) + jpg + b"\r\n")
                    srv.served += 1
                    time.sleep(1 / fps)
                    if srv.cut or srv.epoch != epoch:
                        return
            except OSError:
                return

    srv = MjpegServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def jpeg_frames() -> list[bytes]:
    frames = []
    for k in range(5):
        img = np.full((120, 160, 3), 40 * k, np.uint8)
        cv2.rectangle(img, (20 + 5 * k, 20), (80, 90), (255, 255, 255), -1)
        frames.append(cv2.imencode(".jpg", img)[1].tobytes())
    return frames
