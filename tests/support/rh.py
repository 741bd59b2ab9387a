"""Run the installed ``rh`` console script as a user would: a subprocess with this checkout first on PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RH = Path(sys.executable).parent / "rh"
"""The console script pip installed next to this interpreter (``make setup`` installs the package)."""


def rh_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment, with this checkout's ``rhei_lake`` first on PYTHONPATH."""
    assert RH.exists(), f"the rh console script is not installed at {RH}: run `make setup`"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "200",
    }  # wide enough that tables do not wrap the paths the tests look for
    env.update(extra or {})
    return env


def rh(
    *args: str,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``rh ARGS``; returns the finished process (text output, never raises on a non-zero exit)."""
    return subprocess.run(
        [str(RH), *args], capture_output=True, text=True, cwd=cwd, env=rh_env(env), input=input, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``error: ...`` line a failing command must print (asserts there is exactly that)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]
