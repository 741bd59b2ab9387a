"""The Flight SQL server through the real ADBC driver, on a local and a moto S3 lake."""

from __future__ import annotations

import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from rhei_lake.timeutil import from_micros
from tests.flight.conftest import ORDERS
from tests.flight.flight_clients import RawClient, adbc_connect, pb, query

LIVE = ORDERS - 5  # five orders were deleted in the second sync


def _sorted(table: pa.Table, *keys: str) -> list[dict]:
    return table.sort_by([(k, "ascending") for k in keys]).to_pylist()


def test_full_scan_matches_the_lake(served):
    lake, server = served
    got = query(server, "SELECT * FROM orders")
    assert got.num_rows == LIVE
    assert got.schema.names == ["id", "customer", "total", "day"]
    assert got.schema.field("day").type == pa.date32()
    assert _sorted(got, "id") == _sorted(lake.query("SELECT * FROM orders"), "id")


def test_filter_and_group_by_match_the_lake(served):
    lake, server = served
    sql = "SELECT id, total FROM orders WHERE customer = 'c3' AND total > 100"
    got = query(server, sql)
    assert got.num_rows > 0
    assert _sorted(got, "id") == _sorted(lake.query(sql), "id")
    sql = "SELECT customer, count(*) AS n, sum(total) AS total FROM orders GROUP BY customer"
    got = query(server, sql)
    assert got.num_rows == 7
    assert sum(got.column("n").to_pylist()) == LIVE
    assert _sorted(got, "customer") == _sorted(lake.query(sql), "customer")


def test_history_and_change_feed_are_served(served):
    _lake, server = served
    changes = query(server, "SELECT _rhei_op, count(*) AS n FROM orders_changes GROUP BY _rhei_op")
    assert dict(zip(*changes.to_pydict().values(), strict=True)) == {"I": ORDERS, "U": 10, "D": 5}
    history = query(server, "SELECT * FROM orders_history WHERE id = 3 ORDER BY _rhei_valid_from")
    assert [r["total"] for r in history.to_pylist()] == [3.75, 1003.75]
    assert history.column("_rhei_valid_to").null_count == 1


@pytest.mark.parametrize("style", ["block", "line", "epoch"])
def test_as_of_hint_queries_the_past(served, shop_lake, style):
    _lake, server = served
    instant = from_micros(shop_lake.before_updates).isoformat()
    hint = {
        "block": f"/* as_of={instant} */ ",
        "line": f"-- as_of: '{instant}'\n",
        "epoch": f"/* as_of={shop_lake.before_updates / 1e6!r} */",
    }[style]
    then = query(server, hint + "SELECT count(*) AS n, sum(total) AS s FROM orders").to_pylist()[0]
    assert then["n"] == ORDERS
    assert then["s"] == pytest.approx(sum(round(i * 1.25, 2) for i in range(ORDERS)))
    now = query(server, "SELECT count(*) AS n FROM orders").to_pylist()[0]
    assert now["n"] == LIVE
    feed = query(server, hint + "SELECT count(*) AS n FROM orders_changes").to_pylist()[0]
    assert feed["n"] == ORDERS


def test_parameters_positional_named_and_prepared(served, shop_lake):
    lake, server = served
    assert query(server, "SELECT id, customer FROM orders WHERE id = ?", (42,)).to_pylist() == [
        {"id": 42, "customer": "c0"}
    ]
    got = query(server, "SELECT count(*) AS n FROM orders WHERE customer = $1 AND total > $2", ("c1", 50.0))
    assert (
        got.to_pylist()
        == lake.query("SELECT count(*) AS n FROM orders WHERE customer = 'c1' AND total > 50").to_pylist()
    )
    named = pa.record_batch({"lo": [41], "label": ["x"]})  # the driver binds Arrow data with its column names
    assert query(server, "SELECT $lo + 1 AS x, $label AS label", named).to_pylist() == [{"x": 42, "label": "x"}]
    instant = from_micros(shop_lake.before_updates).isoformat()
    old = query(server, f"/* as_of={instant} */ SELECT total FROM orders WHERE id = ?", (3,))
    assert old.to_pylist() == [{"total": 3.75}]
    with adbc_connect(server) as conn, conn.cursor() as cur:
        schema = cur.adbc_execute_schema("SELECT id, total FROM orders WHERE id = ?")  # prepared, not run
        assert schema.names == ["id", "total"]
        for key in (1, 2, 400):
            cur.execute("SELECT id, total FROM orders WHERE id = ?", (key,))
            assert [r[0] for r in cur.fetchall()] == ([key] if key < LIVE else [])
    assert server.stats()["open_statements"] == 0, "closing the cursor closes its prepared statement"


def test_a_prepared_statement_sees_commits_made_after_it_was_prepared(tmp_path):
    import rhei_lake
    from rhei_lake.flight import serve_flight

    with rhei_lake.open(oltp_path=str(tmp_path / "a.db"), storage="memory://") as lake, serve_flight(lake) as server:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1)")
        lake.sync_now()
        with adbc_connect(server) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM t")
            assert cur.fetchone() == (1,)
            lake.execute("INSERT INTO t VALUES (2)")
            lake.sync_now()
            cur.execute("SELECT count(*) FROM t")  # same statement: executed again, not re-prepared
            assert cur.fetchone() == (2,)


def test_bad_sql_is_refused_naming_the_problem_without_a_traceback(served):
    _lake, server = served
    for sql, params, message in [
        ("SELECT * FROM no_such_table", None, "invalid query: .*no_such_table.* not found"),
        ("SELECT * FROM orders WHERE id = $1 AND total = $2", (1,), "No value found for placeholder"),
        ("SELEKT 1", None, "invalid query: .*SELEKT"),
        ("/* as_of=yesterday */ SELECT 1", None, "as_of hint.*not an ISO 8601"),
        ("/* as_of=2026-05-01T12:00:00 */ SELECT 1", None, "as_of hint.*has no UTC offset.*append Z"),
    ]:
        with pytest.raises(adbc_driver_manager.Error, match=message) as excinfo:
            query(server, sql, params)
        assert "Traceback" not in str(excinfo.value) and ".py" not in str(excinfo.value)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO orders VALUES (1000, 'x', 1.0, '2026-01-01')",
        "DELETE FROM orders",
        "CREATE TABLE evil (x INT)",
        "DROP TABLE orders",
        "SET datafusion.execution.batch_size = 1",
    ],
)
def test_writes_are_refused_and_change_nothing(served, sql):
    lake, server = served
    with pytest.raises(adbc_driver_manager.Error, match="read-only") as excinfo:
        query(server, sql)
    assert "Unauthorized" in str(excinfo.value) or "PermissionDenied" in str(excinfo.value)
    assert lake.query("SELECT count(*) AS n FROM orders").to_pylist() == [{"n": LIVE}]


def test_update_and_ingest_commands_are_refused(served):
    lake, server = served
    with adbc_connect(server) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_sql_query("UPDATE orders SET total = 0")
        with pytest.raises(adbc_driver_manager.Error, match="read-only"):
            cur.adbc_statement.execute_update()
        with pytest.raises(adbc_driver_manager.Error, match="read-only"):
            cur.adbc_ingest("orders", pa.table({"id": [1]}), mode="append")
    assert (
        lake.query("SELECT sum(total) AS s FROM orders").to_pylist()
        == query(server, "SELECT sum(total) AS s FROM orders").to_pylist()
    )


def test_metadata_browsing(served):
    lake, server = served
    with adbc_connect(server) as conn:
        assert conn.adbc_get_table_types() == ["TABLE", "VIEW"]
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["datafusion"]
        schemas = objects[0]["catalog_db_schemas"]
        assert [s["db_schema_name"] for s in schemas] == ["public"]
        tables = {t["table_name"]: t for t in schemas[0]["db_schema_tables"]}
        assert {n: t["table_type"] for n, t in tables.items()} == {
            "orders": "TABLE",
            "orders_history": "VIEW",
            "orders_changes": "VIEW",
        }
        assert [c["column_name"] for c in tables["orders"]["table_columns"]] == ["id", "customer", "total", "day"]
        only_views = conn.adbc_get_objects(depth="tables", table_types_filter=["VIEW"]).read_all().to_pylist()
        assert sorted(t["table_name"] for t in only_views[0]["catalog_db_schemas"][0]["db_schema_tables"]) == [
            "orders_changes",
            "orders_history",
        ]
        schema = conn.adbc_get_table_schema("orders")
        assert schema.field("total").metadata[b"ARROW:FLIGHT:SQL:TYPE_NAME"] == b"REAL"
        assert conn.adbc_get_info()["vendor_name"] == "rhei_lake"
        for name in tables:  # what tools are told is what queries return
            listed = conn.adbc_get_table_schema(name)
            actual = query(server, f'SELECT * FROM "{name}" LIMIT 0').schema
            assert [(f.name, f.type) for f in listed] == [(f.name, f.type) for f in actual], name


def test_metadata_filters_and_primary_keys(served):
    _lake, server = served
    with RawClient(server) as raw:
        assert raw.fetch(pb.CommandGetCatalogs()).column("catalog_name").to_pylist() == ["datafusion"]
        assert raw.fetch(pb.CommandGetDbSchemas(db_schema_filter_pattern="pub%")).num_rows == 1
        assert raw.fetch(pb.CommandGetDbSchemas(catalog="other")).num_rows == 0
        names = raw.fetch(pb.CommandGetTables(table_name_filter_pattern="orders\\_h%")).column("table_name")
        assert names.to_pylist() == ["orders_history"]
        assert raw.fetch(pb.CommandGetTables(table_name_filter_pattern="order")).num_rows == 0
        assert raw.fetch(pb.CommandGetTables(table_name_filter_pattern="order_")).column("table_name").to_pylist() == [
            "orders"
        ]
        keys = raw.fetch(pb.CommandGetPrimaryKeys(table="orders")).to_pylist()
        assert keys == [
            {
                "catalog_name": "datafusion",
                "db_schema_name": "public",
                "table_name": "orders",
                "column_name": "id",
                "key_sequence": 1,
                "key_name": "orders_pkey",
            }
        ]
        assert raw.fetch(pb.CommandGetPrimaryKeys(table="orders_changes")).num_rows == 0
        assert raw.fetch(pb.CommandGetImportedKeys(table="orders")).num_rows == 0
        info = raw.fetch(pb.CommandGetSqlInfo(info=[pb.FLIGHT_SQL_SERVER_READ_ONLY, pb.SQL_IDENTIFIER_QUOTE_CHAR]))
        assert dict(zip(*info.to_pydict().values(), strict=True)) == {pb.FLIGHT_SQL_SERVER_READ_ONLY: True, 504: '"'}


def test_tickets_are_single_use_and_handles_checked(served):
    _lake, server = served
    with RawClient(server) as raw:
        info = raw.info(pb.CommandStatementQuery(query="SELECT count(*) AS n FROM orders"))
        ticket = info.endpoints[0].ticket
        assert raw.client.do_get(ticket).read_all().to_pylist() == [{"n": LIVE}]
        with pytest.raises(flight.FlightError, match="already used or expired"):
            raw.client.do_get(ticket).read_all()
        with pytest.raises(flight.FlightError, match="no such prepared statement"):
            raw.info(pb.CommandPreparedStatementQuery(prepared_statement_handle=b"forged"))
        with pytest.raises(flight.FlightServerError, match="not a Flight SQL command"):
            raw.client.get_flight_info(flight.FlightDescriptor.for_command(b"SELECT 1"))
        with pytest.raises(flight.FlightServerError, match="transactions are not supported"):
            raw.action("BeginTransaction", pb.ActionBeginTransactionRequest())
        [prepared] = raw.action(
            "CreatePreparedStatement",
            pb.ActionCreatePreparedStatementRequest(query="SELECT 1 AS x"),
            pb.ActionCreatePreparedStatementResult,
        )
        assert pa.ipc.read_schema(pa.py_buffer(prepared.dataset_schema)).names == ["x"]
        assert server.stats()["open_statements"] == 1
        raw.action(
            "ClosePreparedStatement",
            pb.ActionClosePreparedStatementRequest(prepared_statement_handle=prepared.prepared_statement_handle),
        )
        assert server.stats()["open_statements"] == 0
