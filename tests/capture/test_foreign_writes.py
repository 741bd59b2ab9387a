"""Writes from any connection are captured as through ``Lake.execute``: whatever the writer's
``recursive_triggers``, REPLACE, upserts, IGNORE, cascades and rollbacks leave the lake equal to SQLite."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rhei_lake
from rhei_lake.capture import schema_watch
from rhei_lake.capture.triggers import PENDING_TABLE
from rhei_lake.errors import RheiError
from tests.support.exact_state import assert_lake_is_sqlite, captured, feed, replay_feed, sqlite_rows

WRITERS = (
    "foreign, recursive_triggers off",
    "foreign, recursive_triggers on",
    "lake, recursive_triggers on",  # as the lake sets its connection
    "lake, recursive_triggers off",  # lake.execute("PRAGMA recursive_triggers = OFF") is allowed
)


def _recursive(mode: str) -> str:
    return f"PRAGMA recursive_triggers = {'ON' if mode.endswith('on') else 'OFF'}"


@dataclass
class Scenario:
    ddl: list[str]
    statements: list[str]
    """Statements run in order; one starting with ``!`` must fail (and is run without the ``!``)."""
    tables: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"t": ("id",)})
    """Registered tables and their keys."""


SCENARIOS = {
    "replace on the primary key": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"],
        [
            "INSERT INTO t VALUES (1, 'a'), (2, 'b')",
            "INSERT OR REPLACE INTO t VALUES (1, 'z')",
            "REPLACE INTO t VALUES (2, 'y')",
            "REPLACE INTO t VALUES (3, 'x')",
        ],
    ),
    "replace on a unique column": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, v REAL)"],
        [
            "INSERT INTO t VALUES (1, 'a', 1.5), (2, 'b', 2.5)",
            "INSERT OR REPLACE INTO t VALUES (3, 'a', 3.5)",
            "REPLACE INTO t VALUES (2, 'a', -0.0)",
            "INSERT OR REPLACE INTO t (u, v) VALUES ('a', 4.5)",
        ],
    ),
    "replace on several unique indexes at once": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, w TEXT UNIQUE, v INTEGER)"],
        [
            "INSERT INTO t VALUES (1, 'a', 'x', 1), (2, 'b', 'y', 2), (3, 'c', 'z', 3)",
            "INSERT OR REPLACE INTO t VALUES (3, 'a', 'y', 4)",  # deletes 1 (u), 2 (w) and 3 (key)
            "INSERT INTO t VALUES (5, 'd', 'w', 5)",
            "INSERT OR REPLACE INTO t VALUES (6, 'd', 'y', 6)",
        ],
    ),
    "replace through a unique index with COLLATE NOCASE": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT, v TEXT)", "CREATE UNIQUE INDEX t_u ON t (u COLLATE NOCASE)"],
        [
            "INSERT INTO t VALUES (1, 'abc', 'first'), (2, 'xyz', 'second')",
            "INSERT OR REPLACE INTO t VALUES (3, 'ABC', 'third')",
            "UPDATE OR REPLACE t SET u = 'Xyz' WHERE id = 3",
            "!INSERT INTO t VALUES (4, 'XYZ', 'refused')",
        ],
    ),
    "replace through a partial unique index": Scenario(
        [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT, active INTEGER)",
            "CREATE UNIQUE INDEX t_active_u ON t (u) WHERE active = 1",
        ],
        [
            "INSERT INTO t VALUES (1, 'a', 1), (2, 'a', 0)",
            "INSERT OR REPLACE INTO t VALUES (3, 'a', 1)",
            "INSERT OR REPLACE INTO t VALUES (4, 'a', 0)",
            "UPDATE OR REPLACE t SET active = 1 WHERE id = 2",
            "UPDATE OR REPLACE t SET active = 1 WHERE id = 4",
        ],
    ),
    "replace through an expression unique index": Scenario(
        [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT, v TEXT)",
            "CREATE UNIQUE INDEX t_lower ON t (lower(u), substr(v, 1, 1) DESC)",
        ],
        [
            "INSERT INTO t VALUES (1, 'Abc', 'x1'), (2, 'def', 'y1')",
            "INSERT OR REPLACE INTO t VALUES (3, 'aBC', 'x2')",
            "UPDATE OR REPLACE t SET u = 'DEF', v = 'yy' WHERE id = 3",
        ],
    ),
    "upserts": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, w TEXT UNIQUE, n INTEGER)"],
        [
            "INSERT INTO t VALUES (1, 'a', 'x', 0), (2, 'b', 'y', 0)",
            "INSERT INTO t VALUES (9, 'a', 'q', 1) ON CONFLICT (u) DO UPDATE SET n = n + excluded.n",
            "INSERT INTO t VALUES (9, 'a', 'q', 1) ON CONFLICT DO NOTHING",
            "INSERT INTO t VALUES (1, 'c', 'r', 5) ON CONFLICT (id) DO UPDATE SET u = excluded.u",
            # OR REPLACE applies to the other constraints: w = 'y' deletes row 2
            "INSERT OR REPLACE INTO t VALUES (7, 'c', 'y', 7) ON CONFLICT (u) DO UPDATE SET n = 70",
            "INSERT OR REPLACE INTO t VALUES (8, 'e', 'y', 8) ON CONFLICT (u) DO NOTHING",
            "DELETE FROM t WHERE id = 1",
            "INSERT INTO t VALUES (10, 'f', 'z', 0)",
        ],
    ),
    "insert or ignore leaves no event and invents none later": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)"],
        [
            "INSERT INTO t VALUES (1, 'a', 'one'), (2, 'b', 'two')",
            "INSERT OR IGNORE INTO t VALUES (3, 'a', 'ignored')",
            "INSERT OR IGNORE INTO t VALUES (4, 'b', 'ignored')",
            "UPDATE t SET v = 'changed' WHERE id = 2",
            "DELETE FROM t WHERE id = 1",
            "INSERT INTO t VALUES (5, 'c', 'five')",
            "INSERT OR REPLACE INTO t VALUES (6, 'b', 'six')",
            "INSERT OR IGNORE INTO t VALUES (7, 'c', 'ignored')",
            "UPDATE t SET id = 8 WHERE id = 5",
            "INSERT INTO t VALUES (9, 'd', 'nine')",
        ],
    ),
    "insert or fail keeps the rows before the failing one": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE)"],
        [
            "INSERT INTO t VALUES (1, 'a')",
            "!INSERT OR FAIL INTO t VALUES (2, 'b'), (3, 'a'), (4, 'c')",
            "DELETE FROM t WHERE id = 1",
            "INSERT OR REPLACE INTO t VALUES (5, 'b')",
        ],
    ),
    "update or replace": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)"],
        [
            "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y'), (3, 'c', 'z'), (4, 'd', 'w')",
            "UPDATE OR REPLACE t SET u = 'a' WHERE id = 2",  # deletes 1
            "UPDATE OR REPLACE t SET id = 2 WHERE id = 3",  # onto an existing key
            "UPDATE OR REPLACE t SET id = 10, u = 'd' WHERE id = 2",  # new key, and deletes 4 through u
            "UPDATE OR REPLACE t SET u = 'same'",
            "UPDATE OR IGNORE t SET u = 'same'",
        ],
    ),
    "replace inside the application's own trigger": Scenario(
        [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)",
            "CREATE TABLE src (id INTEGER PRIMARY KEY, u TEXT)",
            "CREATE TRIGGER app_copy AFTER INSERT ON src BEGIN "
            "INSERT OR REPLACE INTO t VALUES (NEW.id, NEW.u, 'from src'); END",
            "CREATE TRIGGER app_echo AFTER INSERT ON t WHEN NEW.id < 100 BEGIN "
            "INSERT OR REPLACE INTO t VALUES (NEW.id + 100, NEW.u || '!', 'echo'); END",
        ],
        [
            "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y')",
            "INSERT INTO src VALUES (3, 'a')",
            "INSERT INTO src VALUES (4, 'a')",
            "INSERT INTO src VALUES (103, 'q')",
        ],
        {"t": ("id",), "src": ("id",)},
    ),
    "foreign key cascades": Scenario(
        [
            "CREATE TABLE parent (id INTEGER PRIMARY KEY, code TEXT UNIQUE)",
            "CREATE TABLE child (id INTEGER PRIMARY KEY, "
            "parent_id INTEGER REFERENCES parent (id) ON DELETE CASCADE ON UPDATE CASCADE)",
            "CREATE TABLE orphan (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent (id) ON DELETE SET NULL)",
        ],
        [
            "INSERT INTO parent VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            "INSERT INTO child VALUES (10, 1), (11, 1), (12, 2), (13, 3)",
            "INSERT INTO orphan VALUES (20, 1), (21, 3)",
            "INSERT OR REPLACE INTO parent VALUES (4, 'a')",  # deletes parent 1: cascades to 10, 11; nulls 20
            "UPDATE parent SET id = 5 WHERE id = 2",  # 12 follows
            "DELETE FROM parent WHERE id = 3",
            "REPLACE INTO parent VALUES (5, 'e')",
        ],
        {"parent": ("id",), "child": ("id",), "orphan": ("id",)},
    ),
    "multi-row inserts replacing each other": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT COLLATE NOCASE UNIQUE, v INTEGER)"],
        [
            "INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2)",
            "INSERT OR REPLACE INTO t VALUES (3, 'A', 3), (4, 'B', 4), (5, 'a', 5), (4, 'c', 6)",
            "INSERT OR REPLACE INTO t SELECT id + 10, upper(u), v FROM t",
            "INSERT OR REPLACE INTO t (u, v) SELECT lower(u), v * 10 FROM t WHERE id > 10",
        ],
    ),
    "savepoints and rollbacks": Scenario(
        ["CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, v TEXT)"],
        [
            "INSERT INTO t VALUES (1, 'a', 'x'), (2, 'b', 'y')",
            "BEGIN",
            "INSERT OR REPLACE INTO t VALUES (3, 'a', 'z')",
            "SAVEPOINT s1",
            "INSERT OR REPLACE INTO t VALUES (4, 'b', 'w')",
            "INSERT OR IGNORE INTO t VALUES (5, 'a', 'i')",
            "ROLLBACK TO s1",
            "RELEASE s1",
            "COMMIT",
            "BEGIN",
            "INSERT OR REPLACE INTO t VALUES (6, 'b', 'gone')",
            "ROLLBACK",
            "SAVEPOINT outer",
            "UPDATE OR REPLACE t SET u = 'b' WHERE id = 3",
            "RELEASE outer",
        ],
    ),
    "without rowid, a NOCASE text key and a unique column": Scenario(
        ["CREATE TABLE t (k TEXT COLLATE NOCASE PRIMARY KEY, u INTEGER UNIQUE, v TEXT) WITHOUT ROWID"],
        [
            "INSERT INTO t VALUES ('a', 1, 'x'), ('b', 2, 'y')",
            "INSERT OR REPLACE INTO t VALUES ('A', 3, 'z')",
            "INSERT OR REPLACE INTO t VALUES ('c', 2, 'w')",
            "UPDATE OR REPLACE t SET k = 'C' WHERE k = 'c'",
            "UPDATE OR REPLACE t SET u = 3 WHERE k = 'C'",
        ],
        {"t": ("k",)},
    ),
    "hostile identifiers": Scenario(
        [
            'CREATE TABLE "we""ird ta\'ble" ("k ""q""" INTEGER PRIMARY KEY, "sel\'ect" TEXT COLLATE NOCASE UNIQUE, '
            '"a-b" TEXT, [x y] INTEGER)',
            'CREATE UNIQUE INDEX "i""x" ON "we""ird ta\'ble" (lower("a-b") /* a comment, with a comma */, [x y]) '
            "WHERE \"sel'ect\" <> 'skip'",
        ],
        [
            "INSERT INTO \"we\"\"ird ta'ble\" VALUES (1, 'a', 'M', 1), (2, 'b', 'n', 1), (3, 'skip', 'm', 1)",
            "INSERT OR REPLACE INTO \"we\"\"ird ta'ble\" VALUES (4, 'A', 'x', 2)",
            "INSERT OR REPLACE INTO \"we\"\"ird ta'ble\" VALUES (5, 'c', 'N', 1)",
            'UPDATE OR REPLACE "we""ird ta\'ble" SET "a-b" = \'X\', [x y] = 2 WHERE "k ""q""" = 5',
        ],
        {"we\"ird ta'ble": ('k "q"',)},
    ),
    "a composite key": Scenario(
        ["CREATE TABLE t (a TEXT NOT NULL, b INTEGER NOT NULL, u TEXT UNIQUE, PRIMARY KEY (a, b))"],
        [
            "INSERT INTO t VALUES ('x', 1, 'p'), ('x', 2, 'q')",
            "INSERT OR REPLACE INTO t VALUES ('y', 1, 'p')",
            "UPDATE OR REPLACE t SET b = 1 WHERE a = 'x'",
            "UPDATE OR REPLACE t SET a = 'x', u = 'p' WHERE a = 'y'",
            "INSERT OR REPLACE INTO t VALUES ('z', 9, 'p')",
        ],
        {"t": ("a", "b")},
    ),
}


def _writer(lake: rhei_lake.Lake, db: str, mode: str):
    """A function running one statement through ``mode``'s connection."""
    if mode.startswith("lake"):
        lake.execute(_recursive(mode))
        return lambda sql: lake.execute(sql)
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(_recursive(mode))
    return lambda sql: conn.execute(sql).fetchall()


@pytest.mark.parametrize("mode", WRITERS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_write_lands_exactly(tmp_path, name, mode):
    scenario = SCENARIOS[name]
    with captured(tmp_path, *scenario.ddl, tables=list(scenario.tables)) as (db, setup, lake):
        write = _writer(lake, db, mode)
        for statement in scenario.statements:
            if statement.startswith("!"):
                with pytest.raises((sqlite3.Error, RheiError)):
                    write(statement[1:])
            else:
                write(statement)
        lake.sync_now()
        for table, key in scenario.tables.items():
            assert_lake_is_sqlite(lake, setup, table)
            assert replay_feed(lake, table, key) == sqlite_rows(setup, table)


def _log(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT op, c0, c1 FROM _rhei_cdc_log WHERE op != 'S' ORDER BY seq").fetchall()


@pytest.mark.parametrize("recursive", ["OFF", "ON"])
def test_insert_or_replace_from_foreign_connection_deletes_conflicting_row(tmp_path, recursive):
    with captured(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT UNIQUE)") as (_, app, lake):
        app.execute(f"PRAGMA recursive_triggers = {recursive}")
        app.execute("INSERT INTO t VALUES (1, 'ann@example.com')")
        app.execute("INSERT OR REPLACE INTO t VALUES (2, 'ann@example.com')")
        # one D, logged before the I that replaced the row
        assert _log(app) == [("I", 1, "ann@example.com"), ("D", 1, "ann@example.com"), ("I", 2, "ann@example.com")]
        assert app.execute(f"SELECT count(*) FROM {PENDING_TABLE}").fetchone() == (0,)
        lake.sync_now()
        assert lake.query("SELECT id, email FROM t", hint="olap").to_pylist() == [{"id": 2, "email": "ann@example.com"}]


def test_a_second_process_replacing_rows_is_captured(tmp_path):
    rows = ", ".join(f"({i}, 'c{i}', {i})" for i in range(50))
    ddl = "CREATE TABLE t (id INTEGER PRIMARY KEY, code TEXT COLLATE NOCASE UNIQUE, qty INTEGER)"
    with captured(tmp_path, ddl, f"INSERT INTO t VALUES {rows}") as (db, app, lake):
        child = textwrap.dedent(
            """
            import sqlite3, sys
            conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
            conn.execute("PRAGMA recursive_triggers = OFF")
            conn.execute("BEGIN")
            for i in range(0, 50, 2):
                conn.execute("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", (100 + i, f"C{i}", -i))
            conn.execute("UPDATE OR REPLACE t SET code = 'c1' WHERE id = 3")
            conn.execute("INSERT INTO t VALUES (5, 'x', 0) ON CONFLICT (id) DO UPDATE SET qty = 99")
            conn.execute("COMMIT")
            """
        )
        subprocess.run([sys.executable, "-c", child, db], check=True, timeout=60)
        lake.sync_now()
        assert_lake_is_sqlite(lake, app, "t")
        assert replay_feed(lake, "t", ("id",)) == sqlite_rows(app, "t")
        assert len(sqlite_rows(app, "t")) == 49  # 25 replaced one for one; UPDATE OR REPLACE took row 1


def test_replaced_rows_never_get_two_deletes(tmp_path):
    """With recursive_triggers on, the delete trigger and the guard both see a REPLACE: one D."""
    with captured(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE)") as (_, app, lake):
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        lake.execute("INSERT OR REPLACE INTO t VALUES (2, 'a')")  # the lake's connection: recursive on
        app.execute("PRAGMA recursive_triggers = ON")
        app.execute("INSERT OR REPLACE INTO t VALUES (3, 'a')")
        lake.sync_now()
        ops = [(e["_rhei_op"], e["id"]) for e in feed(lake, "t")]
        assert ops == [("I", 1), ("D", 1), ("I", 2), ("D", 2), ("I", 3)]


def test_guard_lookups_use_the_indexes(tmp_path):
    """The guards search each unique index: a write costs the same work in a table 10x bigger."""
    with captured(
        tmp_path,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT, v TEXT, w INTEGER, k TEXT COLLATE NOCASE UNIQUE)",
        "CREATE UNIQUE INDEX t_u ON t (u COLLATE RTRIM)",
        "CREATE UNIQUE INDEX t_expr ON t (lower(v), w) WHERE w > 0",
    ) as (db, _, _):
        pass
    app = sqlite3.connect(db, isolation_level=None)

    def steps(rows: int) -> int:
        app.execute("DELETE FROM t")
        values = [(i, f"u{i}", f"v{i}", 1, f"k{i}") for i in range(rows)]
        app.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", values)
        counted = [0]

        def count() -> int:
            counted[0] += 1
            return 0

        app.set_progress_handler(count, 1)
        app.execute("INSERT OR REPLACE INTO t VALUES (?, 'u1', 'V2', 1, 'K3')", (rows + 1,))
        app.execute("UPDATE OR REPLACE t SET u = 'u5', v = 'v6', k = 'k7' WHERE id = 8")
        app.execute("INSERT INTO t VALUES (?, 'new', 'new', 1, 'new')", (rows + 2,))
        app.set_progress_handler(None, 1)
        return counted[0]

    small, big = steps(1_000), steps(10_000)
    assert big < small * 1.5, (small, big)


def _previous_trigger_ddl(conn: sqlite3.Connection, table: str) -> list[str]:
    """The triggers rhei_lake installed before comparisons were byte-exact and REPLACE was guarded."""
    columns = [r[0] for r in conn.execute("SELECT name FROM pragma_table_xinfo(?)", (table,))]
    key = [r[0] for r in conn.execute("SELECT name FROM pragma_table_xinfo(?) WHERE pk > 0 ORDER BY pk", (table,))]
    slots = ", ".join(f"c{i}" for i in range(len(columns)))

    def log(op: str, image: str) -> str:
        values = ", ".join(f'{image}."{c}"' for c in columns)
        return f"INSERT INTO _rhei_cdc_log (tbl, op, ts, {slots}) VALUES ('{table}', '{op}', julianday(), {values});"

    same_key = " AND ".join(f'OLD."{k}" IS NEW."{k}"' for k in key)
    changed = " OR ".join(f'OLD."{c}" IS NOT NEW."{c}"' for c in columns if c not in key) or "0"
    return [
        f'CREATE TRIGGER "_rhei_cdc_ins_{table}" AFTER INSERT ON "{table}" BEGIN {log("I", "NEW")} END',
        f'CREATE TRIGGER "_rhei_cdc_upd_{table}" AFTER UPDATE ON "{table}" WHEN ({same_key}) AND ({changed}) '
        f"BEGIN {log('U', 'NEW')} END",
        f'CREATE TRIGGER "_rhei_cdc_rekey_{table}" AFTER UPDATE ON "{table}" WHEN NOT ({same_key}) '
        f"BEGIN {log('D', 'OLD')} {log('I', 'NEW')} END",
        f'CREATE TRIGGER "_rhei_cdc_del_{table}" AFTER DELETE ON "{table}" BEGIN {log("D", "OLD")} END',
    ]


def _install_previous_triggers(conn: sqlite3.Connection, table: str) -> None:
    """Put the previous version's triggers in place, recorded as installed, and no pending table."""
    conn.execute("BEGIN IMMEDIATE")
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '\\_rhei\\_%' ESCAPE '\\'"
    ).fetchall():
        conn.execute(f'DROP TRIGGER "{name}"')
    conn.execute(f"DROP TABLE IF EXISTS {PENDING_TABLE}")
    for ddl in _previous_trigger_ddl(conn, table):
        conn.execute(ddl)
    schema_watch.record(conn, table)
    conn.execute("COMMIT")


def _trigger_sql(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE '_rhei%'"))


def test_outdated_triggers_are_reinstalled_without_losing_events(tmp_path):
    """A database whose triggers an older rhei_lake installed: the first sync reinstalls them in one
    transaction, commits what they logged, and repairs what they missed."""
    db = str(tmp_path / "app.db")
    storage = str(tmp_path / "lake")
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, email TEXT UNIQUE)")
    app.execute("INSERT INTO t VALUES (1, 'ann', 'ann@example.com'), (2, 'bob', 'bob@example.com')")
    with rhei_lake.open(oltp_path=db, storage=storage) as lake:
        lake.register_table("t")
        current = _trigger_sql(app)
    _install_previous_triggers(app, "t")
    app.execute("PRAGMA recursive_triggers = OFF")
    app.execute("INSERT INTO t VALUES (3, 'cy', 'cy@example.com')")  # logged by the old triggers
    app.execute("UPDATE t SET name = 'Bob' WHERE id = 2")  # missed by them (NOCASE)
    with rhei_lake.open(oltp_path=db, storage=storage) as lake:
        lake.sync_now()
        assert _trigger_sql(app) == current
        assert_lake_is_sqlite(lake, app, "t")
        app.execute("UPDATE t SET name = 'BOB' WHERE id = 2")
        app.execute("INSERT OR REPLACE INTO t VALUES (4, 'dee', 'ann@example.com')")
        lake.sync_now()
        assert [(r["_rhei_op"], r["id"], r["name"]) for r in feed(lake, "t")][2:] == [
            ("I", 3, "cy"),
            ("U", 2, "Bob"),
            ("U", 2, "BOB"),
            ("D", 1, "ann"),
            ("I", 4, "dee"),
        ]
        assert_lake_is_sqlite(lake, app, "t")


def test_a_unique_index_created_after_registration_is_followed(tmp_path):
    """The next sync guards the new index and repairs what REPLACE through it did before."""
    with captured(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT)") as (_, app, lake):
        app.execute("PRAGMA recursive_triggers = OFF")
        app.execute("INSERT INTO t VALUES (1, 'Ann@example.com'), (2, 'bob@example.com')")
        lake.sync_now()
        app.execute("CREATE UNIQUE INDEX t_email ON t (email COLLATE NOCASE)")
        app.execute("INSERT OR REPLACE INTO t VALUES (3, 'ann@example.com')")  # before the lake knows the index
        lake.sync_now()
        assert any("guard" in name for name in _trigger_sql(app))
        assert_lake_is_sqlite(lake, app, "t")
        app.execute("INSERT OR REPLACE INTO t VALUES (4, 'BOB@example.com')")
        lake.sync_now()
        assert [(r["_rhei_op"], r["id"]) for r in feed(lake, "t")][-2:] == [("D", 2), ("I", 4)]
        assert_lake_is_sqlite(lake, app, "t")
        app.execute("DROP INDEX t_email")
        lake.sync_now()
        assert not any("guard" in name for name in _trigger_sql(app))


# -- random programs on several connections ------------------------------------------------------

PROPERTY_DDL = [
    "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT COLLATE NOCASE UNIQUE, w TEXT, v REAL)",
    "CREATE UNIQUE INDEX t_w ON t (w) WHERE v > 0",
    "CREATE TABLE k (k TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER UNIQUE, note TEXT) WITHOUT ROWID",
]
PROPERTY_KEYS = {"t": ("id",), "k": ("k",)}

_ids = st.one_of(st.none(), st.integers(1, 6))
_us = st.sampled_from(["a", "A", "b", "B", "c", "a ", None])
_ws = st.sampled_from(["x", "X", "y", None])
_vs = st.sampled_from([0.0, -0.0, 1.0, 2.5, -1.0, None])
_ks = st.sampled_from(["p", "P", "q", "Q", "r"])
_ns = st.one_of(st.none(), st.integers(1, 4))
_or = st.sampled_from(["", "OR REPLACE ", "OR IGNORE ", "OR FAIL "])

_statements = st.one_of(
    st.builds(
        lambda o, a, b: (f"INSERT {o}INTO t VALUES (?, ?, ?, ?)", a + b), _or, st.tuples(_ids, _us), st.tuples(_ws, _vs)
    ),
    st.builds(
        lambda o, a, b: (f"INSERT {o}INTO t VALUES (?, ?, ?, ?), (?, ?, ?, ?)", a + b),
        _or,
        st.tuples(_ids, _us, _ws, _vs),
        st.tuples(_ids, _us, _ws, _vs),
    ),
    st.builds(lambda a: ("REPLACE INTO t (u, w, v) VALUES (?, ?, ?)", a), st.tuples(_us, _ws, _vs)),
    st.builds(
        lambda a, tail: ("INSERT INTO t VALUES (?, ?, ?, ?) " + tail, a),
        st.tuples(_ids, _us, _ws, _vs),
        st.sampled_from(
            [
                "ON CONFLICT (u) DO UPDATE SET v = excluded.v, w = excluded.w",
                "ON CONFLICT DO NOTHING",
                "ON CONFLICT (id) DO UPDATE SET u = excluded.u",
            ]
        ),
    ),
    st.builds(
        lambda o, col_value, target: (f"UPDATE {o}t SET {col_value[0]} = ? WHERE id = ?", (col_value[1], target)),
        _or,
        st.one_of(
            st.tuples(st.just("u"), _us),
            st.tuples(st.just("id"), _ids),
            st.tuples(st.just("w"), _ws),
            st.tuples(st.just("v"), _vs),
        ),
        _ids,
    ),
    st.builds(lambda o, a: (f"UPDATE {o}t SET v = ?, w = ? WHERE u = ?", a), _or, st.tuples(_vs, _ws, _us)),
    st.builds(lambda a: ("DELETE FROM t WHERE id = ? OR u = ?", a), st.tuples(_ids, _us)),
    st.builds(lambda o, a: (f"INSERT {o}INTO k VALUES (?, ?, ?)", a), _or, st.tuples(_ks, _ns, _us)),
    st.builds(
        lambda o, col_value, target: (f"UPDATE {o}k SET {col_value[0]} = ? WHERE k = ?", (col_value[1], target)),
        _or,
        st.one_of(st.tuples(st.just("k"), _ks), st.tuples(st.just("n"), _ns), st.tuples(st.just("note"), _us)),
        _ks,
    ),
    st.builds(lambda a: ("DELETE FROM k WHERE k = ?", a), st.tuples(_ks)),
)
_blocks = st.tuples(
    st.sampled_from(WRITERS),
    st.sampled_from(["autocommit", "commit", "rollback", "savepoint"]),
    st.lists(_statements, min_size=1, max_size=4),
    st.booleans(),  # sync after the block
)


def _run_block(write, transaction: str, statements: list[tuple[str, tuple]]) -> None:
    def attempt(sql: str, params: tuple) -> None:
        try:
            write(sql, params)
        except (sqlite3.IntegrityError, RheiError):
            pass  # a constraint refused it (ABORT or FAIL): SQLite, the oracle, agrees

    if transaction == "autocommit":
        for sql, params in statements:
            attempt(sql, params)
        return
    write("BEGIN", ())
    if transaction == "savepoint":
        write("SAVEPOINT s", ())
    for sql, params in statements:
        attempt(sql, params)
    if transaction == "savepoint":
        write("ROLLBACK TO s", ())
        attempt(*statements[0])
        write("RELEASE s", ())
    write("ROLLBACK" if transaction == "rollback" else "COMMIT", ())


@settings(
    max_examples=int(os.environ.get("RHEI_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(program=st.lists(_blocks, min_size=1, max_size=12))
def test_random_programs_on_several_connections_keep_the_lake_equal_to_sqlite(program):
    # Every connection is closed before its directory goes: SQLite shares locks and the WAL index
    # per inode within a process, and a new file may get a deleted one's inode.
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as connections:
        db = os.path.join(work, "app.db")
        oracle = connections.enter_context(contextlib.closing(sqlite3.connect(db, isolation_level=None)))
        for ddl in PROPERTY_DDL:
            oracle.execute(ddl)
        with rhei_lake.open(oltp_path=db, storage="memory://") as lake:
            for table in PROPERTY_KEYS:
                lake.register_table(table)
            writers = {}
            for mode in WRITERS:
                if mode.startswith("lake"):
                    writers[mode] = lambda sql, params: lake.execute(sql, params)
                else:
                    conn = connections.enter_context(contextlib.closing(sqlite3.connect(db, isolation_level=None)))
                    conn.execute(_recursive(mode))
                    writers[mode] = lambda sql, params, conn=conn: conn.execute(sql, params).fetchall()
            for mode, transaction, statements, sync in program:
                if mode.startswith("lake"):
                    lake.execute(_recursive(mode))  # one connection, set per block
                _run_block(writers[mode], transaction, statements)
                if sync:
                    lake.sync_now()
            lake.sync_now()
            for table, key in PROPERTY_KEYS.items():
                assert_lake_is_sqlite(lake, oracle, table)
                assert replay_feed(lake, table, key) == sqlite_rows(oracle, table)


def test_adding_a_column_after_another_connection_added_a_unique_index(tmp_path):
    """The schema changed behind the lake's back; add_column's own drain must not try to refresh mid-change."""
    with captured(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT)") as (_, app, lake):
        app.execute("INSERT INTO t VALUES (1, 'a@example.com')")
        app.execute("CREATE UNIQUE INDEX t_email ON t (email)")
        lake.add_column("t", "note", "TEXT")
        assert any("guard" in name for name in _trigger_sql(app))
        app.execute("PRAGMA recursive_triggers = OFF")
        app.execute("INSERT OR REPLACE INTO t VALUES (2, 'a@example.com', 'n')")
        lake.sync_now()
        assert_lake_is_sqlite(lake, app, "t")


def test_leftovers_of_an_ignored_conflict_are_cleared_when_the_log_is_pruned(tmp_path):
    """INSERT OR IGNORE leaves the conflicting row pending; once its D is pruned, it must not come back."""
    with captured(tmp_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, u TEXT UNIQUE, v INTEGER)") as (_, app, lake):
        app.execute("INSERT INTO t VALUES (1, 'a', 0), (2, 'b', 0)")
        app.execute("INSERT OR IGNORE INTO t VALUES (3, 'a', 0)")  # row 1 stays pending
        assert app.execute(f"SELECT c0 FROM {PENDING_TABLE}").fetchall() == [(1,)]
        app.execute("DELETE FROM t WHERE id = 1")
        app.execute("UPDATE t SET v = 1 WHERE id = 2")  # not a unique column: nothing flushes
        lake.sync_now()
        lake.sync_engine.prune()
        assert app.execute("SELECT count(*) FROM _rhei_cdc_log WHERE op = 'D'").fetchone() == (0,)
        assert app.execute(f"SELECT count(*) FROM {PENDING_TABLE}").fetchone() == (0,)
        app.execute("INSERT INTO t VALUES (4, 'c', 0)")
        lake.sync_now()
        assert [(e["_rhei_op"], e["id"]) for e in feed(lake, "t")] == [("I", 1), ("I", 2), ("D", 1), ("U", 2), ("I", 4)]
