"""Drive a program in a real terminal: tmux runs it, ``send-keys`` types, ``capture-pane`` reads the screen."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

REQUIRE_TMUX = os.environ.get("RHEI_CI") == "1"  # read at import: the autouse fixture clears RHEI_*


def require_tmux() -> str:
    path = shutil.which("tmux")
    if path is None:
        if REQUIRE_TMUX:
            pytest.fail("tmux is required in CI (.ci/run installs it)")
        pytest.skip("tmux is not installed (apt-get install tmux)")
    return path


class Terminal:
    """One tmux server (its own socket) running one command in a WIDTH x HEIGHT pane."""

    def __init__(self, directory: Path, *, width: int = 150, height: int = 40) -> None:
        self.tmux = require_tmux()
        self.socket = Path(tempfile.mkdtemp(prefix="rh-tmux-", dir="/tmp")) / "sock"  # socket paths must be short
        self.exit_file = directory / "exit-code"
        self.width, self.height = width, height

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.tmux, "-S", str(self.socket), *args], capture_output=True, text=True, timeout=30)

    def start(self, command: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> None:
        """Run ``command`` in the pane with only ``env`` (plus PATH and HOME); its exit code lands in :attr:`exit_file`.

        The environment is explicit so that nothing of the test runner's (COLUMNS, LINES, ...) leaks in.
        bash, not sh: after a Ctrl-C that the program handled (and exited from normally), dash would die
        too and take the exit code with it.
        """
        base = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
        }
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**base, **env}.items())
        script = (
            f"cd {shlex.quote(str(cwd))} && env -i {exports} {shlex.join(command)}; "
            f"echo $? > {shlex.quote(str(self.exit_file))}; sleep 600"
        )
        result = self._run(
            "new-session", "-d", "-s", "main", "-x", str(self.width), "-y", str(self.height), "bash", "-c", script
        )
        assert result.returncode == 0, result.stderr

    def send(self, *keys: str, literal: bool = False) -> None:
        self._run("send-keys", "-t", "main", *(["-l"] if literal else []), *keys)

    def type(self, text: str) -> None:
        """Type ``text`` literally (no Enter)."""
        if text.endswith(";"):  # tmux reads a trailing ';' as its own command separator
            text = text[:-1] + "\\;"
        self.send(text, literal=True)

    def screen(self) -> str:
        return self._run("capture-pane", "-p", "-t", "main").stdout

    def wait_for(self, check: str | Callable[[str], bool], timeout: float = 30) -> str:
        """The screen once it contains ``check`` (or satisfies it); fails with the last screen."""
        test = (lambda screen: check in screen) if isinstance(check, str) else check
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if test(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {check!r}; the screen shows:\n{screen}")

    def wait_exit(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exit_file.exists() and self.exit_file.read_text().strip():
                return int(self.exit_file.read_text())
            time.sleep(0.1)
        raise AssertionError(f"the program did not exit; the screen shows:\n{self.screen()}")

    def close(self) -> None:
        self._run("kill-server")
        shutil.rmtree(self.socket.parent, ignore_errors=True)
