"""An HTTP proxy in front of the moto S3 server that counts requests and delays each one.

What an object store costs from a VM is mostly its round trips (20-50 ms a
request), which moto on localhost does not have. Every request through this
proxy waits ``delay`` seconds before it is forwarded, and is counted by method
and path, so a benchmark can report requests per operation and the time they
cost at a chosen latency.

It runs as a subprocess (some deltalake calls hold the GIL while they wait for
the network, so a proxy thread in the benchmark's own process would wait with
them) and is driven over a control port. Replies go out in one write with
``TCP_NODELAY`` on every socket: headers and body in two small writes without
it stall ~40 ms per request on Linux (Nagle's algorithm meeting delayed ACKs).
Binds 127.0.0.1 only; exits when its parent closes its stdin.
"""

from __future__ import annotations

import http.client
import socket
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.proxy_process import ProxyProcess, read_request_body, serve_control

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class LatencyProxy(ProxyProcess):
    """The benchmark's handle on a proxy subprocess forwarding to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        super().__init__("tests.support.s3_latency_proxy", upstream, str(delay))

    def set_delay(self, seconds: float) -> None:
        self._call("delay", {"seconds": seconds})

    def reset(self) -> None:
        """Start counting from zero."""
        self._call("reset")

    def requests(self) -> dict:
        """``{"total": n, "by_method": {...}, "paths": ["GET /bucket/key", ...], "ranges": [...]}`` since the last reset.

        ``ranges[i]`` is the ``Range`` header of request ``paths[i]`` (``None`` without one): which part
        of an object a GET asked for, to tell a second fetch of the same bytes from a read of another part.
        """
        return self._call("stats")


# -- the proxy process ---------------------------------------------------------
class _State:
    def __init__(self, upstream: str, delay: float) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port or 80))
        self.delay = delay
        self.lock = threading.Lock()
        self.by_method: Counter[str] = Counter()
        self.paths: list[str] = []
        self.ranges: list[str | None] = []

    def count(self, method: str, path: str, byte_range: str | None) -> None:
        with self.lock:
            self.by_method[method] += 1
            self.paths.append(f"{method} {path}")
            self.ranges.append(byte_range)

    def control(self, verb: str, payload: dict) -> dict:
        with self.lock:
            if verb == "delay":
                self.delay = float(payload["seconds"])
            elif verb == "reset":
                self.by_method.clear()
                self.paths.clear()
                self.ranges.clear()
            return {
                "total": sum(self.by_method.values()),
                "by_method": dict(self.by_method),
                "paths": self.paths,
                "ranges": self.ranges,
            }


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffered: a reply is one write at flush

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._upstream: http.client.HTTPConnection | None = None

    def _body(self) -> bytes:
        return read_request_body(self)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        for attempt in range(2):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(*self.state.upstream, timeout=60)
                self._upstream.connect()
                self._upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                response = self._upstream.getresponse()
                return response.status, response.reason, response.getheaders(), response.read()
            except (http.client.HTTPException, OSError):
                self._upstream.close()
                self._upstream = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handle(self) -> None:
        body = self._body()
        self.state.count(self.command, self.path, self.headers.get("Range"))
        if self.state.delay:
            time.sleep(self.state.delay)
        status, reason, headers, data = self._forward(body)
        self.send_response(status, reason)
        length = str(len(data))
        for key, value in headers:
            if key.lower() == "content-length" and self.command == "HEAD":
                length = value  # the object's size: a HEAD reply has no body to measure
            elif key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-request


def _serve(upstream: str, delay: float) -> None:
    state = _State(upstream, delay)
    handler = type("Handler", (_Handler,), {"state": state})
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    serve_control(state.control, server.server_address[1])


if __name__ == "__main__":
    _serve(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
