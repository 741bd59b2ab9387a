"""Lake.outside_views / rh views: DuckDB runs them and gets SQLite's answers; Spark and Trino texts parse.

The DuckDB views are executed at every flush and fold state a lake goes
through: nothing compacted, compacted with unfolded events after it, events
still in the tail (invisible: the views show the state at the last flush),
folded change rows expired; in temporal and mirror mode, on local disk and S3.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime

import pytest
import sqlglot
from sqlglot import exp

import rhei_lake
from rhei_lake.errors import ConfigError
from rhei_lake.timeutil import now_micros
from tests.support import duckdb_delta
from tests.support.outside import exact, sqlite_columns, sqlite_rows
from tests.support.readers import comparable
from tests.support.rh import rh
from tests.support.workload import SCHEMA, Workload, create_tables

TABLES = tuple(SCHEMA)


def _oracle(db) -> dict[str, list[tuple]]:
    with sqlite3.connect(db) as conn:
        return {t: sqlite_rows(conn, t, sqlite_columns(conn, t)) for t in TABLES}


def _rows(table) -> list[tuple]:
    return exact(tuple(r.values()) for r in comparable(table).to_pylist())


def _literal(micros: int) -> str:
    return f"TIMESTAMPTZ '{datetime.fromtimestamp(micros / 1e6, UTC).isoformat()}'"


class Duck:
    """A DuckDB session holding the lake's outside views (re-created when they are regenerated)."""

    def __init__(self, lake: rhei_lake.Lake, options: dict[str, str]) -> None:
        self.con = duckdb_delta.connect(options or None)
        self.load(lake)

    def load(self, lake: rhei_lake.Lake) -> None:
        self.con.execute(lake.outside_views("duckdb", show_secrets=True))

    def rows(self, sql: str) -> list[tuple]:
        return _rows(self.con.execute(sql).to_arrow_table())

    def state(self) -> dict[str, list[tuple]]:
        return {t: self.rows(f'SELECT * FROM "{t}"') for t in TABLES}


def _same_as_lake(duck: Duck, lake: rhei_lake.Lake, mode: str) -> None:
    """With the tail flushed, the outside views equal rhei_lake's own, view by view."""
    for t in TABLES:
        names = [t, f"{t}_changes"] + ([f"{t}_history"] if mode == "temporal" else [])
        for name in names:
            assert duck.rows(f'SELECT * FROM "{name}"') == _rows(lake.query(f"SELECT * FROM {name}")), name


@pytest.mark.parametrize("retention", ["forever", "0"], ids=["changes-kept", "changes-expired"])
@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_duckdb_views_match_sqlite_at_every_flush_and_fold_state(tmp_path, durable_storage, mode, retention):
    url, options = durable_storage
    if url.startswith("s3://") and retention == "0":
        pytest.skip("expiry is tier-independent: checked on local disk only, to keep the S3 run short")
    db = tmp_path / "app.db"
    create_tables(db).close()
    lake = rhei_lake.open(
        oltp_path=str(db),
        storage=url,
        storage_options=options,
        sync_mode=mode,
        tail_flush_segments=10_000,
        changelog_retention=retention,
    )
    workload = Workload(5 if mode == "temporal" else 6, key_space=24)
    instants: list[tuple[int, dict]] = []

    def write_and_flush(count: int = 60) -> None:
        workload.run(lambda sql, params: lake.execute(sql, params), count)
        lake.sync_now()
        lake.flush()
        time.sleep(0.003)
        instants.append((now_micros(), _oracle(db)))
        time.sleep(0.003)

    try:
        for t in TABLES:
            lake.register_table(t)
        write_and_flush()
        duck = Duck(lake, options)  # state A: nothing compacted, no derived table yet
        assert duck.state() == _oracle(db)
        _same_as_lake(duck, lake, mode)

        lake.compact()  # folded; with retention 0 the folded change rows expired too
        write_and_flush()
        duck.load(lake)  # regenerated after the first compaction, as documented
        assert duck.state() == _oracle(db)  # state B: derived table + unfolded events
        _same_as_lake(duck, lake, mode)

        flushed = _oracle(db)
        workload.run(lambda sql, params: lake.execute(sql, params), 40)
        lake.sync_now()  # state C: committed, but only in the tail
        assert lake.sync_status().tables["items"].tail_rows > 0
        assert duck.state() == flushed, "the tail is invisible: the views show the state at the last flush"
        lake.flush()
        assert duck.state() == _oracle(db)

        lake.compact()  # state D: everything folded (and, with retention 0, expired)
        assert duck.state() == _oracle(db)
        _same_as_lake(duck, lake, mode)
        write_and_flush()
        assert duck.state() == _oracle(db)

        if mode == "temporal":
            for instant, state in instants:
                for t in TABLES:
                    assert duck.rows(f'SELECT * FROM "{t}_as_of"({_literal(instant)})') == state[t], (t, instant)
                    ours = lake.query(f"SELECT * FROM {t}_history", as_of=instant / 1e6)
                    assert duck.rows(f'SELECT * FROM "{t}_history_as_of"({_literal(instant)})') == _rows(ours)
    finally:
        lake.close()


def test_views_follow_a_schema_change_once_regenerated(tmp_path):
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        lake.sync_now()
        lake.compact()
        lake.add_column("t", "w", "REAL")
        lake.execute("UPDATE t SET w = -0.0 WHERE id = 2")
        lake.sync_now()
        lake.flush()
        duck = Duck(lake, {})
        with sqlite3.connect(db) as conn:
            assert duck.rows('SELECT * FROM "t"') == sqlite_rows(conn, "t", ["id", "v", "w"])


def _statements(text: str) -> list[str]:
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
    return [s.strip() for s in body.split(";\n") if s.strip()]


@pytest.mark.parametrize("dialect", ["spark", "trino", "duckdb"])
@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_every_dialects_text_parses_and_keeps_secrets_masked(s3_lake, tmp_path, dialect, mode):
    url, options = s3_lake
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, sync_mode=mode
    ) as lake:
        lake.execute('CREATE TABLE "Odd Name" ("k 1" TEXT, k2 INTEGER, v BLOB, PRIMARY KEY ("k 1", k2))')
        lake.register_table("Odd Name")
        lake.execute("INSERT INTO \"Odd Name\" VALUES ('a''b', 1, x'00')")
        lake.sync_now()
        lake.compact()
        masked = lake.outside_views(dialect, as_of="2026-01-02T03:04:05Z")
        shown = lake.outside_views(dialect, as_of="2026-01-02T03:04:05Z", show_secrets=True)
    secret = options["AWS_SECRET_ACCESS_KEY"]
    assert secret not in masked and "***" in masked and secret in shown
    created = set()
    for statement in _statements(masked):
        if statement.startswith(("CALL ", "SET ")):  # settings and Trino's table registration
            continue
        tree = sqlglot.parse_one(statement, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)
        assert isinstance(tree, (exp.Create, exp.Use, exp.Command)), statement[:80]
        if isinstance(tree, exp.Create):
            target = tree.this
            while isinstance(target, (exp.UserDefinedFunction, exp.Schema)):
                target = target.this
            created.add(target.name)
        assert "ARROW_CAST" not in statement.upper() and "FIRST_VALUE(" not in statement.upper()
    expected = {"Odd Name", "Odd Name_changes", "Odd Name_changes_as_of"}
    if mode == "temporal":
        expected |= {"Odd Name_history", "Odd Name_as_of", "Odd Name_history_as_of"}
    assert expected <= created, created


def test_rh_views_prints_the_library_text(tmp_path):
    url = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
    with rhei_lake.open(storage=url) as reader:
        expected = reader.outside_views("spark")
    result = rh("views", "--storage", url, "--dialect", "spark")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected
    bad = rh("views", "--storage", url, "--dialect", "oracle")
    assert bad.returncode != 0 and "dialect must be one of duckdb, spark, trino" in bad.stderr


def test_a_memory_lake_has_no_outside_views():
    with rhei_lake.open(storage="memory://") as lake:
        with pytest.raises(ConfigError, match="memory://"):
            lake.outside_views("duckdb")
