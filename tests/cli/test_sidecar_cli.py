"""``rh sync --config sidecar.toml`` follows an external database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _rh(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "rhei_lake.cli.app", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_rh_sync_with_a_sidecar_config(tmp_path):
    db = tmp_path / "shop.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, updated_at TEXT, deleted_at TEXT)")
    conn.executemany(
        "INSERT INTO orders VALUES (?, 'new', ?, NULL)", [(i, f"2026-01-01T00:00:{i:02d}Z") for i in range(30)]
    )
    config = tmp_path / "sidecar.toml"
    config.write_text(
        f'source = "sqlite://{db}"\nstorage = "{tmp_path / "lake"}"\n\n'
        '[[tables]]\nname = "orders"\nupdated_at = "updated_at"\ndeleted_at = "deleted_at"\n'
    )
    first = _rh("sync", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "synced 30 events" in first.stdout
    conn.execute("UPDATE orders SET deleted_at = 'x', updated_at = '2026-02-01' WHERE id < 5")
    second = _rh("sync", "--config", str(config))
    assert "synced 5 events" in second.stdout, second.stderr
    query = _rh("query", "--storage", str(tmp_path / "lake"), "--format", "csv", "SELECT count(*) AS n FROM orders")
    assert query.stdout.splitlines() == ['"n"', "25"], query.stderr
    info = _rh("info", "--config", str(config))
    assert "sidecar" in info.stdout and "orders" in info.stdout


def test_rh_sync_errors_name_the_problem(tmp_path):
    result = _rh("sync", "--storage", str(tmp_path / "lake"))
    assert result.returncode == 1 and "sidecar" in result.stderr
    config = tmp_path / "bad.toml"
    config.write_text(
        'source = "postgresql://app:hunter2@127.0.0.1:1/shop"\n[[tables]]\nname = "o"\nupdated_at = "u"\n'
    )
    result = _rh("sync", "--config", str(config))
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "hunter2" not in result.stderr and "Traceback" not in result.stderr
