"""A registration whose snapshot is refused: the table waits, and nothing answers for it as if it were mirrored.

The lake lists it nowhere, refuses every query on it (naming the table, the
registration's error and its way on), passes its captured changes over while
every other table syncs on, and says it waits in ``SyncReport.waiting`` and
``sync_status().waiting``. Following each way on its error names, as written,
mirrors the table exactly (SQLite the oracle).
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime

import pytest

import rhei_lake
from rhei_lake.capture.reader_process import fast_reader_available
from rhei_lake.capture.types import timestamp_text
from rhei_lake.errors import TableNotReadyError, TypeMismatchError
from tests.support.oracle import assert_same_state
from tests.support.waiting import wait_for

STAMPS = (
    "CREATE TABLE stamps (at DATETIME PRIMARY KEY, v TEXT)",
    "INSERT INTO stamps VALUES ('2026-01-01T10:00:00Z', NULL)",
)
NUMS = ("CREATE TABLE nums (id INTEGER PRIMARY KEY, n NUMERIC)", "INSERT INTO nums VALUES (1, 'abc')")
CASES = {"stamps": STAMPS, "nums": NUMS}
PLACEHOLDER = "<a value that fits>"


def app_db(path, *tables: str) -> sqlite3.Connection:
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT)")
    for name in tables:
        for sql in CASES[name]:
            app.execute(sql)
    return app


def refused(lake: rhei_lake.Lake, table: str) -> TypeMismatchError:
    with pytest.raises(TypeMismatchError) as info:
        lake.register_table(table)
    return info.value


def register_calls(message: str) -> list[str]:
    """The ``lake.register_table(...)`` calls a message names, as written."""
    found = []
    for match in re.finditer(r"lake\.register_table\(", message):
        depth = 0
        for end in range(match.end() - 1, len(message)):
            depth += {"(": 1, ")": -1}.get(message[end], 0)
            if depth == 0:
                found.append(message[match.start() : end + 1])
                break
    return found


def update_statement(message: str) -> str:
    return re.search(r"\((UPDATE .*? WHERE .*?)\)", message).group(1)


def stamps_state(lake: rhei_lake.Lake, conn: sqlite3.Connection) -> None:
    """``stamps`` in the lake equals SQLite's, instants compared as what they mean."""
    lake_rows = sorted((timestamp_text(r["at"]), r["v"]) for r in lake.query("SELECT at, v FROM stamps").to_pylist())
    assert lake_rows == sorted(conn.execute("SELECT at, v FROM stamps").fetchall())


def same(lake: rhei_lake.Lake, conn: sqlite3.Connection, table: str) -> None:
    if table == "stamps" and lake.table_spec("stamps").column("at").declared_type != "TEXT":
        stamps_state(lake, conn)
    else:
        assert_same_state(lake, conn, table)


@pytest.mark.parametrize("table", sorted(CASES))
def test_a_refused_registration_is_neither_listed_nor_answered(tmp_path, table):
    app = app_db(tmp_path / "app.db", table)
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.register_table("other")
        error = refused(lake, table)
        report = lake.sync_now()
        assert table not in lake.tables() and "other" in lake.tables()
        assert report.waiting == {table: str(error)} and table in str(report)
        status = lake.sync_status()
        assert set(status.waiting) == {table} and status.waiting[table].message == str(error)
        assert not status.failing and table not in status.tables
        queries = [
            (f"SELECT * FROM {table}", {}),
            (f"SELECT count(*) FROM {table}_history", {}),
            (f"SELECT * FROM {table}_changes", {}),
            (f"SELECT * FROM other JOIN {table} ON 1 = 1", {}),
            (f"SELECT * FROM {table}", {"as_of": datetime.now(UTC)}),
            (f"SELECT * FROM {table.upper()} WHERE 1 = 1", {"hint": "oltp"}),
        ]
        for sql, options in queries:
            with pytest.raises(TableNotReadyError) as info:
                lake.query(sql, **options)
            message = str(info.value)
            assert info.value.table == table and info.value.reason is error, sql
            assert f"table {table!r}" in message and str(error) in message and "lake.register_table(" in message
        with pytest.raises(TableNotReadyError):
            lake.dataframe(f"SELECT * FROM {table}")
        with pytest.raises(TableNotReadyError):
            lake.table_spec(table)
        with pytest.raises(TableNotReadyError, match="tables=\\['other'\\]"):
            lake.restore_sqlite(tmp_path / "restored.db")
        lake.restore_sqlite(tmp_path / "restored.db", tables=["other"])
        assert lake.query("SELECT count(*) AS n FROM other").to_pylist() == [{"n": 0}]  # a name it does not hide
        with pytest.raises(rhei_lake.QueryError) as info:
            lake.query("SELECT * FROM nowhere")
        assert not isinstance(info.value, TableNotReadyError)
    app.close()


def test_a_waiting_table_stalls_no_other_table(tmp_path):
    """Writes to the waiting table (from the lake and from another connection) leave the others syncing."""
    app = app_db(tmp_path / "app.db", "stamps", "nums")
    path, storage = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=path, storage=storage) as lake:
        lake.register_table("other")
        refused(lake, "stamps")
        refused(lake, "nums")
        for i in range(3):
            lake.execute("INSERT INTO stamps VALUES (?, 'lake')", (f"2026-02-0{i + 1} 00:00:00",))
            app.execute("INSERT INTO nums VALUES (?, 'x')", (10 + i,))
            app.execute("INSERT INTO other VALUES (?, 'app')", (i,))
            lake.execute("UPDATE other SET v = 'lake' WHERE id = ?", (i,))
            report = lake.sync_now()
            assert set(report.waiting) == {"stamps", "nums"}
            assert_same_state(lake, app, "other")
    with rhei_lake.open(oltp_path=path, storage=storage, sync_interval=0.05) as lake:  # reopened: still waiting
        assert set(lake.sync_status().waiting) == {"stamps", "nums"}
        app.execute("INSERT INTO nums VALUES (20, 'y')")
        app.execute("INSERT INTO other VALUES (20, 'loop')")
        wait_for(
            lambda: lake.sync_status().tables["other"].lag_events == 0,
            what="the loop to sync 'other' beside the waiting tables",
        )
        status = lake.sync_status()
        assert status.loop_running and not status.failing and status.tables["other"].lag_events == 0
        assert_same_state(lake, app, "other")
    app.close()


@pytest.mark.parametrize("table", sorted(CASES))
def test_fixing_the_row_as_the_error_says_then_registering_again_mirrors_exactly(tmp_path, table):
    app = app_db(tmp_path / "app.db", table)
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        message = str(refused(lake, table))
        row = ("2026-03-01 00:00:00", "later") if table == "stamps" else (2, 1.5)
        app.execute(f"INSERT INTO {table} VALUES (?, ?)", row)  # captured while it waits
        lake.sync_now()
        lake.execute(update_statement(message).replace(PLACEHOLDER, "2.5"))
        (again,) = [c for c in register_calls(message) if "types=" not in c]
        eval(again, {"lake": lake})  # noqa: S307 - the library's own message, followed as written
        assert table in lake.tables() and not lake.sync_status().waiting
        same(lake, app, table)
        app.execute(f"DELETE FROM {table}")
        lake.sync_now()
        same(lake, app, table)


@pytest.mark.parametrize("table", sorted(CASES))
def test_mirroring_the_column_as_the_error_says_mirrors_exactly(tmp_path, table):
    app = app_db(tmp_path / "app.db", table)
    path, storage = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=path, storage=storage) as lake:
        message = str(refused(lake, table))
    row = ("2026-03-01T00:00:00", "later") if table == "stamps" else (2, "more")
    app.execute(f"INSERT INTO {table} VALUES (?, ?)", row)  # while no lake runs
    with rhei_lake.open(oltp_path=path, storage=storage) as lake:
        assert table in lake.sync_status().waiting  # refused again at the open
        (retype,) = [c for c in register_calls(message) if "types=" in c]
        eval(retype, {"lake": lake})  # noqa: S307 - the library's own message, followed as written
        assert "TEXT" in [c.declared_type for c in lake.table_spec(table).columns]
        same(lake, app, table)
        app.execute(f"UPDATE {table} SET {'v' if table == 'stamps' else 'n'} = 'changed'")
        lake.sync_now()
        same(lake, app, table)
    with rhei_lake.open(storage=storage) as reader:
        same(reader, app, table)


def test_a_read_only_lake_refuses_a_table_whose_snapshot_never_landed(tmp_path):
    app = app_db(tmp_path / "app.db", "stamps")
    path, storage = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=path, storage=storage) as lake:
        lake.register_table("other")
        message = str(refused(lake, "stamps"))
        with rhei_lake.open(storage=storage) as reader:
            assert reader.tables() == ["other"] and set(reader.sync_status().waiting) == {"stamps"}
            with pytest.raises(TableNotReadyError, match="registration has not finished"):
                reader.query("SELECT * FROM stamps")
            (retype,) = [c for c in register_calls(message) if "types=" in c]
            eval(retype, {"lake": lake})  # noqa: S307
            # A query naming it looks at the store again (no refresh() first), and finds the snapshot.
            assert reader.query("SELECT v FROM stamps").to_pylist() == [{"v": None}]
            assert reader.tables() == ["other", "stamps"] and not reader.sync_status().waiting
    app.close()


def _changes_per_key(lake: rhei_lake.Lake, table: str) -> dict[int, int]:
    rows = lake.query(f"SELECT id, count(*) AS c FROM {table}_changes GROUP BY id").to_pylist()
    return {r["id"]: r["c"] for r in rows}


@pytest.mark.parametrize("columnar", [False, True])
def test_a_bad_event_of_a_waiting_table_still_recorded_as_mirrored_stalls_no_other_table(tmp_path, columnar):
    """A mirrored table renamed away while a memory:// lake was closed waits while still recorded as mirrored;
    renamed back, its triggers capture again. A value of its that does not fit stopped the drain for every
    table (with a repair_event the waiting table refuses); now the others sync on, each event once, and the
    waiting table's events are replaced by the snapshot its way on takes."""
    if columnar and not fast_reader_available():
        pytest.skip("adbc-driver-sqlite is not installed")
    path = str(tmp_path / "app.db")
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER)")
    app.execute("CREATE TABLE o (id INTEGER PRIMARY KEY, n INTEGER)")
    options = {"columnar_min_rows": 1} if columnar else {"columnar_min_rows": 0}
    with rhei_lake.open(oltp_path=path, storage="memory://", **options) as lake:
        lake.register_table("e")
        lake.register_table("o")
    app.execute("ALTER TABLE e RENAME TO e_old")
    with rhei_lake.open(oltp_path=path, storage="memory://", **options) as lake:
        assert set(lake.sync_status().waiting) == {"e"}
        app.execute("ALTER TABLE e_old RENAME TO e")  # its triggers came along: captured again
        for i in range(1, 4):
            app.execute("INSERT INTO o VALUES (?, ?)", (i, i))
            app.execute("INSERT INTO e VALUES (?, ?)", (i, "lots" if i == 2 else i))
            app.execute("UPDATE o SET n = n + 10 WHERE id = ?", (i,))
        report = lake.sync_now()
        assert set(report.waiting) == {"e"}
        assert_same_state(lake, app, "o")
        assert _changes_per_key(lake, "o") == {1: 2, 2: 2, 3: 2}
        with pytest.raises(TableNotReadyError) as info:
            lake.query("SELECT * FROM e")
        (again,) = [c for c in register_calls(str(info.value)) if "types=" not in c]
        with pytest.raises(TypeMismatchError) as refused_again:
            eval(again, {"lake": lake})  # noqa: S307 - the library's own message, followed as written
        message = str(refused_again.value)
        lake.execute(update_statement(message).replace(PLACEHOLDER, "2"))
        (again,) = [c for c in register_calls(message) if "types=" not in c]
        eval(again, {"lake": lake})  # noqa: S307
        app.execute("INSERT INTO o VALUES (4, 4)")
        app.execute("UPDATE e SET n = 9 WHERE id = 3")
        lake.sync_now()
        assert not lake.sync_status().waiting
        assert_same_state(lake, app, "e")
        assert_same_state(lake, app, "o")
        assert _changes_per_key(lake, "e") == {1: 1, 2: 1, 3: 2}
        assert _changes_per_key(lake, "o") == {1: 2, 2: 2, 3: 2, 4: 1}
    app.close()


def as_text(lake: rhei_lake.Lake, conn: sqlite3.Connection) -> None:
    """``e`` mirrored with ``n`` as TEXT: SQLite's values as their text (a DATETIME column keeps integers)."""
    lake_rows = sorted((r["id"], r["n"]) for r in lake.query("SELECT id, n FROM e").to_pylist())
    assert lake_rows == sorted((i, str(n)) for i, n in conn.execute("SELECT id, n FROM e"))


@pytest.mark.parametrize("retype", ["TEXT", "DATETIME"])
def test_a_table_retyped_while_no_memory_lake_was_open_is_taken_as_it_is(tmp_path, retype):
    """A memory:// lake takes its tables anew at open. A column retyped by a rebuild meanwhile (INTEGER to TEXT)
    was taken with the registered types, so the table waited, described as "declared INTEGER". It is taken as
    SQLite declares it now: as TEXT it mirrors exactly; a value that does not fit the new type (DATETIME) makes it
    wait with the type it has now, and the way on works as written."""
    path = str(tmp_path / "app.db")
    app = sqlite3.connect(path, isolation_level=None)
    app.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER)")
    app.execute("CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT)")
    app.execute("INSERT INTO e VALUES (1, 5)")
    with rhei_lake.open(oltp_path=path, storage="memory://") as lake:
        lake.register_table("e")
        lake.register_table("other")
    app.executescript(
        f"BEGIN; CREATE TABLE e2 (id INTEGER PRIMARY KEY, n {retype}); INSERT INTO e2 SELECT * FROM e; "
        "DROP TABLE e; ALTER TABLE e2 RENAME TO e; INSERT INTO e VALUES (2, 'lots'); COMMIT;"
    )
    with rhei_lake.open(oltp_path=path, storage="memory://") as lake:
        if retype == "DATETIME":
            message = lake.sync_status().waiting["e"].message
            assert "declared DATETIME" in message and "INTEGER" not in message
            (retyped,) = [c for c in register_calls(message) if "types=" in c]
            eval(retyped, {"lake": lake})  # noqa: S307 - the library's own message, followed as written
        assert not lake.sync_status().waiting and lake.table_spec("e").column("n").declared_type == "TEXT"
        as_text(lake, app)
        app.execute("UPDATE e SET n = 'more' WHERE id = 1")
        app.execute("INSERT INTO e VALUES (3, 7)")
        app.execute("INSERT INTO other VALUES (1, 'x')")
        lake.sync_now()
        as_text(lake, app)
        assert_same_state(lake, app, "other")
    app.close()
