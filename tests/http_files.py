"""A real HTTP server for URL-input tests, on 127.0.0.1 in its own thread.

Its own thread, not the test's event loop: Litestar's AsyncTestClient runs the app through a
blocking portal, so a server on the test's loop could not answer while the app fetches from it.

Routes: `/files/<name>` (the bytes in `files`, else 404), `/endless` (1 MiB with no
Content-Length: only counting stops it), `/slow` (answers after 3 s), `/redirect?to=<url>`
(302) and `/loop` (redirects to itself).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclasses.dataclass
class FileServer:
    base: str
    files: dict[str, bytes]


@contextlib.contextmanager
def serve_files() -> Iterator[FileServer]:
    box = FileServer(base="", files={})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path.startswith("/files/"):
                data = box.files.get(parts.path.removeprefix("/files/"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif parts.path == "/endless":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                for _ in range(64):
                    self.wfile.write(b"\0" * 16384)
                self.close_connection = True
            elif parts.path == "/slow":
                time.sleep(3)
                self.send_error(200)
            elif parts.path in ("/redirect", "/loop"):
                to = parse_qs(parts.query).get("to", ["/loop"])[0]
                self.send_response(302)
                self.send_header("Location", to)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(404)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    box.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield box
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
