"""An HTTP proxy in front of the moto S3 server that injects faults into chosen requests.

It runs as a subprocess: some deltalake calls hold the GIL while they wait for
the network, so a proxy thread inside the test process would wait with them.
The test drives it through :class:`S3FaultProxy`, over a control port.

Rules match a request by method and a regular expression on its path, and act
on the next ``times`` matching requests:

``error``       answer with an S3 error (``status``, ``code``) without forwarding: 503 SlowDown, 500 ...
``delay``       wait ``seconds`` before forwarding (a slow store)
``drop_reply``  forward the request, let the server act on it, then cut the connection without
                answering: the write succeeded but its reply was lost (delta-rs issues 2279, 2609)
``reset``       cut the connection without forwarding

:meth:`S3FaultProxy.down` makes the port refuse connections (an outage) until
:meth:`S3FaultProxy.up`. Every injected fault is counted. Binds 127.0.0.1 only,
and exits when the test process goes away (its stdin closes).
"""

from __future__ import annotations

import http.client
import re
import socket
import sys
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.proxy_process import ProxyProcess, read_request_body, serve_control

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Rule:
    action: str
    method: str = "PUT"
    path: str = ".*"
    times: int = 1
    status: int = 503
    code: str = "SlowDown"
    seconds: float = 0.0


class S3FaultProxy(ProxyProcess):
    """The test's handle on a proxy subprocess forwarding to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str) -> None:
        super().__init__("tests.support.s3_fault_proxy", upstream)

    def add(self, rule: Rule) -> None:
        self._call("add", asdict(rule))

    def clear(self) -> None:
        self._call("clear")

    def injected(self) -> dict[str, int]:
        """Faults injected so far, by action (``outage`` counts :meth:`down` calls)."""
        return self._call("stats")["injected"]

    def pending(self) -> int:
        """Matches the rules still wait for."""
        return self._call("stats")["pending"]

    def down(self) -> None:
        self._call("down")

    def up(self) -> None:
        self._call("up")


# -- the proxy process ---------------------------------------------------------
class _Proxy:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port or 80))
        self.rules: list[tuple[Rule, list[int]]] = []
        self.injected: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.connections: set[socket.socket] = set()
        self.port = 0

    def take(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule, hits in self.rules:
                if hits[0] < rule.times and method == rule.method and re.search(rule.path, path):
                    hits[0] += 1
                    self.injected[rule.action] += 1
                    return rule
        return None

    def up(self) -> None:
        if self.server is not None:
            return
        proxy = self

        class Handler(_DataHandler):
            owner = proxy

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.handle_error = lambda *_: None  # clients that hang up are part of the game
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and cut the open ones (clients keep connections alive in pools)."""
        server, self.server = self.server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        with self.lock:
            open_connections, self.connections = self.connections, set()
            if server is not None:
                self.injected["outage"] += 1
        for conn in open_connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def control(self, verb: str, payload: dict) -> dict:
        if verb == "add":
            with self.lock:
                self.rules.append((Rule(**payload), [0]))
        elif verb == "clear":
            with self.lock:
                self.rules.clear()
        elif verb == "down":
            self.down()
        elif verb == "up":
            self.up()
        with self.lock:
            pending = sum(max(rule.times - hits[0], 0) for rule, hits in self.rules)
            return {"injected": dict(self.injected), "pending": pending}


class _Replies(BaseHTTPRequestHandler):
    """Each reply leaves in one write with Nagle off: headers and body written apart, the body
    waited for the client's delayed ACK of the headers (~40 ms per request with obstore)."""

    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # buffered: handle_one_request() flushes headers and body together

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _DataHandler(_Replies):
    owner: _Proxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def _body(self) -> bytes:
        return read_request_body(self)

    def _cut(self) -> None:
        self.close_connection = True
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def setup(self) -> None:
        super().setup()
        with self.owner.lock:
            self.owner.connections.add(self.connection)

    def finish(self) -> None:
        with self.owner.lock:
            self.owner.connections.discard(self.connection)
        with suppress(OSError):
            super().finish()

    def _handle(self) -> None:
        body = self._body()
        if self.owner.server is None:  # went down while this request was on its way
            self._cut()
            return
        rule = self.owner.take(self.command, self.path)
        if rule is not None and rule.action == "reset":
            self._cut()
            return
        if rule is not None and rule.action == "error":
            payload = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{rule.code}</Code>'
                f"<Message>injected {rule.code}</Message><RequestId>fault</RequestId></Error>"
            ).encode()
            self.send_response(rule.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if rule is not None and rule.action == "delay":
            time.sleep(rule.seconds)
        status, reason, headers, data = self._forward(body)
        if rule is not None and rule.action == "drop_reply":
            self._cut()
            return
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

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def _serve(upstream: str) -> None:
    proxy = _Proxy(upstream)
    proxy.up()

    serve_control(proxy.control, proxy.port, _Replies)


if __name__ == "__main__":
    _serve(sys.argv[1])
