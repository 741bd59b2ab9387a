"""DuckDB as the query engine: the same answers as DataFusion, read-only, the lake's files only."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sqlite3
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import rhei_lake
from rhei_lake.errors import ConfigError, QueryError, WriteRefusedError
from rhei_lake.query.duckdb_session import DuckSession, open_database
from rhei_lake.query.engine import QueryEngine
from rhei_lake.timeutil import from_micros, now_micros
from tests.support.mirror_check import by_bits
from tests.support.workload import SCHEMA, Workload

PARITY_QUERIES = [
    "SELECT * FROM items",
    "SELECT * FROM items_history",
    "SELECT * FROM items_changes",
    "SELECT * FROM pairs",
    "SELECT * FROM pairs_history",
    "SELECT name, count(*) AS n, min(price) AS lo, max(price) AS hi FROM items GROUP BY name",
    "SELECT region, count(*) AS n, sum(code) AS s FROM pairs GROUP BY region",
    "SELECT id, name, price FROM items WHERE qty > 0 AND name IS NOT NULL",
    "SELECT * FROM items WHERE id = 7",
    "SELECT * FROM pairs WHERE region = 'eu' AND code = 3",
    "SELECT id, count(*) AS versions, max(_rhei_valid_from) AS last FROM items_history GROUP BY id",
    "SELECT _rhei_op, count(*) AS n FROM items_changes GROUP BY _rhei_op",
    "SELECT i.id, p.label FROM items i JOIN pairs p ON i.qty = p.code",
]


def _types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


def _duckdb_beside(lake: rhei_lake.Lake) -> QueryEngine:
    """A DuckDB engine over exactly the tables the lake's own (DataFusion) engine reads."""
    location = lake.location
    database = open_database(location.scheme, location.root, location.options)
    return QueryEngine(lake._query_tables, lake.tables, new_session=lambda: DuckSession(database))


def _assert_same(lake: rhei_lake.Lake, duck: QueryEngine, sql: str, as_of: int | None = None) -> None:
    fusion = lake._queries.query(sql, as_of=as_of)
    other = duck.query(sql, as_of=as_of)
    assert _types(other.schema) == _types(fusion.schema), sql
    assert sorted(by_bits([tuple(r.values()) for r in other.to_pylist()]), key=repr) == sorted(
        by_bits([tuple(r.values()) for r in fusion.to_pylist()]), key=repr
    ), sql


@pytest.mark.parametrize("seed", [3, 4])
def test_both_engines_give_equal_rows_and_types_through_syncs_flushes_and_compactions(tmp_path, seed):
    """A random workload; after each step every query (and as_of at earlier instants) agrees bit for bit."""
    db = tmp_path / "app.db"
    oracle = sqlite3.connect(db, isolation_level=None)
    for ddl in SCHEMA.values():
        oracle.execute(ddl)
    workload = Workload(seed)
    workload.run(lambda sql, params: oracle.execute(sql, params), 30)
    with rhei_lake.open(oltp_path=str(db), storage=str(tmp_path / "lake"), tail_flush_segments=3) as lake:
        for table in SCHEMA:
            lake.register_table(table)
        duck = _duckdb_beside(lake)
        rng = workload.rng
        instants = []
        for step in range(8):
            workload.run(lambda sql, params: lake.execute(sql, params), rng.randint(1, 30))
            lake.sync_now()
            if step % 3 == 2:
                lake.compact()  # folded history + the unfolded tail after it
            instants.append(now_micros())
            time.sleep(0.002)
            for sql in PARITY_QUERIES:
                _assert_same(lake, duck, sql)
            for sql in PARITY_QUERIES[:5]:
                _assert_same(lake, duck, sql, as_of=rng.choice(instants))
        duck.close()


def test_mirror_mode_and_as_of_agree(tmp_path):
    with rhei_lake.open(
        oltp_path=str(tmp_path / "a.db"), storage=str(tmp_path / "lake"), sync_mode="mirror", engine="duckdb"
    ) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, d DATE, b BOOLEAN, n NUMERIC)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a', '2026-01-02', 1, 1.5), (2, 'b', NULL, 0, NULL)")
        lake.sync_now()
        lake.compact()
        middle = from_micros(now_micros())
        time.sleep(0.01)
        lake.execute("UPDATE t SET v = 'c' WHERE id = 1")
        lake.execute("DELETE FROM t WHERE id = 2")
        lake.sync_now()
        with rhei_lake.open(storage=str(tmp_path / "lake")) as fusion:
            for sql in ("SELECT * FROM t", "SELECT * FROM t_changes"):
                got, want = lake.query(sql, hint="olap"), fusion.query(sql)
                assert _types(got.schema) == _types(want.schema)
                assert sorted(got.to_pylist(), key=repr) == sorted(want.to_pylist(), key=repr)
            then = lake.query("SELECT id, _rhei_op FROM t_changes ORDER BY _rhei_seq", as_of=middle)
            assert then.to_pylist() == [{"id": 1, "_rhei_op": "I"}, {"id": 2, "_rhei_op": "I"}]
            with pytest.raises(QueryError, match="sync_mode='mirror'"):
                lake.query("SELECT * FROM t_history", hint="olap")


@pytest.fixture
def duck_lake(htap_lake):
    lake = htap_lake(engine="duckdb")
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    lake.register_table("t")
    lake.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    lake.sync_now()
    lake.flush()
    return lake


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t VALUES (3, 'c')",
        "UPDATE t SET v = 'x'",
        "DELETE FROM t",
        "CREATE TABLE evil (x INT)",
        "CREATE OR REPLACE VIEW t AS SELECT 1 AS id",
        "DROP VIEW t",
        "ATTACH '{outside}/other.duckdb' AS other",
        "DETACH memory",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "RESET threads",
        "PRAGMA threads = 1",
        "EXPORT DATABASE '{outside}/dump'",
        "CALL checkpoint()",
        "COPY (SELECT * FROM t) TO '{lake}/stolen.csv'",
        "COPY (SELECT * FROM t) TO '{outside}/stolen.csv'",
        "SELECT * FROM t; DROP VIEW t",
    ],
)
def test_writes_and_statements_are_refused_and_change_nothing(duck_lake, tmp_path, sql):
    text = sql.format(lake=tmp_path / "lake", outside=tmp_path)
    with pytest.raises(QueryError) as excinfo:
        duck_lake.query(text, hint="olap")
    if ";" not in text:
        assert isinstance(excinfo.value, WriteRefusedError), excinfo.value
    assert sorted(duck_lake.query("SELECT * FROM t", hint="olap").to_pylist(), key=repr) == [
        {"id": 1, "v": "a"},
        {"id": 2, "v": "b"},
    ]
    assert not (tmp_path / "lake" / "stolen.csv").exists() and not (tmp_path / "stolen.csv").exists()
    assert not (tmp_path / "other.duckdb").exists() and not (tmp_path / "dump").exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('{outside}/secret.csv')",
        "SELECT * FROM '{outside}/secret.csv'",
        "SELECT * FROM read_parquet('{outside}/secret.parquet')",
        "SELECT * FROM read_text('{outside}/secret.csv')",
        "SELECT * FROM glob('{outside}/*')",
        "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')",
    ],
)
def test_files_outside_the_lake_are_refused(duck_lake, tmp_path, sql):
    (tmp_path / "secret.csv").write_text("a\n1\n")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "secret.parquet")
    with pytest.raises(WriteRefusedError, match="reads only the lake"):
        duck_lake.query(sql.format(outside=tmp_path), hint="olap")


def test_a_file_on_the_lake_can_be_read(duck_lake, tmp_path):
    files = sorted((tmp_path / "lake").rglob("*.parquet"))
    assert files
    got = duck_lake.query(f"SELECT count(*) AS n FROM read_parquet('{files[0]}')", hint="olap")
    assert got.num_rows == 1


def test_python_variables_are_not_scanned(duck_lake):
    secret_rows = pa.table({"x": [1]})  # noqa: F841 - DuckDB's replacement scan would find it by name
    with pytest.raises(QueryError, match="secret_rows"):
        duck_lake.query("SELECT * FROM secret_rows", hint="olap")


def test_parameters_bind_by_number_and_name(duck_lake):
    assert duck_lake.dataframe("SELECT v FROM t WHERE id = $1", params={"1": 2}).to_arrow_table().to_pylist() == [
        {"v": "b"}
    ]
    assert duck_lake.dataframe(
        "SELECT v FROM t WHERE id = $k", params={"k": 1, "unused": 5}
    ).to_arrow_table().to_pylist() == [{"v": "a"}]
    planned = duck_lake.dataframe("SELECT v FROM t WHERE id = $1")
    assert planned.schema().names == ["v"]
    with pytest.raises(QueryError, match="No value found for placeholder"):
        planned.to_arrow_table()


def test_a_missing_extension_names_the_extra_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "duckdb_extension_delta" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'rhei-lake\[duckdb\]'"):
        rhei_lake.open(oltp_path=str(tmp_path / "a.db"), storage=str(tmp_path / "lake"), engine="duckdb")


def test_interrupt_cancels_a_running_query(duck_lake):
    """What Ctrl-C does in the CLI; the cancelled cursor is closed, and the next query runs."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            duck_lake.query("SELECT count(*) FROM t, range(1000000000000) r", hint="olap")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
        duck_lake._queries.interrupt()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], KeyboardInterrupt)
    assert duck_lake.query("SELECT count(*) AS n FROM t", hint="olap").to_pylist() == [{"n": 2}]


def test_queries_from_many_threads_each_get_a_cursor(duck_lake):
    results: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                n = duck_lake.query("SELECT count(*) AS n FROM t JOIN t_history USING (id)", hint="olap")
                results.append(n.column(0)[0].as_py())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(6)]
    for thread in threads:
        thread.start()
    for i in range(3, 13):
        duck_lake.execute("INSERT INTO t VALUES (?, 'x')", (i,))
        duck_lake.sync_now()
    for thread in threads:
        thread.join()
    assert not errors, errors[:2]
    assert len(results) == 120 and all(2 <= n <= 12 for n in results)


def test_dates_and_instants_keep_the_documented_types(duck_lake):
    got = duck_lake.query(
        "SELECT _rhei_ts, DATE '2026-01-02' AS d, sum(id) AS s, count(*) AS n FROM t_changes GROUP BY _rhei_ts",
        hint="olap",
    )
    assert _types(got.schema) == [
        ("_rhei_ts", pa.timestamp("us", tz="UTC")),
        ("d", pa.date32()),
        ("s", pa.int64()),
        ("n", pa.int64()),
    ]
    assert got.column("d")[0].as_py() == dt.date(2026, 1, 2)


@pytest.mark.s3
def test_s3_reads_through_a_secret_that_is_never_shown(s3_lake, tmp_path, caplog):
    url, options = s3_lake
    with rhei_lake.open(
        oltp_path=str(tmp_path / "a.db"), storage=url, storage_options=options, engine="duckdb", tail_flush_segments=1
    ) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        lake.sync_now()
        lake.flush()
        lake.compact()
        lake.execute("UPDATE t SET v = 'b'")
        lake.sync_now()
        assert lake.query("SELECT v FROM t", hint="olap").to_pylist() == [{"v": "b"}]
        assert lake.query("SELECT count(*) AS n FROM t_history", hint="olap").to_pylist() == [{"n": 2}]
        with pytest.raises(WriteRefusedError):
            lake.query(f"SELECT * FROM read_csv('{tmp_path}/x.csv')", hint="olap")
    # moto takes any key: a key with a quote checks that the secret's SQL is escaped, not that it is used
    quoted = dict(options, AWS_SECRET_ACCESS_KEY="it's-" + options["AWS_SECRET_ACCESS_KEY"])
    with rhei_lake.open(storage=url, storage_options=quoted, engine="duckdb") as lake:
        assert lake.query("SELECT count(*) AS n FROM t_history").to_pylist() == [{"n": 2}]
        assert quoted["AWS_SECRET_ACCESS_KEY"] not in repr(lake.config)
    assert options["AWS_SECRET_ACCESS_KEY"] not in caplog.text


def test_s3_settings_duckdb_refuses_are_reported_without_the_secret(monkeypatch):
    from rhei_lake.query import outside_views

    options = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "hunter2-secret"}
    real = outside_views.duckdb_s3_secret
    monkeypatch.setattr(  # a statement DuckDB rejects, that carries the secret
        outside_views, "duckdb_s3_secret", lambda o, show_secrets: real(o, show_secrets=show_secrets) + " NONSENSE"
    )
    with pytest.raises(ConfigError, match="DuckDB refused the lake's S3 settings") as excinfo:
        open_database("s3", "bucket/prefix", options)
    assert "hunter2-secret" not in str(excinfo.value) and "***" in str(excinfo.value)
