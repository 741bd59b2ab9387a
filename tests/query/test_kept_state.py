"""The state a session keeps (``t`` in memory, brought forward incrementally) equals SQLite after any
interleaving of writes, syncs, flushes, compactions and change-row expiry, read by the writing lake and
by a read-only lake following it.

A compaction can fold (and, with ``changelog_retention``, expire) events the kept rows never saw: those
rows cannot be brought forward from the feed any more and must be computed anew.
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rhei_lake
from tests.support.oracle import assert_same_state
from tests.support.workload import SCHEMA, Workload, create_tables

STEPS = st.lists(
    st.sampled_from(["write", "write", "sync", "flush", "compact", "query", "query_read_only"]), min_size=4, max_size=14
)


@pytest.mark.parametrize("retention", ["forever", "0"])
@pytest.mark.parametrize("mode", ["temporal", "mirror"])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, seed=st.integers(0, 2**16))
def test_kept_rows_equal_sqlite_after_any_interleaving(tmp_path_factory, engine, mode, retention, steps, seed):
    root = tmp_path_factory.mktemp("kept")
    db, storage = root / "app.db", str(root / "lake")
    create_tables(db).close()
    workload = Workload(seed, key_space=12)
    lake = rhei_lake.open(
        oltp_path=str(db),
        storage=storage,
        sync_mode=mode,
        changelog_retention=retention,
        tail_flush_segments=10_000,
        engine=engine,
    )
    reader = None
    try:
        for table in SCHEMA:
            lake.register_table(table)
        reader = rhei_lake.open(storage=storage, read_only=True, refresh_interval=0, engine=engine)
        oracle = sqlite3.connect(db)
        for step in [*steps, "sync", "query", "query_read_only", "compact", "query", "query_read_only"]:
            if step == "write":
                workload.run(lambda sql, params: lake.execute(sql, params), 15)
            elif step == "sync":
                lake.sync_now()
            elif step == "flush":
                lake.sync_now()
                lake.flush()
            elif step == "compact":
                lake.sync_now()
                lake.compact()
            else:
                lake.sync_now()  # the oracle is SQLite's committed state: the lake holds it once synced
                for table in SCHEMA:
                    assert_same_state(lake if step == "query" else reader, oracle, table)
        oracle.close()
    finally:
        if reader is not None:
            reader.close()
        lake.close()
