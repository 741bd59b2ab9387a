"""A virtual environment of its own for Daft (and Ray), built once and cached.

Daft 0.7 requires ``pyarrow<26`` while rhei_lake requires ``pyarrow>=26``, so
the two cannot share an environment: Daft reads the lake from a child process
in this one, as any outside engine would. It is built from PyPI on first use
into the suite's tool cache (:mod:`tests.support.tool_cache`), keyed by what
it installs. Without network the Daft tests skip, saying why; in CI
(``RHEI_CI=1``) that is a failure instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tests.support.tool_cache import ToolUnavailable, cached, run_step, skip_or_fail

READER_SCRIPT = Path(__file__).with_name("daft_reader.py")


def requirements() -> list[str]:
    # The same deltalake as the suite: Daft reads Delta metadata through it.
    return ["daft>=0.7,<0.8", "ray>=2.50,<3", f"deltalake=={version('deltalake')}"]


def ensure_env() -> Path:
    """The Python of the cached Daft environment, built if missing."""
    reqs = requirements()
    key = hashlib.sha256(json.dumps([sys.version_info[:2], reqs]).encode()).hexdigest()[:12]

    def build(env: Path) -> None:
        run_step([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(env)])
        run_step([str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *reqs])

    return cached(f"daft-{key}", build) / "bin" / "python"


def daft_python() -> Path:
    """:func:`ensure_env`, skipping the test (failing it in CI) when Daft cannot be installed."""
    try:
        return ensure_env()
    except ToolUnavailable as exc:
        skip_or_fail(f"Daft's environment could not be built (offline?): {exc}")
        raise


def run_reader(request: dict, out_dir: Path, *, timeout: float = 600) -> dict:
    """Run ``daft_reader.py`` in the Daft environment on ``request``; returns its JSON reply."""
    python = daft_python()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_DISABLE_DOCKER_CPU_WARNING"] = "1"
    done = subprocess.run(
        [str(python), str(READER_SCRIPT), str(out_dir)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if done.returncode != 0:
        raise AssertionError(f"the Daft reader failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
