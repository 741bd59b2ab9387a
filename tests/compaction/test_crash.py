"""SIGKILL a compaction job at random moments while the app keeps syncing; rerun; history is exact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import rhei_lake
from rhei_lake.catalog import SEQ, VALID_FROM, VALID_TO
from rhei_lake.timeutil import to_micros
from tests.support.history_model import HistoryModel, assert_same_history
from tests.support.oracle import _sort_key, assert_same_state
from tests.support.workload import SCHEMA, Workload, create_tables

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"items": ("id",), "pairs": ("region", "code")}
KILLS = int(os.environ.get("RHEI_COMPACT_CRASH_KILLS", "6"))


def _child(url: str, env: dict[str, str], retention: str = "0") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.compact_child", url, retention],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(child: subprocess.Popen) -> None:
    line = child.stdout.readline()
    assert line.strip() == "ready", f"child failed to start: {line!r} {child.stderr.read()}"


def _stored_history(lake: rhei_lake.Lake, table: str) -> list[tuple]:
    """The history Delta table itself (not the merge-on-read view), as (row..., from, to)."""
    store = lake.storage.table_store(table, "history")
    store.refresh()
    names = lake.table_spec(table).column_names
    rows = []
    for r in store.to_arrow().to_pylist():
        valid_to = r[VALID_TO]
        rows.append(
            tuple(r[n] for n in names) + (to_micros(r[VALID_FROM]), None if valid_to is None else to_micros(valid_to))
        )
    return sorted(rows, key=_sort_key)


def test_sigkill_during_compaction_then_rerun_leaves_exact_history(durable_lake, tmp_path):
    url, options = durable_lake
    env = {**os.environ, **options, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    db = tmp_path / "app.db"
    reader = create_tables(db)
    rng = random.Random(5)
    workload = Workload(5, key_space=40)
    with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=4) as lake:
        for table in SCHEMA:
            lake.register_table(table)
        model = HistoryModel.watching(reader, KEYS)

        def write(statements: int) -> None:
            for _ in range(statements):
                lake.execute(*workload.statement())
                model.apply()
                if rng.random() < 0.05:
                    lake.sync_now()
            lake.sync_now()

        write(300)
        first = _child(url, env)  # an unkilled run tells how long a compaction takes
        _wait_ready(first)
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        window = float(out.split()[-1])

        killed_mid_run = 0
        for _ in range(KILLS):
            write(rng.randint(100, 250))
            child = _child(url, env)
            _wait_ready(child)
            time.sleep(rng.uniform(0, window * 1.3))
            write(rng.randint(0, 10))  # the app keeps syncing while the job runs
            if child.poll() is None:
                killed_mid_run += 1
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert killed_mid_run >= KILLS // 2, "most kills should land while the job runs"

        write(20)
        lake.flush()
        final = _child(url, env)
        _wait_ready(final)
        _, err = final.communicate(timeout=120)
        assert final.returncode == 0, err

        lake.refresh()
        audited = {t: [] for t in SCHEMA}
        for seq, tbl in reader.execute("SELECT seq, tbl FROM model_audit ORDER BY seq"):
            audited[tbl].append(seq)
        for table in SCHEMA:
            history = _stored_history(lake, table)
            assert_same_history(history, model.history(table), table)
            seqs = lake.storage.table_store(table, "history").to_arrow(columns=[SEQ]).column(0).to_pylist()
            assert len(seqs) == len(set(seqs)), f"{table}: a version was written twice"
            assert lake.storage.table_store(table, "history").app_version("rhei.folded") == audited[table][-1]
            changes = lake.query(f"SELECT _rhei_seq FROM {table}_changes ORDER BY _rhei_seq").column(0).to_pylist()
            assert changes == audited[table], f"{table}: the change feed lost or doubled an event"
            assert_same_state(lake, reader, table)
