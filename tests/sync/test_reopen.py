"""Reopening a lake in a new process resumes from the store without re-sending anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SESSION = r"""
import json, sys
import rhei_lake
db, url, step = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
if step == "first":
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL, s TEXT)")
        lake.execute("INSERT INTO t VALUES (1, 1.5, 'old')")
        lake.register_table("t")
        for i in range(2, 30):
            lake.execute("INSERT INTO t VALUES (?, ?, ?)", (i, i / 7, str(i)))
        lake.execute("UPDATE t SET s = 'x' WHERE id < 10")
        out["events"] = lake.sync_now().events
        lake.execute("DELETE FROM t WHERE id = 5")   # captured, not synced before exit
elif step == "second":
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        out["resumed"] = lake.sync_now().events
        out["again"] = lake.sync_now().events
        lake.execute("INSERT INTO t VALUES (100, 0.25, 'new')")
        out["new"] = lake.sync_now().events
else:
    with rhei_lake.open(storage=url) as lake:
        out["tables"] = lake.tables()
        out["rows"] = lake.query("SELECT * FROM t ORDER BY id").to_pylist()
        seqs = lake.query("SELECT _rhei_seq FROM t_changes").column(0).to_pylist()
        out["seqs"] = len(seqs)
        out["unique"] = len(set(seqs))
print(json.dumps(out))
"""


def _run(step: str, db: Path, url: str, options: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SESSION, str(db), url, step],
        cwd=ROOT,
        env={**os.environ, **options},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_reopen_resumes_without_resending(durable_storage, tmp_path):
    import sqlite3

    url, options = durable_storage
    db = tmp_path / "app.db"
    first = _run("first", db, url, options)
    assert first["events"] == 28 + 9  # 28 inserts + 9 updates (the snapshot row landed at register)
    second = _run("second", db, url, options)
    assert second == {"resumed": 1, "again": 0, "new": 1}
    third = _run("read-only", db, url, options)
    assert third["tables"] == ["t"]
    assert third["seqs"] == third["unique"] == 1 + 28 + 9 + 1 + 1
    conn = sqlite3.connect(db)
    expected = [dict(zip(("id", "v", "s"), row)) for row in conn.execute("SELECT * FROM t ORDER BY id")]
    assert third["rows"] == expected
