"""Sidecar bad input and failures: each gives a clear error naming what is wrong, and nothing is half-synced."""

from __future__ import annotations

import re
import sqlite3
from datetime import date, timedelta

import pytest

import rhei_lake
from rhei_lake.errors import (
    NonMonotonicUpdateError,
    ReadOnlySourceError,
    SchemaError,
    SourceError,
    SourceUnavailableError,
    TypeMismatchError,
)
from tests.support.postgres import PASSWORD, REQUIRE_POSTGRES, PostgresUnavailable, start_postgres
from tests.support.sidecar_source import START, items_table, postgres_source
from tests.support.sqlite_file_watch import descriptors


def _open(source_db, tmp_path, *tables, **options):
    return rhei_lake.open(
        source=source_db.url, storage=str(tmp_path / "lake"), tables=list(tables) or [items_table()], **options
    )


@pytest.mark.parametrize(
    ("table", "named"),
    [
        (rhei_lake.PolledTable("orders", updated_at="updated_at"), "'orders'"),
        (rhei_lake.PolledTable("items", updated_at="changed_at"), "'changed_at'"),
        (rhei_lake.PolledTable("items", updated_at="updated_at", deleted_at="removed"), "'removed'"),
        (rhei_lake.PolledTable("items", updated_at="updated_at", primary_key=["sku"]), "'sku'"),
        (rhei_lake.PolledTable("items", updated_at="updated_at", types={"nope": "TEXT"}), "nope"),
    ],
)
def test_missing_table_or_column_is_named(source_db, tmp_path, table, named):
    with pytest.raises(SchemaError, match=named):
        _open(source_db, tmp_path, table)


def test_table_without_primary_key_needs_one(source_db, tmp_path):
    source_db.execute("CREATE TABLE events (name TEXT, updated_at TEXT)")
    with pytest.raises(SchemaError, match="declares no primary key"):
        _open(source_db, tmp_path, rhei_lake.PolledTable("events", updated_at="updated_at"))
    with _open(source_db, tmp_path, rhei_lake.PolledTable("events", updated_at="updated_at", primary_key=["name"])):
        pass


def test_missing_sqlite_file(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        rhei_lake.open(source=f"sqlite://{tmp_path}/nope.db", tables=[items_table()])


def test_unreachable_server_is_transient(tmp_path):
    from tests.support.moto_server import free_port

    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/shop"
    with pytest.raises(SourceUnavailableError, match="unreachable") as info:
        rhei_lake.open(source=url, tables=[items_table()])
    assert info.value.transient
    assert PASSWORD not in str(info.value)


def test_wrong_credentials_and_database_are_named(postgres, pg_database):
    with pytest.raises(SourceError, match="wrong credentials") as info:
        rhei_lake.open(source=postgres.url(pg_database, password="not-it"), tables=[items_table()])
    assert not info.value.transient
    assert "not-it" not in str(info.value)
    with pytest.raises(SourceError, match="database does not exist"):
        rhei_lake.open(source=postgres.url("no_such_db"), tables=[items_table()])


def test_password_never_shown(postgres, pg_database, tmp_path):
    conn = postgres.connect(pg_database)
    conn.execute("CREATE TABLE items (id int PRIMARY KEY, updated_at timestamptz, deleted_at timestamptz)")
    with rhei_lake.open(source=postgres.url(pg_database), storage=str(tmp_path / "l"), tables=[items_table()]) as lake:
        for text in (repr(lake), repr(lake.config), str(lake.config), str(lake.table_spec("items"))):
            assert PASSWORD not in text and "***" in text
    conn.close()


def test_execute_is_refused_and_the_source_is_never_written(source_db, tmp_path):
    path = source_db.url.removeprefix("sqlite://")
    before = descriptors(path) if source_db.kind == "sqlite" else {}
    with _open(source_db, tmp_path) as lake:
        with pytest.raises(ReadOnlySourceError, match="read-only"):
            lake.execute("DELETE FROM items")
        with pytest.raises(ReadOnlySourceError):
            lake.register_table("items")
        lake.sync_now()
        if source_db.kind == "sqlite":  # what the lake opened on the file, the system lets it only read
            opened = {fd: writes for fd, writes in descriptors(path).items() if fd not in before}
            assert opened and not any(opened.values()), opened
        else:
            with pytest.raises(ReadOnlySourceError):
                lake.sync_engine.source._query("CREATE TABLE x (a int)", (), "test")


def test_non_monotonic_updated_at_stops_before_the_row(source_db, tmp_path):
    stamp = source_db.stamp
    source_db.executemany(
        "INSERT INTO items VALUES (?, 'a', 1.0, 1, ?, NULL)",
        [(i, stamp(START + timedelta(seconds=i))) for i in range(1, 6)],
    )
    # A row moved behind the cursor is invisible to the poll; the key scan finds it.
    with _open(source_db, tmp_path, batch_size=2, hard_delete_interval=0) as lake:
        lake.sync_now()
        source_db.execute("UPDATE items SET name = 'back', updated_at = ? WHERE id = 3", (stamp(START),))
        with pytest.raises(NonMonotonicUpdateError, match=r"id=3.*went backwards") as info:
            lake.sync_now()
        assert info.value.primary_key == {"id": 3}
        assert lake.query("SELECT name FROM items WHERE id = 3").to_pylist() == [{"name": "a"}]
        # The documented fix: move updated_at forward; the row then syncs.
        source_db.execute("UPDATE items SET updated_at = ? WHERE id = 3", (stamp(START + timedelta(hours=1)),))
        lake.sync_now()
        assert lake.query("SELECT name FROM items WHERE id = 3").to_pylist() == [{"name": "back"}]


def test_the_update_a_backwards_updated_at_error_suggests_runs_on_the_source_as_written(source_db, tmp_path):
    """Mixed-case names, a quote in a text key, a date key and a blob key: the suggested UPDATE moves exactly that row."""
    postgres = source_db.kind == "postgresql"
    source_db.execute(
        'CREATE TABLE "OddItems" ("Code" TEXT, "Made" DATE, "Tag" '
        f"{'bytea' if postgres else 'BLOB'}, v TEXT, "
        f'"Updated At" {"timestamptz" if postgres else "TEXT"} NOT NULL, PRIMARY KEY ("Code", "Made", "Tag"))'
    )
    made = date(2026, 1, 2) if postgres else "2026-01-02"
    tag = b"\x00'\\x"
    rows = [
        ("it's", made, tag, "a", source_db.stamp(START + timedelta(seconds=1))),
        ("it's", made, b"\x01", "b", source_db.stamp(START + timedelta(seconds=2))),
    ]
    source_db.executemany('INSERT INTO "OddItems" VALUES (?, ?, ?, ?, ?)', rows)
    table = rhei_lake.PolledTable("OddItems", updated_at="Updated At")
    with _open(source_db, tmp_path, table, batch_size=1, hard_delete_interval=0) as lake:
        lake.sync_now()
        source_db.execute(
            'UPDATE "OddItems" SET v = ?, "Updated At" = ? WHERE "Code" = ? AND "Made" = ? AND "Tag" = ?',
            ("back", source_db.stamp(START), "it's", made, tag),
        )
        with pytest.raises(NonMonotonicUpdateError) as info:
            lake.sync_now()
        fix = re.search(r"\((UPDATE .* WHERE .*)\) and sync again", str(info.value))
        assert fix is not None, str(info.value)
        later = source_db.stamp(START + timedelta(hours=1))
        source_db.execute(fix.group(1).replace("<now>", f"'{later}'"))
        lake.sync_now()
        got = lake.query('SELECT v FROM "OddItems" ORDER BY "Tag"').to_pylist()
        assert got == [{"v": "back"}, {"v": "b"}]


def test_unreadable_updated_at_commits_the_rows_before_it(tmp_path):
    from tests.support.sidecar_source import sqlite_source

    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, updated_at TEXT, deleted_at TEXT)")
    source.executemany("INSERT INTO items VALUES (?, ?, NULL)", [(1, "2026-01-01"), (2, "2026-01-02"), (3, "soon")])
    with _open(source, tmp_path) as lake:
        with pytest.raises(TypeMismatchError, match=r"'updated_at', row id=3: 'soon'"):
            lake.sync_now()
        assert lake.query("SELECT id FROM items ORDER BY id").to_pylist() == [{"id": 1}, {"id": 2}]
        source.execute("UPDATE items SET updated_at = '2026-01-03' WHERE id = 3")
        lake.sync_now()
        assert lake.query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 3}]


def test_epoch_integers_with_a_unit(tmp_path):
    from tests.support.sidecar_source import sqlite_source

    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, updated_at INTEGER)")
    source.execute("INSERT INTO items VALUES (1, 1767225600123)")
    table = rhei_lake.PolledTable("items", updated_at="updated_at", epoch_unit="ms")
    with _open(source, tmp_path, table) as lake:
        lake.sync_now()
        row = lake.query("SELECT updated_at, _rhei_valid_from FROM items_history").to_pylist()[0]
        assert row["updated_at"] == 1767225600123
        assert row["_rhei_valid_from"].isoformat() == "2026-01-01T00:00:00.123000+00:00"


@pytest.mark.postgres
def test_source_outage_then_catch_up(tmp_path):
    """The server goes away: sync_now raises a transient error; once it is back the mirror catches up."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:  # same policy as the session fixture
        if REQUIRE_POSTGRES:
            raise
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        source = postgres_source(server, server.create_database())
        source.execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL, "
            "deleted_at timestamptz)"
        )
        source.execute("INSERT INTO items VALUES (1, 'a', now(), NULL)")
        with _open(source, tmp_path, hard_delete_interval=0) as lake:
            lake.sync_now()
            source.close()
            server.stop_server()
            with pytest.raises(SourceUnavailableError) as info:
                lake.sync_now()
            assert info.value.transient
            server.start_server()
            source = postgres_source(server, source.url.rsplit("/", 1)[1])
            source.execute("INSERT INTO items VALUES (2, 'b', now(), NULL)")
            source.execute("DELETE FROM items WHERE id = 1")
            lake.sync_now()
            assert lake.query("SELECT id, name FROM items").to_pylist() == [{"id": 2, "name": "b"}]
        source.close()
    finally:
        server.stop()


def test_a_postgres_lock_held_by_a_migration_is_transient(postgres, tmp_path):
    """The poll meets lock_timeout (SQLSTATE 55P03) behind a migration's lock: the loop retries it,
    and once the lock is gone the mirror catches up."""
    database = postgres.create_database()
    source = postgres_source(postgres, database)
    source.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, updated_at timestamptz NOT NULL, deleted_at timestamptz)"
    )
    source.execute(f"ALTER DATABASE \"{database}\" SET lock_timeout = '200ms'")
    source.execute("INSERT INTO items VALUES (1, 'a', now(), NULL)")
    migration = postgres.connect(database)
    try:
        with _open(source, tmp_path, hard_delete_interval=0) as lake:
            lake.sync_now()
            migration.execute("BEGIN")
            migration.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(SourceUnavailableError, match="lock") as info:
                lake.sync_now()
            assert info.value.transient
            migration.execute("INSERT INTO items VALUES (2, 'b', now(), NULL)")
            migration.execute("COMMIT")
            lake.sync_now()
            assert sorted(r["id"] for r in lake.query("SELECT id FROM items").to_pylist()) == [1, 2]
    finally:
        migration.close()
        source.close()


@pytest.mark.parametrize("change", ["DROP COLUMN name", "RENAME COLUMN name TO title", "DROP COLUMN deleted_at"])
@pytest.mark.parametrize("read", ["row poll", "first read", "first read, columnar"])
def test_a_sqlite_column_gone_since_the_open_stops_the_sync_instead_of_reading_its_name(tmp_path, change, read):
    """SQLite reads a double-quoted name it cannot resolve as a string literal: a column dropped or renamed
    after the lake described the table must stop the read (SchemaError), not put the column's name (or, for
    ``deleted_at``, a soft delete of every row) in the lake."""
    if read == "first read, columnar":
        pytest.importorskip("adbc_driver_sqlite")
    db = str(tmp_path / "app.db")
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, updated_at TEXT NOT NULL, deleted_at TEXT)"
    )
    conn.executemany(
        "INSERT INTO items VALUES (?, ?, ?, ?, NULL)",
        [(i, f"n{i}", i / 3, f"2026-01-01T00:00:0{i}Z") for i in range(5)],
    )
    table = items_table(hard_deletes=True)
    options = {"columnar_min_rows": 1 if read == "first read, columnar" else 0, "hard_delete_interval": 0}
    with rhei_lake.open(source=f"sqlite://{db}", storage=str(tmp_path / "lake"), tables=[table], **options) as lake:
        if read == "row poll":
            lake.sync_now()
        before = lake.query("SELECT * FROM items ORDER BY id").to_pylist()
        conn.execute(f"ALTER TABLE items {change}")
        conn.execute("UPDATE items SET updated_at = '2026-01-02T00:00:00Z' WHERE id = 2")
        with pytest.raises(SchemaError, match="no such column"):
            lake.sync_now()
        assert lake.query("SELECT * FROM items ORDER BY id").to_pylist() == before
    conn.close()
