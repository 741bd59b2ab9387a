"""The state a session keeps (``t`` in memory, the unfolded events) equals SQLite and the history's open
versions across schema changes: columns added, dropped and added back, through the API and through outside
rebuilds (create new, copy, drop, rename from another connection), queried between every step."""

from __future__ import annotations

import sqlite3

import pytest

import rhei_lake
from tests.support.oracle import assert_same_state

# Each step: ("rebuild", columns after), ("add", name, type), ("drop", name), ("write",).
STEPS = [
    ("rebuild", ["a", "b", "z1"]),
    ("write",),
    ("rebuild", ["a", "b", "z1", "z2"]),
    ("write",),
    ("rebuild", ["a", "b", "z2"]),
    ("write",),
    ("add", "z1", "TEXT"),
    ("write",),
    ("rebuild", ["a", "b", "z2", "z1", "z3"]),
    ("write",),
    ("drop", "z2"),
    ("write",),
    ("rebuild", ["a", "b", "z1", "z3", "z2"]),
    ("write",),
    ("rebuild", ["b", "z1", "z3", "z2"]),
    ("write",),
    ("add", "a", "TEXT"),
    ("write",),
]


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_kept_state_follows_added_dropped_and_readded_columns(tmp_path, engine, mode):
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA journal_mode = WAL")
    app.execute("CREATE TABLE mig (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)")
    app.executemany("INSERT INTO mig VALUES (?, ?, ?)", [(1, "x", 1), (2, "y", 2)])
    lake = rhei_lake.open(
        oltp_path=str(db),
        storage=str(tmp_path / "lake"),
        sync_mode=mode,
        prune_interval=0,
        tail_flush_segments=3,
        engine=engine,
    )
    other = sqlite3.connect(db, isolation_level=None)
    try:
        lake.register_table("mig")
        next_id = 3

        def check() -> None:
            lake.sync_now()
            assert_same_state(lake, app, "mig")
            if mode == "temporal":
                opened = lake.query("SELECT * FROM mig_history WHERE _rhei_valid_to IS NULL")
                assert opened.num_rows == app.execute("SELECT count(*) FROM mig").fetchone()[0]
            lake.query("SELECT * FROM mig_changes")

        check()
        for step in STEPS:
            if step[0] == "rebuild":
                columns = step[1]
                kept = [c for c in columns if c in _columns(app)]
                body = ", ".join(
                    ["id INTEGER PRIMARY KEY", *(f"{c} {'INTEGER' if c == 'b' else 'TEXT'}" for c in columns)]
                )
                copied = ", ".join(["id", *kept])
                other.execute("BEGIN IMMEDIATE")
                other.execute(f"CREATE TABLE _mig_new ({body})")
                other.execute(f"INSERT INTO _mig_new ({copied}) SELECT {copied} FROM mig")
                other.execute("DROP TABLE mig")
                other.execute("ALTER TABLE _mig_new RENAME TO mig")
                other.execute("COMMIT")
            elif step[0] == "add":
                lake.add_column("mig", step[1], step[2])
            elif step[0] == "drop":
                lake.drop_column("mig", step[1])
            else:
                columns = _columns(app)
                values = [next_id if c == "b" else f"v{next_id}" for c in columns]
                lake.execute(
                    f"INSERT INTO mig (id, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})", (next_id, *values)
                )
                lake.execute(f"UPDATE mig SET {columns[-1]} = ? WHERE id = 1", (7 if columns[-1] == "b" else "u",))
                lake.execute("DELETE FROM mig WHERE id = 2")
                next_id += 1
            check()
    finally:
        other.close()
        lake.close()
        app.close()


def _columns(conn: sqlite3.Connection) -> list[str]:
    return [row[1] for row in conn.execute("PRAGMA table_info(mig)") if row[1] != "id"]
