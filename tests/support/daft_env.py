"""A virtual environment of its own for Daft (and Ray), built once and cached.

Daft 0.7 requires ``pyarrow<26`` while rhei_lake requires ``pyarrow>=26``, so
the two cannot share an environment: Daft reads the lake from a child process
in this one, as any outside engine would. It is built from PyPI on first use
into the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``), keyed by
what it installs, under a lock so that parallel test runs build it once.
Without network (pip cannot install) the Daft tests skip, saying why; in CI
(``RHEI_CI=1``) that is a failure instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

READER_SCRIPT = Path(__file__).with_name("daft_reader.py")
REQUIRE = os.environ.get("RHEI_CI") == "1"


def requirements() -> list[str]:
    # The same deltalake as the suite: Daft reads Delta metadata through it.
    return ["daft>=0.7,<0.8", "ray>=2.50,<3", f"deltalake=={version('deltalake')}"]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rhei_lake" / "test-envs"


def _python_of(env: Path) -> Path:
    return env / "bin" / "python"


class DaftUnavailable(Exception):
    """The Daft environment could not be built (no network, no wheel for this platform)."""


def ensure_env() -> Path:
    """The Python of the cached Daft environment, built if missing."""
    reqs = requirements()
    key = hashlib.sha256(json.dumps([sys.version_info[:2], reqs]).encode()).hexdigest()[:12]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    env = root / f"daft-{key}"
    ready = env / ".ready"
    with open(root / f"daft-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready.exists():
            return _python_of(env)
        shutil.rmtree(env, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [
            [base, "-m", "venv", str(env)],
            [str(_python_of(env)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                shutil.rmtree(env, ignore_errors=True)
                tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
                raise DaftUnavailable(f"{' '.join(step[:4])} failed: {' | '.join(tail)}")
        ready.write_text(" ".join(reqs))
        return _python_of(env)


def daft_python() -> Path:
    """:func:`ensure_env`, skipping the test (failing it in CI) when Daft cannot be installed."""
    try:
        return ensure_env()
    except (DaftUnavailable, subprocess.TimeoutExpired) as exc:
        message = f"Daft's environment could not be built (offline?): {exc}"
        if REQUIRE:
            pytest.fail(message)
        pytest.skip(message)


def run_reader(request: dict, out_dir: Path, *, timeout: float = 600) -> dict:
    """Run ``daft_reader.py`` in the Daft environment on ``request``; returns its JSON reply."""
    python = daft_python()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_DISABLE_DOCKER_CPU_WARNING"] = "1"
    done = subprocess.run(
        [str(python), str(READER_SCRIPT), str(out_dir)],
        input=json.dumps(request), capture_output=True, text=True, timeout=timeout, env=env,
    )
    if done.returncode != 0:
        raise AssertionError(f"the Daft reader failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
