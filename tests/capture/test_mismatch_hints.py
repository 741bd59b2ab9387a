"""Item 12: a TypeMismatchError names a way on, and following it literally works.

Each test reads the way on out of the error message (the ``lake.…(…)`` call or
the ``UPDATE`` it names) and runs exactly that; only a placeholder such as
``<a value that fits>`` is filled in.
"""

from __future__ import annotations

import re
import sqlite3
import struct
import uuid
from datetime import UTC, date, datetime, time

import pytest

import rhei_lake
from rhei_lake.capture.reader_process import fast_reader_available
from rhei_lake.errors import TypeMismatchError
from tests.support.oracle import assert_same_state, oltp_oracle

PLACEHOLDER = "<a value that fits>"


def calls(message: str, name: str) -> list[str]:
    """The ``lake.<name>(...)`` calls a message names, as written."""
    found = []
    for match in re.finditer(rf"lake\.{name}\(", message):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(message)):
            depth += {"(": 1, ")": -1}.get(message[end], 0)
            if depth == 0:
                break
        found.append(message[match.start() : end + 1])
    return found


def update_statement(message: str, fill: str | None = None) -> str:
    """The ``UPDATE …`` statement a message names (the placeholder replaced by ``fill``)."""
    match = re.search(r"\((UPDATE .*? WHERE .*?)\)", message)
    assert match, message
    statement = match.group(1)
    assert (PLACEHOLDER in statement) == (fill is not None), statement
    return statement.replace(PLACEHOLDER, fill) if fill is not None else statement


def follow(lake: rhei_lake.Lake, call: str) -> object:
    """Run a ``lake.…(…)`` call exactly as a message wrote it."""
    return eval(call, {"lake": lake})  # noqa: S307 - the text under test is the library's own message


def repair_as_written(lake: rhei_lake.Lake, message: str, fill: str | None = None) -> None:
    """The ``repair_event`` call and the ``UPDATE`` a message names, in the order it names them."""
    (repair,) = calls(message, "repair_event")
    update = update_statement(message, fill)
    steps = [lambda: follow(lake, repair.replace(PLACEHOLDER, fill) if fill else repair), lambda: lake.execute(update)]
    if message.index("UPDATE ") < message.index("lake.repair_event("):
        steps.reverse()
    for step in steps:
        step()


def _sqlite_app(path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


@pytest.fixture(params=["rows", "columnar"])
def open_lake(request, htap_lake):
    """Opens a lake on app.db; snapshots read row by row or by the columnar reader."""
    options = {"columnar_min_rows": 1} if request.param == "columnar" else {}
    return lambda: htap_lake(**options)


def refused_registration(lake: rhei_lake.Lake, table: str) -> TypeMismatchError:
    with pytest.raises(TypeMismatchError) as info:
        lake.register_table(table)
    return info.value


def register_calls(message: str) -> tuple[str, str]:
    """The message's ``register_table`` call without ``types=``, and the one with."""
    (again,) = [c for c in calls(message, "register_table") if "types=" not in c]
    (retype,) = [c for c in calls(message, "register_table") if "types=" in c]
    return again, retype


def _bad_table(path) -> None:
    app = _sqlite_app(path)
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
    app.executemany("INSERT INTO t VALUES (?, ?)", [(1, 10), (2, "lots"), (3, 30)])
    app.close()


def test_a_bad_value_in_a_snapshot_is_fixed_in_sqlite_and_registered_again(tmp_path, open_lake):
    _bad_table(tmp_path / "app.db")
    with open_lake() as lake:
        error = refused_registration(lake, "t")
        message = str(error)
        assert "repair_event" not in message  # the snapshot's rows are no events
        assert (error.table, error.column, error.primary_key, error.seq) == ("t", "n", {"id": 2}, None)
        lake.execute(update_statement(message, "20"))
        follow(lake, register_calls(message)[0])
        assert_same_state(lake, oltp_oracle(lake), "t")


@pytest.mark.parametrize("first", [7, None, 2.5])
def test_an_integer_past_2_53_in_a_numeric_column_names_its_own_row(tmp_path, open_lake, first):
    """Every value has a type the column takes; the refusal names the integer a double cannot hold,
    not the first row (whose suggested UPDATE would change the wrong row)."""
    app = _sqlite_app(tmp_path / "app.db")
    app.execute("CREATE TABLE n (id INTEGER PRIMARY KEY, v NUMERIC)")
    app.executemany("INSERT INTO n VALUES (?, ?)", [(0, first), (1, None), (2, 1.5), (3, 2**53 + 1), (4, None)])
    app.close()
    with open_lake() as lake:
        error = refused_registration(lake, "n")
        assert (error.column, error.primary_key) == ("v", {"id": 3}), error
        assert "9007199254740993" in str(error) and 'WHERE "id" = 3' in str(error)
        lake.execute(update_statement(str(error), "2.0"))
        follow(lake, register_calls(str(error))[0])
        assert_same_state(lake, oltp_oracle(lake), "n")
    app = _sqlite_app(tmp_path / "app.db")  # the same through the change feed
    with open_lake() as lake:
        app.execute("INSERT INTO n VALUES (5, 1.5), (6, -9007199254740995)")
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        assert info.value.primary_key == {"id": 6}, info.value
    app.close()


def test_a_bad_value_in_a_snapshot_can_be_mirrored_with_the_type_named(tmp_path, open_lake):
    _bad_table(tmp_path / "app.db")
    with open_lake() as lake:
        retype = register_calls(str(refused_registration(lake, "t")))[1]
        assert retype == "lake.register_table('t', types={'n': 'TEXT'})"
        follow(lake, retype)
        assert lake.query("SELECT id, n FROM t ORDER BY id").to_pylist() == [
            {"id": 1, "n": "10"},
            {"id": 2, "n": "lots"},
            {"id": 3, "n": "30"},
        ]
        lake.execute("INSERT INTO t VALUES (4, 40)")
        lake.sync_now()
        assert lake.query("SELECT n FROM t WHERE id = 4").to_pylist() == [{"n": "40"}]


def test_a_registration_that_failed_half_way_reopens_and_recovers(tmp_path, open_lake):
    """The process ends after the refused snapshot: the lake opens again, and the way on still works."""
    _bad_table(tmp_path / "app.db")
    with open_lake() as lake:
        message = str(refused_registration(lake, "t"))
    with open_lake() as lake:  # opening does not fail on the unfinished registration
        assert lake.sync_status().tables.get("t") is None or lake.query("SELECT count(*) AS n FROM t").to_pylist() == [
            {"n": 0}
        ]
        follow(lake, register_calls(message)[1])
        assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 3}]
    with open_lake() as lake:
        assert lake.table_spec("t").column("n").declared_type == "TEXT"
        assert lake.query("SELECT n FROM t ORDER BY id").column(0).to_pylist() == ["10", "lots", "30"]


def _events_table(path, *keys: str) -> None:
    app = _sqlite_app(path)
    app.execute("CREATE TABLE e (at DATETIME PRIMARY KEY, v TEXT)")
    app.executemany("INSERT INTO e VALUES (?, ?)", zip(keys, "ab", strict=False))
    app.close()


def test_a_refused_key_spelling_in_a_snapshot_names_its_canonical_form(tmp_path, open_lake):
    _events_table(tmp_path / "app.db", "2026-01-01 10:00:00", "2026-01-01T11:00:00Z")
    with open_lake() as lake:
        message = str(refused_registration(lake, "e"))
        assert "'2026-01-01 11:00:00'" in message
        lake.execute(update_statement(message))
        follow(lake, register_calls(message)[0])
        assert lake.query("SELECT v FROM e ORDER BY at").column(0).to_pylist() == ["a", "b"]


def test_two_spellings_of_one_key_can_be_mirrored_as_text(tmp_path, open_lake):
    _events_table(tmp_path / "app.db", "2026-01-01 10:00:00", "2026-01-01T10:00:00")
    with open_lake() as lake:
        follow(lake, register_calls(str(refused_registration(lake, "e")))[1])
        assert lake.query("SELECT at, v FROM e ORDER BY v").to_pylist() == [
            {"at": "2026-01-01 10:00:00", "v": "a"},
            {"at": "2026-01-01T10:00:00", "v": "b"},
        ]


def test_a_bad_event_is_repaired_as_its_message_says(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'lots')")
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        repair_as_written(lake, str(info.value), "7")
        lake.sync_now()
        assert_same_state(lake, oltp_oracle(lake), "t")


def test_a_refused_key_spelling_in_an_event_is_repaired_as_its_messages_say(tmp_path):
    """The UPDATE that fixes the row logs a delete of the old spelling, which stops the same way once."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE e (at TIMESTAMP PRIMARY KEY, v TEXT)")
        lake.register_table("e")
        lake.execute("INSERT INTO e VALUES ('2026-01-01 10:00:00', 'a')")
        lake.execute("INSERT INTO e VALUES ('2026-01-01T12:00:00+01:00', 'b')")
        stops = 0
        while True:
            try:
                lake.sync_now()
                break
            except TypeMismatchError as exc:
                stops += 1
                assert stops <= 2, exc
                repair_as_written(lake, str(exc))
        assert stops == 2
        assert lake.query("SELECT at, v FROM e ORDER BY at").to_pylist() == [
            {"at": datetime(2026, 1, 1, 10, tzinfo=UTC), "v": "a"},
            {"at": datetime(2026, 1, 1, 11, tzinfo=UTC), "v": "b"},
        ]
        assert [r[0] for r in oltp_oracle(lake).execute("SELECT at FROM e ORDER BY at")] == [
            "2026-01-01 10:00:00",
            "2026-01-01 11:00:00",
        ]


def test_a_bad_value_in_a_polled_table_is_fixed_in_the_source(tmp_path):
    source = _sqlite_app(tmp_path / "ext.db")
    source.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, n INTEGER, updated_at TEXT)")
    source.executemany("INSERT INTO items VALUES (?, ?, ?)", [(1, 1, "2026-01-01"), (2, "x", "2026-01-02")])
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    with rhei_lake.open(source=f"sqlite://{tmp_path}/ext.db", storage=str(tmp_path / "lake"), tables=[table]) as lake:
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        message = str(info.value)
        assert "repair_event" not in message and "event" not in message.split(":")[0]
        source.execute(update_statement(message, "2"))
        lake.sync_now()
        assert lake.query("SELECT id, n FROM items ORDER BY id").to_pylist() == [{"id": 1, "n": 1}, {"id": 2, "n": 2}]


@pytest.mark.parametrize("where", ["polled", "registered"])
def test_a_null_key_is_fixed_by_the_update_its_error_names(tmp_path, where):
    """SQLite lets a key column other than an INTEGER PRIMARY KEY hold NULL; the UPDATE the refusal names
    must find that row (it said WHERE "a" = NULL, which matches no row, so following it changed nothing)."""
    path = tmp_path / "app.db"
    app = _sqlite_app(path)
    app.execute("CREATE TABLE k (a INTEGER, b TEXT, updated_at TEXT, PRIMARY KEY (a, b))")
    app.executemany("INSERT INTO k VALUES (?, ?, ?)", [(1, "x", "2026-01-01"), (None, "x", "2026-01-02")])
    if where == "polled":
        table = rhei_lake.PolledTable("k", updated_at="updated_at")
        lake = rhei_lake.open(source=f"sqlite://{path}", storage=str(tmp_path / "lake"), tables=[table])
        retry = lake.sync_now
    else:
        lake = rhei_lake.open(oltp_path=str(path), storage=str(tmp_path / "lake"))
        retry = lambda: lake.register_table("k")  # noqa: E731
    with lake:
        with pytest.raises(TypeMismatchError) as info:
            retry()
        assert app.execute(update_statement(str(info.value), "2")).rowcount == 1
        retry()
        lake.sync_now()
        assert sorted((r["a"], r["b"]) for r in lake.query("SELECT a, b FROM k").to_pylist()) == [(1, "x"), (2, "x")]
    app.close()


def test_a_refused_key_spelling_in_a_polled_table_is_fixed_in_the_source(tmp_path):
    source = _sqlite_app(tmp_path / "ext.db")
    source.execute("CREATE TABLE items (at DATETIME PRIMARY KEY, updated_at TEXT)")
    source.executemany("INSERT INTO items VALUES (?, ?)", [("2026-01-01T10:00:00", "2026-01-01")])
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    with rhei_lake.open(source=f"sqlite://{tmp_path}/ext.db", storage=str(tmp_path / "lake"), tables=[table]) as lake:
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        source.execute(update_statement(str(info.value)))
        lake.sync_now()
        assert lake.query("SELECT at FROM items").to_pylist() == [{"at": datetime(2026, 1, 1, 10, tzinfo=UTC)}]


def test_a_refused_key_spelling_met_by_hard_delete_detection_is_fixed_in_the_source(tmp_path):
    """A row that commits late (updated_at behind the cursor) is found by the key scan, which refuses alike."""
    source = _sqlite_app(tmp_path / "ext.db")
    source.execute("CREATE TABLE items (at DATETIME PRIMARY KEY, updated_at TEXT)")
    source.execute("INSERT INTO items VALUES ('2026-01-01 09:00:00', '2026-01-05')")
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    with rhei_lake.open(
        source=f"sqlite://{tmp_path}/ext.db", storage=str(tmp_path / "lake"), tables=[table], hard_delete_interval=0
    ) as lake:
        lake.sync_now()
        source.execute("INSERT INTO items VALUES ('2026-01-01T10:00:00', '2026-01-02')")
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        assert info.value.primary_key == {"at": "2026-01-01T10:00:00"}
        source.execute(update_statement(str(info.value)))
        lake.sync_now()
        assert lake.query("SELECT at FROM items ORDER BY at").column(0).to_pylist() == [
            datetime(2026, 1, 1, 9, tzinfo=UTC),
            datetime(2026, 1, 1, 10, tzinfo=UTC),
        ]


def test_hard_delete_detection_does_not_take_another_spelling_for_the_deleted_key(tmp_path):
    """Item 5 in the key scan: K deleted and K' (K's instant, spelt otherwise) inserted behind the cursor."""
    source = _sqlite_app(tmp_path / "ext.db")
    source.execute("CREATE TABLE items (at DATETIME PRIMARY KEY, v TEXT, updated_at TEXT)")
    source.executemany(
        "INSERT INTO items VALUES (?, ?, ?)",
        [("2026-01-01 10:00:00", "k", "2026-01-05"), ("2026-01-02 10:00:00", "l", "2026-01-06")],
    )
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    with rhei_lake.open(
        source=f"sqlite://{tmp_path}/ext.db", storage=str(tmp_path / "lake"), tables=[table], hard_delete_interval=0
    ) as lake:
        lake.sync_now()
        source.execute("DELETE FROM items WHERE v = 'k'")
        source.execute("INSERT INTO items VALUES ('2026-01-01T10:00:00', 'other', '2026-01-05')")
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        assert info.value.primary_key == {"at": "2026-01-01T10:00:00"}
        source.execute(update_statement(str(info.value)))
        source.execute("UPDATE items SET updated_at = '2026-01-07' WHERE v = 'other'")
        lake.sync_now()
        assert lake.query("SELECT v FROM items ORDER BY at").column(0).to_pylist() == ["other", "l"]


@pytest.mark.parametrize("columnar_min_rows", [0, 1])
def test_a_postgresql_text_key_read_as_a_timestamp_refuses_other_spellings(
    postgres, pg_database, tmp_path, columnar_min_rows
):
    """PostgreSQL's own types are canonical; a text key that types= reads as a timestamp is checked like SQLite's."""
    if columnar_min_rows:
        pytest.importorskip("adbc_driver_postgresql")
    conn = postgres.connect(pg_database)
    conn.execute("CREATE TABLE items (at text PRIMARY KEY, updated_at timestamptz NOT NULL)")
    spellings = ["2026-01-01 10:00:00+00:00", "2026-01-01T10:00:00Z"]  # both cast by Arrow to one instant
    conn.execute("INSERT INTO items VALUES (%s, now()), (%s, now())", spellings)
    table = rhei_lake.PolledTable("items", updated_at="updated_at", types={"at": "TIMESTAMP"})
    with rhei_lake.open(
        source=postgres.url(pg_database),
        storage=str(tmp_path / "lake"),
        tables=[table],
        columnar_min_rows=columnar_min_rows,
    ) as lake:
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        assert info.value.primary_key["at"] in spellings
        assert "'2026-01-01 10:00:00'" in str(info.value)
        assert lake.query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 0}]
        conn.execute("UPDATE items SET at = '2026-01-01 10:00:00' WHERE at = %s", spellings[:1])
        conn.execute("DELETE FROM items WHERE at = %s", spellings[1:])
        lake.sync_now()
        assert lake.query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 1}]


# -- the other ways on a registration names -------------------------------------------


def test_an_untyped_column_is_mirrored_with_the_types_its_error_names(tmp_path):
    app = _sqlite_app(tmp_path / "app.db")
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, note)")
    app.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, 42)])
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        with pytest.raises(rhei_lake.SchemaError) as info:
            lake.register_table("t")
        types = re.search(r"types=(\{.*?\})", str(info.value)).group(1)
        follow(lake, f"lake.register_table('t', types={types})")
        assert lake.query("SELECT note FROM t ORDER BY id").column(0).to_pylist() == ["a", "42"]
    polled = _sqlite_app(tmp_path / "ext.db")
    polled.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, note, updated_at TEXT)")
    polled.execute("INSERT INTO items VALUES (1, 'a', '2026-01-01')")
    url = f"sqlite://{tmp_path}/ext.db"
    with pytest.raises(rhei_lake.SchemaError) as info:
        rhei_lake.open(source=url, tables=[rhei_lake.PolledTable("items", updated_at="updated_at")])
    assert "PolledTable" in str(info.value)
    types = eval(re.search(r"types=(\{.*?\})", str(info.value)).group(1))  # noqa: S307
    table = rhei_lake.PolledTable("items", updated_at="updated_at", types=types)
    with rhei_lake.open(source=url, tables=[table]) as lake:
        lake.sync_now()
        assert lake.query("SELECT note FROM items").to_pylist() == [{"note": "a"}]


def test_a_table_without_a_primary_key_gets_one_and_is_registered_again(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (name TEXT, n INTEGER)")
        lake.execute("INSERT INTO t VALUES ('a', 1)")
        with pytest.raises(rhei_lake.SchemaError, match="Add one .* and register again"):
            lake.register_table("t")
        lake.execute_batch(
            [  # SQLite adds a key by rebuilding the table
                "CREATE TABLE t_new (id INTEGER PRIMARY KEY, name TEXT, n INTEGER)",
                "INSERT INTO t_new (name, n) SELECT name, n FROM t",
                "DROP TABLE t",
                "ALTER TABLE t_new RENAME TO t",
            ]
        )
        lake.register_table("t")
        assert_same_state(lake, oltp_oracle(lake), "t")


def test_changing_an_unfinished_registration_names_register_table(tmp_path):
    _bad_table(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        refused_registration(lake, "t")
        with pytest.raises(rhei_lake.SchemaError) as info:
            lake.add_column("t", "extra", "TEXT")
        lake.execute("UPDATE t SET n = 20 WHERE id = 2")
        (register,) = calls(str(info.value), "register_table")
        follow(lake, register)
        lake.add_column("t", "extra", "TEXT")
        assert_same_state(lake, oltp_oracle(lake), "t")


def test_registering_a_mirrored_table_with_other_types_says_what_can_change(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
        lake.register_table("t")
        with pytest.raises(rhei_lake.SchemaError, match="types= applies to a table's first registration only") as info:
            lake.register_table("t", types={"n": "TEXT"})
        assert "lake.add_column" in str(info.value)
        lake.add_column("t", "n_text", "TEXT")
        assert lake.register_table("t").column_names == ["id", "n", "n_text"]


def test_a_polled_table_whose_columns_changed_names_a_way_that_works(tmp_path):
    source = _sqlite_app(tmp_path / "ext.db")
    source.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, updated_at TEXT)")
    source.execute("INSERT INTO items VALUES (1, '2026-01-01')")
    url, table = f"sqlite://{tmp_path}/ext.db", rhei_lake.PolledTable("items", updated_at="updated_at")
    with rhei_lake.open(source=url, storage=str(tmp_path / "lake"), tables=[table]) as lake:
        lake.sync_now()
    source.execute("ALTER TABLE items ADD COLUMN note TEXT")
    try:
        lake = rhei_lake.open(source=url, storage=str(tmp_path / "lake"), tables=[table])
    except rhei_lake.SchemaError as exc:
        assert "add_column" not in str(exc) and "new storage location" in str(exc)
        with rhei_lake.open(source=url, storage=str(tmp_path / "lake-2"), tables=[table]) as lake:
            lake.sync_now()
            assert lake.query("SELECT id, note FROM items").to_pylist() == [{"id": 1, "note": None}]
    else:  # the added column is followed
        with lake:
            lake.sync_now()
            assert lake.query("SELECT id, note FROM items").to_pylist() == [{"id": 1, "note": None}]


def test_a_refused_registration_takes_other_types_on_every_storage_tier(tmp_path, storage):
    """The empty changelog of a refused snapshot gets the new types on memory://, a local path and S3."""
    url, options = storage
    _bad_table(tmp_path / "app.db")

    def opened() -> rhei_lake.Lake:
        return rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options)

    with opened() as lake:
        message = str(refused_registration(lake, "t"))
    with opened() as lake:
        follow(lake, register_calls(message)[1])
        lake.execute("UPDATE t SET n = 'more' WHERE id = 3")
        lake.sync_now()
    with opened() as lake:
        assert lake.query("SELECT n FROM t ORDER BY id").column(0).to_pylist() == ["10", "lots", "more"]
        assert lake.query("SELECT count(*) AS n FROM t_changes").to_pylist() == [{"n": 4}]


# -- a key another row holds (item 5 meets item 12) -------------------------------------------

FREE = "<a key no other row holds>"


def _twins(lake: rhei_lake.Lake) -> TypeMismatchError:
    """``e`` mirrored with one row at a canonical key, then a second row at another spelling of that instant."""
    lake.execute("CREATE TABLE e (at DATETIME PRIMARY KEY, v TEXT)")
    lake.execute("INSERT INTO e VALUES ('2026-01-01 10:00:00', 'a')")
    lake.register_table("e")
    lake.execute("INSERT INTO e VALUES ('2026-01-01T10:00:00', 'b')")
    with pytest.raises(TypeMismatchError) as info:
        lake.sync_now()
    return info.value


def _lake_rows(lake: rhei_lake.Lake) -> list[tuple]:
    return sorted(
        (r["at"].strftime("%Y-%m-%d %H:%M:%S"), r["v"]) for r in lake.query("SELECT at, v FROM e").to_pylist()
    )


def test_a_repair_that_would_make_two_rows_one_is_refused(tmp_path):
    """The error names no way on that fails: storing the key canonically breaks SQLite's UNIQUE, and a
    repair to the key another row holds is refused; the lake still holds that row alone."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        error = _twins(lake)
        message = str(error)
        assert "which another row holds" in message and "make the keys distinct" in message
        assert "lake.repair_event('e', 3, {'at': '2026-01-01 10:00:00'})" not in message
        with pytest.raises(rhei_lake.SourceError, match="UNIQUE"):
            lake.execute("UPDATE e SET at = '2026-01-01 10:00:00' WHERE at = '2026-01-01T10:00:00'")
        with pytest.raises(TypeMismatchError, match="two SQLite rows would become one lake row") as refused:
            lake.repair_event("e", error.seq, {"at": "2026-01-01 10:00:00"})
        assert "while the lake holds another row with that key" in str(refused.value)
        with pytest.raises(TypeMismatchError):
            lake.sync_now()  # the event is as it was
        assert _lake_rows(lake) == [("2026-01-01 10:00:00", "a")]


def test_a_key_another_row_holds_is_made_distinct_as_the_errors_say(tmp_path):
    """Followed as written (the new key filled in): the UPDATE, the repair, and the delete of the old
    spelling it logs, corrected the same way; the lake then holds both rows, as SQLite does."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        message = str(_twins(lake))
        stops = 0
        while True:
            assert FREE in message, message
            repair_as_written(lake, message.replace(FREE, "2026-01-01 10:00:01"))
            try:
                lake.sync_now()
                break
            except TypeMismatchError as exc:
                stops += 1
                assert stops <= 1, exc
                message = str(exc)
        assert stops == 1
        rows = sorted(oltp_oracle(lake).execute("SELECT at, v FROM e"))
        assert rows == [("2026-01-01 10:00:00", "a"), ("2026-01-01 10:00:01", "b")] == _lake_rows(lake)


def test_a_key_another_row_holds_is_mirrored_as_text_in_a_new_lake_as_the_error_says(tmp_path):
    path = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=path, storage=str(tmp_path / "lake")) as lake:
        message = str(_twins(lake))
        lake.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
        lake.register_table("other")
        lake.execute("INSERT INTO other VALUES (1)")
    (detach,) = re.findall(r"rhei_lake\.detach_database\((.*?)\)", message)
    eval(f"rhei_lake.detach_database({detach})", {"rhei_lake": rhei_lake})  # noqa: S307
    with rhei_lake.open(oltp_path=path, storage=str(tmp_path / "new-lake")) as lake:
        assert "e" in lake.sync_status().waiting and "other" in lake.tables()
        (retype,) = [c for c in calls(message, "register_table") if "types=" in c]
        follow(lake, retype)
        assert_same_state(lake, oltp_oracle(lake), "e")
        assert_same_state(lake, oltp_oracle(lake), "other")
    with rhei_lake.open(storage=str(tmp_path / "lake")) as old:  # the old lake stays readable
        assert _lake_rows(old) == [("2026-01-01 10:00:00", "a")]


def test_a_key_repair_is_refused_while_the_row_keeps_another_spelling(tmp_path):
    """Repairing first and never fixing the row would leave room for a second row at the canonical key."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE e (at DATETIME PRIMARY KEY, v TEXT)")
        lake.register_table("e")
        lake.execute("INSERT INTO e VALUES ('2026-01-01T10:00:00', 'b')")
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        message = str(info.value)
        assert message.index("UPDATE ") < message.index("lake.repair_event(")  # the row first
        with pytest.raises(TypeMismatchError, match="holds no row with that key in its canonical spelling"):
            lake.repair_event("e", info.value.seq, {"at": "2026-01-01 10:00:00"})
        repair_as_written(lake, message)
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()  # the delete of the old spelling
        repair_as_written(lake, str(info.value))
        lake.sync_now()
        assert (
            _lake_rows(lake)
            == sorted(oltp_oracle(lake).execute("SELECT at, v FROM e"))
            == [("2026-01-01 10:00:00", "b")]
        )
        with pytest.raises(rhei_lake.SourceError, match="UNIQUE"):  # the key is SQLite's to guard now
            lake.execute("INSERT INTO e VALUES ('2026-01-01 10:00:00', 'again')")


def test_a_repaired_delete_cannot_remove_another_rows_key(tmp_path):
    """The row was given a new key in the application: its delete corrected to the canonical key would delete
    the other row's lake row, so it is refused; corrected to the new key it goes through."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        first = _twins(lake)
        lake.execute("UPDATE e SET at = '2026-01-02 00:00:00' WHERE at = '2026-01-01T10:00:00'")
        lake.repair_event("e", first.seq, {"at": "2026-01-02 00:00:00"})
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        assert "which another row holds" in str(info.value)  # the canonical key is the other row's
        with pytest.raises(TypeMismatchError, match="two SQLite rows would become one lake row"):
            lake.repair_event("e", info.value.seq, {"at": "2026-01-01 10:00:00"})
        lake.repair_event("e", info.value.seq, {"at": "2026-01-02 00:00:00"})
        lake.sync_now()
        assert (
            _lake_rows(lake)
            == sorted(oltp_oracle(lake).execute("SELECT at, v FROM e"))
            == [("2026-01-01 10:00:00", "a"), ("2026-01-02 00:00:00", "b")]
        )


def test_a_snapshot_with_two_spellings_of_one_key_is_made_distinct_as_the_error_says(tmp_path, open_lake):
    _events_table(tmp_path / "app.db", "2026-01-01 10:00:00", "2026-01-01T10:00:00")
    with open_lake() as lake:
        message = str(refused_registration(lake, "e"))
        assert "which another row holds" in message and FREE in message
        lake.execute(update_statement(message.replace(FREE, "2026-01-01 10:00:01")))
        follow(lake, register_calls(message)[0])
        assert _lake_rows(lake) == sorted(oltp_oracle(lake).execute("SELECT at, v FROM e"))


# -- ways on that name register_table for a table registered already ------------------------------------


@pytest.mark.parametrize("way", ["fix the row", "mirror as text"])
def test_a_mirrored_table_taken_anew_at_open_waits_on_a_refused_key_and_takes_its_ways_on(tmp_path, way):
    """A memory:// lake takes its tables anew whenever it opens. A key in a second spelling written meanwhile
    used to fail the open, with a way on (register_table again, or with types=) that needs an open lake; the
    lake opens, the table waits, and each way on works as written."""
    path = str(tmp_path / "app.db")
    _events_table(path, "2026-01-01 10:00:00")
    with rhei_lake.open(oltp_path=path, storage="memory://") as lake:
        lake.register_table("e")
    app = _sqlite_app(path)
    app.execute("INSERT INTO e VALUES ('2026-01-01T11:00:00', 'b')")
    with rhei_lake.open(oltp_path=path, storage="memory://") as lake:
        assert "e" not in lake.tables()
        message = lake.sync_status().waiting["e"].message
        with pytest.raises(rhei_lake.TableNotReadyError):
            lake.query("SELECT * FROM e")
        again, retype = register_calls(message)
        if way == "fix the row":
            lake.execute(update_statement(message))
            follow(lake, again)
        else:
            follow(lake, retype)
            app.execute("INSERT INTO e VALUES ('2026-01-02T00:00:00Z', 'c')")
            lake.sync_now()
        rows = lake.query("SELECT at, v FROM e").to_pylist()
        shown = sorted(
            (r["at"] if way != "fix the row" else r["at"].strftime("%Y-%m-%d %H:%M:%S"), r["v"]) for r in rows
        )
        assert shown == sorted(app.execute("SELECT at, v FROM e"))
    app.close()


@pytest.mark.parametrize("way", ["fix the row", "mirror as another type"])
def test_a_registration_refused_again_keeps_the_types_it_was_made_with(tmp_path, way):
    """Registered with types= and refused for another column: ``register_table`` again (as the message names it)
    keeps the types, and so does the call that mirrors the other column as another type (both used to drop
    them, and the key's second spelling was refused then)."""
    path = str(tmp_path / "app.db")
    app = _sqlite_app(path)
    app.execute("CREATE TABLE e (at DATETIME PRIMARY KEY, n INTEGER)")
    app.executemany("INSERT INTO e VALUES (?, ?)", [("2026-01-01T10:00:00", "lots"), ("2026-01-01 10:00:00", 1)])
    with rhei_lake.open(oltp_path=path, storage=str(tmp_path / "lake")) as lake:
        with pytest.raises(TypeMismatchError) as info:
            lake.register_table("e", types={"at": "TEXT"})
        message = str(info.value)
        assert info.value.column == "n"
        (again,) = [c for c in calls(message, "register_table") if "'n'" not in c]
        (retype,) = [c for c in calls(message, "register_table") if "'n'" in c]
        if way == "fix the row":
            lake.execute(update_statement(message, "2"))
            with pytest.raises(TypeMismatchError) as declared:  # types={}: the declared types, not those given
                lake.register_table("e", types={})
            assert declared.value.column == "at"
            follow(lake, again)
        else:
            follow(lake, retype)
        app.execute("INSERT INTO e VALUES ('2026-01-02T00:00:00Z', 3)")
        lake.sync_now()
        cast = int if way == "fix the row" else str  # mirrored as TEXT: SQLite's integers as their text
        expected = sorted((at, cast(n)) for at, n in app.execute("SELECT at, n FROM e"))
        assert sorted((r["at"], r["n"]) for r in lake.query("SELECT at, n FROM e").to_pylist()) == expected
        spec = lake.register_table("e")  # registered as it is: no change, no error
        assert spec.column("at").declared_type == "TEXT"
        assert spec.column("n").declared_type == ("INTEGER" if way == "fix the row" else "TEXT")
    app.close()


def test_other_types_for_a_table_a_reopen_mirrored_take_the_new_lake_its_error_names(tmp_path):
    """A registration refused for a key spelling names register_table(types=...); the row is fixed from another
    connection and the lake reopened, which takes the snapshot: the table is mirrored with its declared types.
    types= is then refused, naming the way that works (stop mirroring it, detach, register it in a new lake),
    followed as written; the old lake keeps what it had."""
    path = str(tmp_path / "app.db")
    _events_table(path, "2026-01-01T10:00:00Z")
    with rhei_lake.open(oltp_path=path, storage=str(tmp_path / "lake")) as lake:
        (_, retype) = register_calls(str(refused_registration(lake, "e")))
    app = _sqlite_app(path)
    app.execute("UPDATE e SET at = '2026-01-01 10:00:00'")
    lake = rhei_lake.open(oltp_path=path, storage=str(tmp_path / "lake"))
    assert "e" in lake.tables()
    with pytest.raises(rhei_lake.SchemaError, match="types= applies to a table's first registration only") as info:
        follow(lake, retype)
    message = str(info.value)
    (unregister,) = calls(message, "unregister_table")
    (detach,) = re.findall(r"rhei_lake\.detach_database\((.*?)\)", message)
    (register,) = calls(message, "register_table")
    assert register == retype
    follow(lake, unregister)
    lake.close()
    eval(f"rhei_lake.detach_database({detach})", {"rhei_lake": rhei_lake})  # noqa: S307
    with rhei_lake.open(oltp_path=path, storage=str(tmp_path / "new-lake")) as lake:
        follow(lake, register)
        app.execute("INSERT INTO e VALUES ('2026-01-01T11:00:00', 'b')")
        lake.sync_now()
        assert lake.table_spec("e").column("at").declared_type == "TEXT"
        assert_same_state(lake, app, "e")
    with rhei_lake.open(storage=str(tmp_path / "lake")) as old:
        assert _lake_rows(old) == [("2026-01-01 10:00:00", "a")]
    app.close()


@pytest.mark.parametrize("storage", ["memory://", "local"])
@pytest.mark.parametrize("types", [None, {"n": "TEXT"}])
def test_registering_an_unregistered_table_again_names_the_new_lake_that_takes_it(tmp_path, storage, types):
    """unregister_table keeps the table's Delta tables, so registering it again in the same lake is refused, with
    or without types= (it said "kept from before it was dropped ... choose another name" for types=, and left the
    table half-registered with those types, so a plain register_table failed the same way after it). The error
    names a new lake; followed as written, the table is mirrored exactly with the types asked for."""
    path = str(tmp_path / "app.db")
    url = storage if storage == "memory://" else str(tmp_path / "lake")
    app = _sqlite_app(path)
    app.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER)")
    app.execute("CREATE TABLE o (id INTEGER PRIMARY KEY, n INTEGER)")
    app.execute("INSERT INTO e VALUES (1, 5)")
    lake = rhei_lake.open(oltp_path=path, storage=url)
    lake.register_table("e")
    lake.register_table("o")
    lake.unregister_table("e")
    asked = "lake.register_table('e'" + (f", types={types!r})" if types else ")")
    for _ in range(2):  # refused alike the second time: the first refusal left nothing behind
        with pytest.raises(rhei_lake.SchemaError, match="already holds its history") as info:
            follow(lake, asked)
        assert "e" not in lake.tables() and not lake.sync_status().waiting
    message = str(info.value)
    assert "choose another name" not in message
    (register,) = calls(message, "register_table")
    assert register == asked
    app.execute("INSERT INTO o VALUES (1, 1)")
    lake.sync_now()
    assert_same_state(lake, app, "o")
    lake.close()
    detach = re.findall(r"rhei_lake\.detach_database\((.*?)\)", message)
    assert len(detach) == (1 if storage == "local" else 0)
    for where in detach:
        eval(f"rhei_lake.detach_database({where})", {"rhei_lake": rhei_lake})  # noqa: S307
    new = "memory://" if storage == "memory://" else str(tmp_path / "new-lake")
    app.execute("INSERT INTO e VALUES (2, 6)")
    with rhei_lake.open(oltp_path=path, storage=new) as lake:
        follow(lake, register)
        app.execute("UPDATE e SET n = 7 WHERE id = 1")
        app.execute("INSERT INTO o VALUES (2, 2)")
        lake.sync_now()
        assert lake.table_spec("e").column("n").declared_type == ("TEXT" if types else "INTEGER")
        cast = str if types else int
        lake_rows = sorted((r["id"], r["n"]) for r in lake.query("SELECT id, n FROM e").to_pylist())
        assert lake_rows == sorted((i, cast(n)) for i, n in app.execute("SELECT id, n FROM e"))
        assert_same_state(lake, app, "o")
    app.close()


def test_registering_again_keeps_no_type_for_a_column_the_application_dropped(tmp_path):
    """A refused registration made with types= for a column the application then drops (rebuilding the table,
    the bad value fixed): the plain register_table the error names takes the table as it is now (it raised
    "types= names unknown columns", naming a types= nobody passed)."""
    path = str(tmp_path / "app.db")
    app = _sqlite_app(path)
    app.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER, y)")
    app.execute("INSERT INTO e VALUES (1, 'lots', 'a')")
    with rhei_lake.open(oltp_path=path, storage=str(tmp_path / "lake")) as lake:
        with pytest.raises(TypeMismatchError):
            lake.register_table("e", types={"y": "TEXT"})
        app.executescript(
            "BEGIN; CREATE TABLE e2 (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO e2 SELECT id, 2 FROM e; "
            "DROP TABLE e; ALTER TABLE e2 RENAME TO e; COMMIT;"
        )
        spec = lake.register_table("e")
        assert [c.name for c in spec.columns] == ["id", "n"]
        app.execute("INSERT INTO e VALUES (2, 3)")
        lake.sync_now()
        assert_same_state(lake, app, "e")
    app.close()


@pytest.mark.parametrize("way", ["stop mirroring it", "restore it"])
def test_a_mirrored_table_gone_when_a_memory_lake_opens_waits_and_takes_its_ways_on(tmp_path, way):
    """A memory:// lake takes its tables anew at open; a mirrored table renamed away meanwhile failed the open
    ("does not exist"), which no way on could follow without an open lake. The table waits: the sync refuses it
    as a table renamed away naming unregister_table, or, once restored (rebuilt), register_table takes it anew with
    the writes made meanwhile, each row once."""
    path = str(tmp_path / "app.db")
    app = _sqlite_app(path)
    app.execute("CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER)")
    app.execute("CREATE TABLE o (id INTEGER PRIMARY KEY, n INTEGER)")
    with rhei_lake.open(oltp_path=path, storage="memory://") as lake:
        lake.register_table("e")
        lake.register_table("o")
        app.execute("INSERT INTO e VALUES (1, 1)")
    app.execute("INSERT INTO e VALUES (2, 2)")  # captured while no lake is open
    app.execute("ALTER TABLE e RENAME TO e_old")
    with rhei_lake.open(oltp_path=path, storage="memory://") as lake:
        assert "e" in lake.sync_status().waiting and lake.tables() == ["o"]
        app.execute("INSERT INTO o VALUES (1, 1)")
        if way == "stop mirroring it":
            with pytest.raises(rhei_lake.SchemaChangedError, match="renamed to 'e_old'") as info:
                lake.sync_now()
            (unregister,) = re.findall(r"unregister_table\('e'\)", str(info.value))
            follow(lake, f"lake.{unregister}")
            lake.sync_now()
        else:
            app.executescript(
                "BEGIN; CREATE TABLE e (id INTEGER PRIMARY KEY, n INTEGER); INSERT INTO e SELECT * FROM e_old; "
                "DROP TABLE e_old; COMMIT;"
            )
            app.execute("INSERT INTO e VALUES (3, 3)")
            lake.sync_now()  # the rebuilt table is not followed: it has no lake copy yet
            with pytest.raises(rhei_lake.TableNotReadyError) as not_ready:
                lake.query("SELECT * FROM e")
            (again,) = calls(str(not_ready.value), "register_table")
            follow(lake, again)
            app.execute("UPDATE e SET n = 9 WHERE id = 1")
            lake.sync_now()
            assert_same_state(lake, app, "e")
            changes = lake.query("SELECT id, count(*) AS c FROM e_changes GROUP BY id ORDER BY id").to_pylist()
            assert changes == [{"id": 1, "c": 2}, {"id": 2, "c": 1}, {"id": 3, "c": 1}]
        assert_same_state(lake, app, "o")
    app.close()


@pytest.mark.skipif(not fast_reader_available(), reason="adbc-driver-sqlite is not installed")
@pytest.mark.parametrize("at", [1, 150, 300])  # the log's first event, one in the middle, the last
def test_a_blob_in_a_text_column_stops_the_columnar_log_read_and_the_row_path_names_its_event(tmp_path, at):
    """A blob ADBC would read as text past its first batch stops the columnar read of the CDC
    log; the row path then commits the events before it and names the row. (A read of 300
    events comes in batches of 300 rows, the first led by the witness: the last event is
    alone in the second batch.)"""
    options = {"columnar_min_rows": 1, "batch_size": 300}
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://", **options) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
        lake.register_table("t")
        for i in range(1, 301):
            lake.execute("INSERT INTO t VALUES (?, ?)", (i, b"blob" if i == at else f"v{i}"))
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        assert info.value.column == "s" and info.value.primary_key == {"id": at}
        assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": at - 1}]
        repair_as_written(lake, str(info.value), "'fixed'")
        lake.sync_now()
        assert_same_state(lake, lake._oltp, "t")


@pytest.mark.parametrize(
    "value",
    [0, -(2**63), 2**63 - 1, 1.0000000000000002, -0.0, 1e308, float("inf"), "it's", "", b"\x00\xff", None],
)
def test_the_literals_in_suggested_fixes_read_back_as_the_value_in_sqlite(value):
    from rhei_lake.capture.events import sql_literal

    got = sqlite3.connect(":memory:").execute(f"SELECT {sql_literal(value)}").fetchone()[0]
    assert type(got) is type(value) and (got == value or got is None)
    if isinstance(value, float):
        assert struct.pack("<d", got) == struct.pack("<d", value)


def test_dates_times_and_uuids_in_suggested_fixes_are_quoted_text():
    from rhei_lake.capture.events import sql_literal

    stamp = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert sql_literal(stamp) == "'2026-01-02 03:04:05.000006+00:00'"
    assert sql_literal(date(2026, 1, 2)) == "'2026-01-02'"
    assert sql_literal(time(3, 4)) == "'03:04:00'"
    assert sql_literal(uuid.UUID(int=1)) == "'00000000-0000-0000-0000-000000000001'"
