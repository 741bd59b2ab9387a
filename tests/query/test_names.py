"""No relation hides another: clashing names are refused at register time, and never answered by guess."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.errors import QueryError, SchemaError
from rhei_lake.flight.metadata import LakeMetadata
from tests.support.oracle import assert_same_state, oltp_oracle, sqlite_state


def _create(db: Path, *tables: str) -> None:
    """Create ``tables`` with a few rows each, through the application's own connection."""
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for i, table in enumerate(tables):
            conn.execute(f"CREATE TABLE {quote_ident(table)} (id INTEGER PRIMARY KEY, v TEXT)")
            conn.executemany(
                f"INSERT INTO {quote_ident(table)} VALUES (?, ?)", [(k, f"{table}-{k}") for k in range(i + 2)]
            )


@pytest.mark.parametrize(
    ("first", "second"),
    [("x", "x_changes"), ("x_changes", "x"), ("x", "x_history"), ("X", "x_Changes"), ("x_Changes", "X")],
)
def test_registering_a_clashing_table_is_refused_and_changes_nothing(first, second, tmp_path):
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage=str(tmp_path / "lake")) as lake:
        _create(db, first, second)
        app = oltp_oracle(lake)
        lake.register_table(first)
        lake.sync_now()
        triggers_before = app.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        with pytest.raises(SchemaError, match=f"table {second!r} cannot be mirrored beside table {first!r}"):
            lake.register_table(second)
        with pytest.raises(SchemaError, match="cannot be mirrored beside"):
            lake.register_table(second.upper())  # SQLite's names ignore case: the same table
        assert lake.tables() == [first]
        assert app.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == triggers_before
        feed = lake.query(f"SELECT count(*) AS n FROM {quote_ident(first + '_changes')}").to_pylist()
        assert feed == [{"n": 2}]  # still the first table's change feed
        assert lake.register_table(first.swapcase()).name == first  # the registered table again: no clash with itself


def test_a_table_kept_in_the_lake_counts_too(tmp_path):
    url = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(tmp_path / "one.db"), storage=url) as lake:
        _create(tmp_path / "one.db", "x")
        lake.register_table("x")
    with rhei_lake.open(oltp_path=str(tmp_path / "two.db"), storage=url) as lake:  # another database, same lake
        _create(tmp_path / "two.db", "x_changes")
        with pytest.raises(SchemaError, match="'x_changes' cannot be mirrored beside table 'x'"):
            lake.register_table("x_changes")


@pytest.mark.parametrize(("table", "clashing"), [("x", "x_changes"), ("X", "x_Changes")])
def test_a_lake_that_holds_both_answers_neither_under_the_shared_name(table, clashing, tmp_path):
    """Mirrored by a version that allowed it (simulated by registering past the check)."""
    db = tmp_path / "app.db"
    url = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(db), storage=url) as lake:
        _create(db, table, clashing)
        lake.register_table(table)
        lake.sync_engine.register(clashing)  # what an older rhei_lake did
        lake.sync_now()
        before = datetime.now(UTC)
        lake.execute(f"INSERT INTO {quote_ident(table)} VALUES (10, 'later')")
        lake.execute(f"DELETE FROM {quote_ident(clashing)} WHERE id = 0")
        lake.sync_now()
        _check_names(lake, sqlite3.connect(db), table, clashing, before)
        lake.execute(f"UPDATE {quote_ident(clashing)} SET v = 'moved'")  # only one table's views re-registered
        lake.sync_now()
        _check_names(lake, sqlite3.connect(db), table, clashing, before)
    with rhei_lake.open(storage=url) as reader:
        _check_names(reader, sqlite3.connect(db), table, clashing, before)
        listed = [relation.name for relation in LakeMetadata(reader).relations()]  # what Flight SQL clients see
        assert sorted(listed) == sorted([table, f"{table}_history", f"{clashing}_history", f"{clashing}_changes"])
        reader.restore_sqlite(tmp_path / "restored.db", tables=[table])
        assert sqlite_state(sqlite3.connect(tmp_path / "restored.db"), table) == sqlite_state(
            sqlite3.connect(db), table
        )
        with pytest.raises(QueryError, match="names both"):  # its rows are read by the shared name
            reader.restore_sqlite(tmp_path / "clashing.db", tables=[clashing])
        assert not (tmp_path / "clashing.db").exists()


def _check_names(lake: rhei_lake.Lake, oracle: sqlite3.Connection, table: str, clashing: str, before) -> None:
    shared = clashing.lower()
    for spelled in (shared, quote_ident(table + "_changes"), quote_ident(clashing)):
        for as_of in (None, before):
            with pytest.raises(QueryError) as refused:
                lake.query(f"SELECT * FROM {spelled}", as_of=as_of)
            message = str(refused.value)
            assert f"{shared!r} names both" in message and "answers neither" in message, message
            assert repr(table) in message and repr(clashing) in message
    assert_same_state(lake, oracle, table)
    versions = lake.query(f"SELECT id, v FROM {quote_ident(clashing + '_history')} WHERE _rhei_valid_to IS NULL")
    assert sorted(tuple(r.values()) for r in versions.to_pylist()) == sqlite_state(oracle, clashing)
    own_feed = lake.query(f"SELECT count(*) AS n FROM {quote_ident(clashing + '_changes')}").column(0)[0].as_py()
    assert own_feed > 0
    assert lake.query(f"SELECT count(*) AS n FROM {quote_ident(table + '_history')}").column(0)[0].as_py() >= 3


def test_a_sidecar_configuration_with_clashing_tables_is_refused(tmp_path):
    source = tmp_path / "source.db"
    sqlite3.connect(source).close()
    with pytest.raises(rhei_lake.ConfigError, match="tables: 'x_changes' names both"):
        rhei_lake.open(
            source=f"sqlite:///{source}",
            storage="memory://",
            tables=[rhei_lake.PolledTable("x", updated_at="u"), rhei_lake.PolledTable("x_changes", updated_at="u")],
        )
