"""``rh serve --headless`` as a child process: its JSON log lines, and its /metrics scraped over HTTP."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.rh import RH, rh_env


class ServeProcess:
    """A running ``rh serve``; :meth:`event` waits for a log line of a given ``event``."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [str(RH), "serve", "--headless", *args],
            cwd=cwd,
            env=rh_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), daemon=True).start()

    def _read_stdout(self) -> None:
        for raw in self.process.stdout:
            line = json.loads(raw)  # every stdout line must be one JSON object
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def event(self, name: str, timeout: float = 60, where: Any = None) -> dict[str, Any]:
        """The next log line whose ``event`` is ``name`` (and that ``where(line)`` accepts); fails if the process
        exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"rh serve exited ({self.process.wait()}) before {name!r}: {self.stderr}")
            if line.get("event") == name and (where is None or where(line)):
                return line
        raise AssertionError(f"no {name!r} line within {timeout}s; lines: {self.lines[-5:]}; stderr: {self.stderr}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))
