"""An HTTP server on a free loopback port, served from a daemon thread: the base of the test suite's fake APIs."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Request:
    """One request a fake received: method, path, query parameters and the JSON body (``None`` without one)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive handler that logs nothing: subclasses read with :meth:`read_body` and answer with :meth:`send`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms delayed-ACK stalls between the header and the body writes

    def log_message(self, *_args: Any) -> None:
        pass

    def read_body(self) -> bytes:
        """The request's body (empty without a ``Content-Length``)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, data: bytes, content_type: str) -> None:
        """Answer ``status`` with ``data`` of ``content_type``."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LoopbackServer:
    """Serves ``handler`` on ``127.0.0.1`` (a free port) from a daemon thread; a context manager.

    Subclasses call :meth:`_serve` in their ``__init__``.
    """

    def _serve(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name=name, daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
