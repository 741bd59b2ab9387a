"""SIGKILL a syncing process at random moments; the changelog still holds every event exactly once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rhei_lake
from tests.support.oracle import assert_same_state
from tests.support.workload import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("RHEI_CRASH_KILLS", "6"))


def _prepare(db: Path) -> None:
    """The tables, plus an audit trigger recording every sequence number SQLite hands out."""
    conn = sqlite3.connect(db, isolation_level=None)
    for ddl in SCHEMA.values():
        conn.execute(ddl)
    conn.close()
    with rhei_lake.open(oltp_path=str(db), storage="memory://") as lake:
        for table in SCHEMA:
            lake.register_table(table)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, tbl TEXT)")
    conn.execute(
        "CREATE TRIGGER audit_log AFTER INSERT ON _rhei_cdc_log WHEN NEW.op != 'S' "
        "BEGIN INSERT INTO audit VALUES (NEW.seq, NEW.tbl); END"
    )
    conn.close()


def _child(db: Path, url: str, env: dict[str, str], seed: int, final: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-m", "tests.support.sync_child", str(db), url, str(seed), "100000"]
    if final:
        args.append("--final")
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_during_sync_loses_and_duplicates_nothing(durable_storage, tmp_path):
    url, options = durable_storage
    db = tmp_path / "app.db"
    _prepare(db)
    env = {**os.environ, **options}
    rng = random.Random(11)
    for kill in range(KILLS):
        child = _child(db, url, env, seed=kill)
        time.sleep(rng.uniform(0.8, 2.5))
        assert child.poll() is None, child.stderr.read().decode()
        child.send_signal(signal.SIGKILL)
        child.wait()
    final = _child(db, url, env, seed=0, final=True)
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()

    conn = sqlite3.connect(db, isolation_level=None)
    audited = {tbl: [] for tbl in SCHEMA}
    for seq, tbl in conn.execute("SELECT seq, tbl FROM audit ORDER BY seq"):
        audited[tbl].append(seq)
    assert sum(len(v) for v in audited.values()) > 50, "the children made too few changes to prove anything"
    with rhei_lake.open(storage=url, storage_options=options) as lake:
        for table in SCHEMA:
            seqs = lake.query(f"SELECT _rhei_seq FROM {table}_changes ORDER BY _rhei_seq").column(0).to_pylist()
            assert len(seqs) == len(set(seqs)), f"{table}: an event was committed twice"
            assert seqs == audited[table], f"{table}: changelog differs from the events SQLite produced"
            assert_same_state(lake, conn, table)
