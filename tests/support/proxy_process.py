"""The test's handle on a proxy running as a subprocess: its ports, its control calls, its stop.

The proxy module prints ``ports <proxy> <control>`` once it listens; the handle
posts JSON to the control port; closing stdin stops it.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class ProxyProcess:
    """A proxy subprocess (``python -m module *args``) forwarding to an upstream server."""

    def __init__(self, module: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # both piped
        self._stdin, self._stdout = self.process.stdin, self.process.stdout
        line = self._stdout.readline().decode().split()
        if len(line) != 3 or line[0] != "ports":
            self.process.kill()
            raise RuntimeError(f"{module} did not start: {line}")
        self.port, self._control = int(line[1]), int(line[2])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, verb: str, payload: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self._control, timeout=30)
        try:
            conn.request("POST", f"/{verb}", body=json.dumps(payload or {}))
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self._stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stdout.close()


def serve_control(
    control: Callable[[str, dict], object], proxy_port: int, base: type[BaseHTTPRequestHandler] = BaseHTTPRequestHandler
) -> None:
    """The proxy process's side of :class:`ProxyProcess`: answer ``POST /<verb>`` with
    ``control(verb, payload)`` as JSON, print the ports, and run until stdin closes (or the parent dies)."""

    class Control(base):  # type: ignore[misc, valid-type]
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            answer = json.dumps(control(self.path.strip("/"), payload)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ports {proxy_port} {server.server_address[1]}", flush=True)
    sys.stdin.read()


def read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The body of the request ``handler`` is answering: chunked or by Content-Length."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
