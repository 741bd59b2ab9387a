"""The test's handle on a proxy running as a subprocess: its ports, its control calls, its stop.

The proxy module prints ``ports <proxy> <control>`` once it listens; the handle
posts JSON to the control port; closing stdin stops it.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
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
        line = self.process.stdout.readline().decode().split()
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
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
