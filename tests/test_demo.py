"""``make demo``: time travel and restore over a history of seconds, next commands, no Python reprs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import rhei_lake

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_shows_time_travel_restore_and_what_to_try_next(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rhei_lake.demo", "--dir", str(tmp_path), "--orders", "2000"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert "(time travel)" in out and "the same as the lake's" in out, out
    for command in (
        "rh repl --db demo.db",
        'rh query --db demo.db "SELECT',
        "rh query --db demo.db --as-of 20",
        "rh restore --storage demo.db-lake --as-of 20",
    ):
        assert command in out, command
    assert not re.search(r"\('[^']*',\)|datetime\.datetime\(|<rhei_lake|SyncReport\(", out), out
    with rhei_lake.open(storage=str(tmp_path / "demo.db-lake")) as lake:
        span = lake.query("SELECT max(_rhei_valid_from) - min(_rhei_valid_from) AS span FROM orders_history")
    assert span.column(0)[0].as_py().total_seconds() > 1  # a history of seconds, so an instant between is easy to name
    assert (tmp_path / "demo-restored.db").exists()


def test_the_license_is_an_spdx_string_setuptools_reads_without_a_warning():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # the table form is deprecated (a warning on every build)
    assert "setuptools>=77" in project["build-system"]["requires"]  # the first release that reads SPDX strings
