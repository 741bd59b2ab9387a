"""Query routing: a table of statements, where each goes, and same answers and types on both routes."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

import rhei_lake
from rhei_lake.errors import QueryError, TypeMismatchError, WriteRefusedError
from rhei_lake.query.router import TINY_LIMIT

SCHEMA = [
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, tag BLOB, note TEXT)",
    (
        "CREATE TABLE pairs (region TEXT NOT NULL, code INTEGER NOT NULL, score REAL, label TEXT, "
        "PRIMARY KEY (region, code)) WITHOUT ROWID"
    ),
    "CREATE TABLE stamps (at DATETIME PRIMARY KEY, v TEXT)",
    "CREATE TABLE kinds (id INTEGER PRIMARY KEY, flag BOOLEAN, day DATE, amount DECIMAL(10,2), at TIMESTAMP)",
]
OLTP, OLAP = "oltp", "olap"
BIG_IN = ", ".join(str(i) for i in range(TINY_LIMIT + 1))

# (sql, expected route, a word the reason contains)
CASES = [
    ("SELECT * FROM items WHERE id = 1", OLTP, "point read"),
    ("SELECT name, price FROM items WHERE id = 1", OLTP, "point read"),
    ("SELECT * FROM items WHERE 1 = id", OLTP, "point read"),
    ('SELECT id AS k, name AS "Label" FROM items WHERE id = 3', OLTP, "point read"),
    ("SELECT i.* FROM items i WHERE i.id = 2", OLTP, "point read"),
    ("SELECT i.name FROM items AS i WHERE i.id = 2", OLTP, "point read"),
    ("SELECT * FROM items WHERE id IN (1, 2, 3)", OLTP, "3-point"),
    ("SELECT * FROM items WHERE id = 1 AND name = 'n1'", OLTP, "point read"),
    ("SELECT * FROM items WHERE (id = 4) AND (qty = 12)", OLTP, "point read"),
    ("SELECT * FROM items WHERE id = -1", OLTP, "point read"),
    ("SELECT * FROM ITEMS WHERE ID = 1", OLTP, "point read"),
    ("SELECT * FROM pairs WHERE region = 'eu' AND code = 2", OLTP, "point read"),
    ("SELECT * FROM pairs WHERE code = 2 AND region = 'eu'", OLTP, "point read"),
    ("SELECT * FROM pairs WHERE region = 'eu' LIMIT 5", OLTP, "key-prefix"),
    ("SELECT * FROM pairs WHERE region = 'us' ORDER BY code DESC LIMIT 2", OLTP, "key-prefix"),
    ("SELECT * FROM items ORDER BY id DESC LIMIT 3", OLTP, "first 3"),
    ("SELECT * FROM items WHERE id = 1 LIMIT 1", OLTP, "point read"),
    ("SELECT * FROM items WHERE id = 5 LIMIT 1 OFFSET 0", OLTP, "point read"),
    ("SELECT * FROM pairs WHERE region IN ('eu', 'us') AND code IN (1, 2)", OLTP, "4-point"),
    ("SELECT * FROM items WHERE price = 1.5 AND id = 2", OLTP, "point read"),
    ("SELECT * FROM items WHERE id = 1;", OLTP, "point read"),
    ("SELECT * FROM kinds WHERE id = 1", OLTP, "point read"),
    ("SELECT count(*) FROM items", OLAP, "expression"),
    ("SELECT * FROM items", OLAP, "does not pin"),
    ("SELECT * FROM items WHERE price > 10", OLAP, "column = literal"),
    ("SELECT * FROM items WHERE id > 5", OLAP, "column = literal"),
    ("SELECT * FROM items WHERE id = 1 OR id = 2", OLAP, "column = literal"),
    ("SELECT sum(price) FROM items WHERE id = 1", OLAP, "expression"),
    ("SELECT id, price * 2 FROM items WHERE id = 1", OLAP, "expression"),
    ("SELECT * FROM items JOIN pairs ON items.qty = pairs.code WHERE items.id = 1", OLAP, "JOINS"),
    ("SELECT * FROM items_history WHERE id = 1", OLAP, "_history"),
    ("SELECT * FROM items_changes WHERE id = 1", OLAP, "_changes"),
    ("SELECT id, row_number() OVER (ORDER BY id) AS n FROM items WHERE id = 1", OLAP, "expression"),
    ("SELECT DISTINCT name FROM items WHERE id = 1", OLAP, "DISTINCT"),
    ("SELECT * FROM items WHERE id = '1'", OLAP, "literal of its type"),
    ("SELECT * FROM items WHERE id IN (SELECT qty FROM items)", OLAP, "column = literal"),
    ("WITH x AS (SELECT * FROM items) SELECT * FROM x WHERE id = 1", OLAP, "WITH"),
    ("SELECT * FROM pairs WHERE region = 'eu'", OLAP, "does not pin"),
    ("SELECT * FROM items ORDER BY id LIMIT 1000", OLAP, "above"),
    ("SELECT * FROM items WHERE id = 1 ORDER BY name", OLAP, "orders by"),
    ("SELECT * FROM stamps WHERE at = '2024-01-01 00:00:00'", OLAP, "literal of its type"),
    ("SELECT id FROM items WHERE id = 1 GROUP BY id", OLAP, "GROUP"),
    ("SELECT * FROM items WHERE id = 1 UNION ALL SELECT * FROM items WHERE id = 2", OLAP, "single SELECT"),
    ("SELECT * FROM nowhere WHERE id = 1", OLAP, "not a mirrored table"),
    ("EXPLAIN SELECT * FROM items WHERE id = 1", OLAP, "plain SELECT"),
    ("SELECT * FROM items i WHERE items.id = 1", OLAP, "column = literal"),
    ('SELECT * FROM items WHERE "ID" = 1', OLAP, "column = literal"),
    (f"SELECT * FROM items WHERE id IN ({BIG_IN})", OLAP, "IN list"),
    ("SELECT id, id FROM items WHERE id = 1", OLAP, "repeats"),
    ("SELECT * FROM kinds WHERE id = 1 AND flag = 1", OLAP, "literal of its type"),
]

WRITES = [
    "INSERT INTO items (id) VALUES (100)",
    "UPDATE items SET name = 'x' WHERE id = 1",
    "DELETE FROM items WHERE id = 1",
    "CREATE TABLE z (id INTEGER PRIMARY KEY)",
    "DROP TABLE items",
    "ALTER TABLE items ADD COLUMN z TEXT",
    "PRAGMA journal_mode = DELETE",
    "WITH gone AS (DELETE FROM items RETURNING *) SELECT * FROM gone",
    "BEGIN",
    "VACUUM",
    "CREATE TABLE z AS SELECT * FROM items",
    "REPLACE INTO items (id) VALUES (1)",
    "ATTACH DATABASE 'elsewhere.db' AS x",
    "DETACH x",
    "ANALYZE",
    "DELETE FROM items WHERE name = `n1`",
]


def _fill(lake: rhei_lake.Lake) -> None:
    for ddl in SCHEMA:
        lake.execute(ddl)
    for table in ("items", "pairs", "stamps", "kinds"):
        lake.register_table(table)
    lake.execute_batch(
        [("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)", (i, f"n{i}", i * 0.5 + 1.0, i * 3, bytes([i % 256]), None))
         for i in range(-2, 30)]
    )  # fmt: skip
    lake.execute_batch(
        [("INSERT INTO pairs VALUES (?, ?, ?, ?)", (r, c, c / 3, f"{r}{c}")) for r in ("eu", "us") for c in (1, 2, 3)]
        + [("INSERT INTO pairs VALUES (?, ?, ?, ?)", ("ap", c, None, None)) for c in range(1, 9)]
    )
    lake.execute("INSERT INTO stamps VALUES ('2024-01-01 00:00:00', 'new year')")
    lake.execute("INSERT INTO kinds VALUES (1, 1, '2024-02-29', '12.50', '2024-01-01T10:00:00+02:00')")
    lake.sync_now()


@pytest.fixture(scope="module")
def routing_lake(tmp_path_factory):
    path = tmp_path_factory.mktemp("routing") / "app.db"
    with rhei_lake.open(oltp_path=str(path), storage=f"memory://{uuid.uuid4().hex}") as lake:
        _fill(lake)
        yield lake


@pytest.mark.parametrize(("sql", "target", "why"), CASES, ids=[c[0][:60] for c in CASES])
def test_route_table(routing_lake, sql, target, why):
    chosen = routing_lake.explain_route(sql)
    assert chosen.target == target, chosen
    assert why in chosen.reason, chosen


def test_route_table_is_big_enough():
    assert len(CASES) >= 30
    assert {t for _, t, _ in CASES} == {OLTP, OLAP}


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_on_every_route(routing_lake, sql):
    before = routing_lake.query("SELECT count(*) AS n FROM items", hint="oltp").to_pylist()
    for hint in (None, "oltp", "olap"):
        with pytest.raises(WriteRefusedError):
            routing_lake.query(sql, hint=hint)
    assert routing_lake.query("SELECT count(*) AS n FROM items", hint="oltp").to_pylist() == before
    assert routing_lake.tables() == ["items", "kinds", "pairs", "stamps"]


def test_hints_and_as_of_force_the_route(routing_lake):
    point = "SELECT * FROM items WHERE id = 1"
    assert routing_lake.explain_route(point, hint="olap").target == OLAP
    assert routing_lake.explain_route(point, as_of="2999-01-01T00:00:00Z").target == OLAP
    forced = routing_lake.explain_route("SELECT count(*) FROM items", hint="oltp")
    assert forced.target == OLTP and forced.forced
    with pytest.raises(QueryError, match="hint must be"):
        routing_lake.query(point, hint="fast")
    with pytest.raises(QueryError, match="as_of"):
        routing_lake.query(point, hint="oltp", as_of="2999-01-01T00:00:00Z")
    with pytest.raises(QueryError, match="one statement"):
        routing_lake.query("SELECT 1; SELECT 2")


def test_forced_oltp_runs_sqlite_sql_read_only(routing_lake):
    result = routing_lake.query("SELECT count(*) AS n, max(name) AS top FROM items", hint="oltp")
    assert result.schema.metadata[b"rhei.route"] == b"oltp"
    assert result.to_pylist() == [{"n": 32, "top": "n9"}]
    assert result.schema.field("n").type == pa.int64()
    typed = routing_lake.query("SELECT price, name FROM items WHERE id > 27 ORDER BY id", hint="oltp")
    assert typed.schema == routing_lake.query("SELECT price, name FROM items WHERE id > 27", hint="olap").schema
    # SQL sqlglot cannot read as a query is not trusted to be one: refused on the forced SQLite route
    with pytest.raises(QueryError, match="SELECT statements only"):
        routing_lake.query("SELECT * FROM items WHERE id = `1`", hint="oltp")
    # and SQLite itself refuses writes on read connections, whatever the SQL looks like
    reader = routing_lake._reader
    with pytest.raises(WriteRefusedError):
        reader.read_sql("DELETE FROM items", None)
    with pytest.raises(WriteRefusedError):
        reader.read_sql("ATTACH DATABASE 'elsewhere.db' AS x", None)
    assert routing_lake.query("SELECT count(*) AS n FROM items", hint="oltp").to_pylist() == [{"n": 32}]


def test_both_routes_agree_on_every_tier(storage, tmp_path):
    """Every statement the router sends to SQLite gives the lake's types and rows."""
    url, options = storage
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options) as lake:
        _fill(lake)
        routed = [sql for sql, target, _ in CASES if target == OLTP]
        for sql in routed:
            fresh = lake.query(sql)
            assert fresh.schema.metadata[b"rhei.route"] == b"oltp", sql
            synced = lake.query(sql, hint="olap")
            assert synced.schema.metadata[b"rhei.route"] == b"olap", sql
            assert fresh.schema.equals(synced.schema), f"{sql}\n{fresh.schema}\n{synced.schema}"
            assert _rows(fresh) == _rows(synced), sql
            forced = lake.query(sql, hint="oltp")
            assert forced.schema.equals(synced.schema), sql
            assert _rows(forced) == _rows(synced), sql
        assert (
            lake.query("SELECT * FROM kinds WHERE id = 1").to_pylist()
            == lake.query("SELECT * FROM kinds WHERE id = 1", hint="olap").to_pylist()
        )


def _rows(table: pa.Table) -> list[tuple]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


def test_point_reads_see_unsynced_and_uncommitted_writes(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'synced')")
        lake.sync_now()
        lake.execute("UPDATE t SET v = 'fresh' WHERE id = 1")
        assert lake.query("SELECT v FROM t WHERE id = 1").to_pylist() == [{"v": "fresh"}]
        assert lake.query("SELECT v FROM t WHERE id = 1", hint="olap").to_pylist() == [{"v": "synced"}]
        lake.execute("BEGIN")
        lake.execute("INSERT INTO t VALUES (2, 'mine')")
        assert lake.query("SELECT v FROM t WHERE id = 2").to_pylist() == [{"v": "mine"}]
        lake.execute("ROLLBACK")
        assert lake.query("SELECT v FROM t WHERE id = 2").to_pylist() == []
        assert lake.query("SELECT v FROM t WHERE id = 2").schema.field("v").type == pa.string()


def test_point_read_of_a_bad_value_names_it(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'not a number')")
        with pytest.raises(TypeMismatchError, match="'n'") as caught:
            lake.query("SELECT * FROM t WHERE id = 1")
        assert caught.value.primary_key == {"id": 1}


def test_text_keys_compare_bytewise_on_both_routes(tmp_path):
    """A NOCASE key column would match 'ABC' in SQLite only: the OLTP route compares bytes like the lake."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE codes (code TEXT COLLATE NOCASE PRIMARY KEY, v INTEGER)")
        lake.register_table("codes")
        lake.execute("INSERT INTO codes VALUES ('abc', 1)")
        lake.sync_now()
        sql = "SELECT * FROM codes WHERE code = 'ABC'"
        assert lake.explain_route(sql).target == OLTP
        assert lake.query(sql).to_pylist() == lake.query(sql, hint="olap").to_pylist() == []


def test_read_only_lake_routes_everything_to_the_lake(tmp_path):
    url = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        lake.sync_now()
    with rhei_lake.open(storage=url) as reader:
        chosen = reader.explain_route("SELECT * FROM t WHERE id = 1")
        assert chosen.target == OLAP and "no SQLite" in chosen.reason
        assert reader.query("SELECT * FROM t WHERE id = 1").to_pylist() == [{"id": 1, "v": "a"}]
        with pytest.raises(QueryError, match="oltp_path"):
            reader.query("SELECT * FROM t WHERE id = 1", hint="oltp")
