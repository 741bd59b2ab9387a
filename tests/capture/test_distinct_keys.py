"""Item 5 end to end: two keys SQLite keeps apart never become one lake row, in any relation.

``tests/capture/test_affinity.py`` holds the converters to this; here the
keys go the whole way: a registration's snapshot, or events captured from the
lake's connection and from an application's own one, then a key update or a
delete, synced into a lake and read back from ``t``, ``t_history`` and
``t_changes``. The lake either refuses (a ``TypeMismatchError``, with nothing
merged in what it committed before) or holds one row per SQLite row, each
written back exactly as SQLite stores its key.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rhei_lake
from rhei_lake.capture.types import canonical_stored, column_affinity, decode_text, same_stored
from rhei_lake.errors import TypeMismatchError
from tests.support.sqlite_values import ANY_VALUE, KEY_SPELLINGS, param, placeholder

KEY_TYPES = [
    ("DATETIME", None),
    ("TIMESTAMP", None),
    ("DATE", None),
    ("TIME", None),
    ("NUMERIC", None),
    ("BOOLEAN", None),
    ("DECIMAL(10,2)", None),
    ("JSON", None),
    ("MONEY", None),
    ("TEXT", "TIMESTAMP"),
    ("", "DECIMAL(12,4)"),
    ("DATETIME", "TEXT"),
]
"""Declared key types (and ``types=`` overrides) whose conversion could map two stored values to one."""

EXAMPLES = int(os.environ.get("RHEI_PROPERTY_EXAMPLES", "40"))


def _insert(write, value: Any, n: int) -> None:
    try:
        write(f"INSERT OR IGNORE INTO t (k, n) VALUES ({placeholder(value)}, ?)", (param(value), n))
    except (sqlite3.Error, rhei_lake.RheiError):
        pass  # SQLite refused it (NOT NULL): nothing was written


def _check(lake: rhei_lake.Lake, app: sqlite3.Connection, *, synced: bool) -> None:
    """The lake's rows of ``t`` against SQLite's: distinct everywhere; equal, key by key, once ``synced``."""
    relations = ("t", "t_history", "t_changes")
    counts = {r: lake.query(f"SELECT count(*) AS n, count(DISTINCT k) AS d FROM {r}").to_pylist()[0] for r in relations}
    now = lake.query("SELECT k, n FROM t").to_pylist()
    assert counts["t"]["n"] == counts["t"]["d"], now  # whatever was committed: no key twice
    history = lake.query("SELECT k, n FROM t_history").to_pylist()
    by_key: dict[Any, set[int]] = {}
    for row in history:
        by_key.setdefault(row["k"], set()).add(row["n"])
    assert all(len(ns) == 1 for ns in by_key.values()), history  # one lake key never held two SQLite rows
    if not synced:
        return
    stored = app.execute("SELECT k, n FROM t").fetchall()
    spec = lake.table_spec("t")
    column = spec.column("k")
    affinity = column_affinity(spec, column)
    written = {row["n"]: canonical_stored(row["k"], column.arrow_type, affinity) for row in now}
    assert sorted(written) == sorted(n for _, n in stored), (stored, now)
    for key, n in stored:
        assert same_stored(written[n], key), (n, key, written[n])


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key_type=st.sampled_from(KEY_TYPES),
    values=st.one_of(KEY_SPELLINGS, st.lists(ANY_VALUE, min_size=2, max_size=4)),
    path=st.sampled_from(["snapshot", "lake", "app"]),
    then=st.sampled_from(["rekey", "delete", "nothing"]),
    data=st.data(),
)
def test_two_sqlite_keys_never_become_one_lake_row(key_type, values, path, then, data):
    declared, override = key_type
    with (
        tempfile.TemporaryDirectory() as work,
        closing(sqlite3.connect(Path(work) / "app.db", isolation_level=None)) as app,
    ):
        db = str(Path(work) / "app.db")
        app.text_factory = decode_text
        app.execute(f"CREATE TABLE t (k {declared} NOT NULL PRIMARY KEY, n INTEGER)")
        if path == "snapshot":
            for n, value in enumerate(values):
                _insert(app.execute, value, n)
        with rhei_lake.open(oltp_path=db, storage="memory://") as lake:
            try:
                lake.register_table("t", types={"k": override} if override else None)
            except TypeMismatchError as exc:
                assert exc.table == "t" and exc.column == "k"
                return
            write = lake.execute if path == "lake" else app.execute
            if path != "snapshot":
                for n, value in enumerate(values):
                    _insert(write, value, n)
            stored = app.execute("SELECT n FROM t").fetchall()
            if then != "nothing" and stored:
                (n,) = data.draw(st.sampled_from(stored), label="row")
                if then == "rekey":
                    other = data.draw(st.sampled_from(values), label="new key")
                    statement = f"UPDATE OR IGNORE t SET k = {placeholder(other)} WHERE n = ?"
                    params: tuple = (param(other), n)
                else:
                    statement, params = "DELETE FROM t WHERE n = ?", (n,)
                try:
                    write(statement, params)
                except (sqlite3.Error, rhei_lake.RheiError):
                    pass
            try:
                lake.sync_now()
            except TypeMismatchError as exc:
                assert exc.table == "t" and exc.column == "k", exc
                _check(lake, app, synced=False)
                return
            _check(lake, app, synced=True)
