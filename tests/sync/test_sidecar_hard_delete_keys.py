"""Hard-delete detection merges the source's keys with the lake's in key order: a differential test against SQLite.

Composite and text keys (case, accents, spaces, the empty string: SQLite's BINARY order, which the merge
must share), deletes, late inserts and updates at or before the cursor, and scan batches as small as one
key, so the merge meets every boundary: after each sync the lake's current rows equal the source's.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rhei_lake
from tests.support.sidecar_source import START

TEXTS = ["", "a", "A", "a ", "b", "é", "e\u0301", "ä", "z", "Z", "中"]
KEY = st.tuples(st.integers(-2, 2), st.sampled_from(TEXTS))


def _stamp(second: int) -> str:
    return (START + timedelta(seconds=second)).isoformat(timespec="microseconds").replace("+00:00", "Z")


ROUND = st.fixed_dictionaries(
    {
        "delete": st.lists(KEY, max_size=6),
        "insert": st.lists(st.tuples(KEY, st.integers(0, 99), st.integers(0, 12)), max_size=6),
        "update": st.lists(st.tuples(KEY, st.integers(0, 99), st.integers(1, 4)), max_size=4),
    }
)


def _lake_rows(lake: rhei_lake.Lake, key_only: bool) -> list[tuple]:
    rows = lake.query("SELECT * FROM k").to_pylist()
    if key_only:
        return sorted((r["b"], r["v"], r["updated_at"]) for r in rows)
    return sorted((r["a"], r["b"], r["v"], r["updated_at"]) for r in rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key_only=st.booleans(),
    first=st.lists(st.tuples(KEY, st.integers(0, 99), st.integers(0, 6)), max_size=10),
    rounds=st.lists(ROUND, min_size=1, max_size=3),
    batch_size=st.integers(1, 4),
)
def test_hard_delete_detection_leaves_the_lake_equal_to_sqlite(key_only, first, rounds, batch_size):
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "source.db")
        app = sqlite3.connect(path, isolation_level=None)
        key = "b" if key_only else "a, b"
        app.execute(
            f"CREATE TABLE k (a INTEGER NOT NULL, b TEXT NOT NULL, v INTEGER, updated_at TEXT NOT NULL, PRIMARY KEY ({key}))"
        )

        last: dict[object, int] = {}  # updated_at grows on every change of a key, re-inserts included
        high = [0]  # the greatest updated_at written: a hard delete the sync saw is stamped no earlier

        def put(rows: list) -> None:
            for (a, b), v, second in rows:
                ident = b if key_only else (a, b)
                second = max(second, last.get(ident, -1) + 1)
                last[ident] = second
                high[0] = max(high[0], second)
                app.execute("INSERT OR REPLACE INTO k VALUES (?, ?, ?, ?)", (a, b, v, _stamp(second)))

        def source_rows() -> list[tuple]:
            if key_only:
                return sorted(app.execute("SELECT b, v, updated_at FROM k"))
            return sorted(app.execute("SELECT a, b, v, updated_at FROM k"))

        put(first)
        table = rhei_lake.PolledTable("k", updated_at="updated_at")
        with rhei_lake.open(
            source=f"sqlite://{path}",
            storage="memory://",
            tables=[table],
            batch_size=batch_size,
            hard_delete_interval=0,
        ) as lake:
            lake.sync_now()
            for step in rounds:
                deleted = {b if key_only else (a, b) for a, b in step["delete"]}
                for a, b in step["delete"]:
                    app.execute(
                        f"DELETE FROM k WHERE {'b = ?' if key_only else 'a = ? AND b = ?'}",
                        (b,) if key_only else (a, b),
                    )
                put(step["insert"])  # some at or before the cursor: committed "late"
                for (a, b), v, later in step["update"]:  # updated_at moves on, maybe still before the cursor
                    where = "b = ?" if key_only else "a = ? AND b = ?"
                    ident = b if key_only else (a, b)
                    if ident in last and ident not in deleted:
                        last[ident] += later
                        high[0] = max(high[0], last[ident])
                        app.execute(
                            f"UPDATE k SET v = ?, updated_at = ? WHERE {where}",
                            (v, _stamp(last[ident]), *((b,) if key_only else (a, b))),
                        )
                lake.sync_now()
                for ident in deleted:  # re-inserted later by an application whose clock moved on
                    last[ident] = max(last.get(ident, 0), high[0])
                assert _lake_rows(lake, key_only) == source_rows()
        app.close()
