"""Tools the suite installs from a package registry on first use, cached in the user's cache folder.

``$XDG_CACHE_HOME/rhei_lake/test-envs`` (or ``~/.cache/...``): built once per
machine under a lock, so parallel test runs build it once. When the install
fails (offline, no wheel for this platform) the test skips saying why; in CI
(``RHEI_CI=1``) that is a failure instead.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REQUIRE = os.environ.get("RHEI_CI") == "1"


class ToolUnavailable(Exception):
    """A tool could not be installed."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rhei_lake" / "test-envs"


def run_step(step: list[str], *, cwd: Path | None = None, timeout: float = 900) -> None:
    """Run one install step; ToolUnavailable with its last lines of output if it fails."""
    try:
        done = subprocess.run(step, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolUnavailable(f"{' '.join(step[:4])}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise ToolUnavailable(f"{' '.join(step[:4])} failed: {' | '.join(tail)}")


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` in the cache, made by ``build(folder)`` unless a complete one is there."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / ".ready").exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        try:
            build(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder / ".ready").write_text("ok")
        return folder


def skip_or_fail(reason: str) -> None:
    """Skip the test (fail it in CI, where every tool must be installable)."""
    if REQUIRE:
        pytest.fail(f"RHEI_CI=1: {reason}")
    pytest.skip(reason)
