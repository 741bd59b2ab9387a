"""PostgreSQL sources: the declared-type mapping, exact values, and keys in a collation unlike byte order."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

import rhei_lake

pytestmark = pytest.mark.postgres

TYPES_DDL = """
CREATE DOMAIN price AS numeric(10,2);
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE typed (
    id integer PRIMARY KEY, small smallint, big bigint, flag boolean, r real, d double precision,
    exact numeric(12,3), cost price, loose numeric, huge numeric(50,2), born date,
    at timestamptz, wall timestamp, bytes bytea, name varchar(20), code char(3), doc jsonb, u uuid,
    feeling mood, tags text[], span interval, t time, updated_at timestamptz NOT NULL
);
INSERT INTO typed VALUES (
    1, -7, 9223372036854775807, true, 0.1, 0.30000000000000004, 123456789.125, 19.99, 1.000000000000000000001,
    123456789012345678901234567890123456789012345678.99, '2026-03-04', '2026-01-01 12:00:00+02',
    '2026-01-01 12:00:00', '\\x00ff', 'ñandú', 'ab', '{"b": [1, 2], "a": null}', '00000000-0000-0000-0000-000000000005',
    'happy', '{x,"y z"}', '1 day 02:00:00', '13:14:15.5', '2026-01-02 00:00:00+00'
);
"""


def test_types_map_and_values_are_exact(postgres, pg_database, tmp_path):
    conn = postgres.connect(pg_database)
    conn.execute(TYPES_DDL)
    table = rhei_lake.PolledTable("typed", updated_at="updated_at", types={"loose": "numeric(30,21)"})
    with rhei_lake.open(source=postgres.url(pg_database), storage=str(tmp_path / "lake"), tables=[table]) as lake:
        spec = lake.table_spec("typed")
        arrow = {c.name: c.arrow_type for c in spec.columns}
        assert arrow == {
            "id": pa.int64(),
            "small": pa.int64(),
            "big": pa.int64(),
            "flag": pa.bool_(),
            "r": pa.float64(),
            "d": pa.float64(),
            "exact": pa.decimal128(12, 3),
            "cost": pa.decimal128(10, 2),
            "loose": pa.decimal128(30, 21),
            "huge": pa.string(),
            "born": pa.date32(),
            "at": pa.timestamp("us", tz="UTC"),
            "wall": pa.timestamp("us", tz="UTC"),
            "bytes": pa.binary(),
            "name": pa.string(),
            "code": pa.string(),
            "doc": pa.string(),
            "u": pa.string(),
            "feeling": pa.string(),
            "tags": pa.string(),
            "span": pa.string(),
            "t": pa.string(),
            "updated_at": pa.timestamp("us", tz="UTC"),
        }
        assert spec.column("cost").declared_type == "price" and spec.primary_key == ("id",)
        lake.sync_now()
        row = lake.query("SELECT * FROM typed").to_pylist()[0]
    assert row == {
        "id": 1,
        "small": -7,
        "big": 2**63 - 1,
        "flag": True,
        "r": float(pa.scalar(0.1, pa.float32()).as_py()),
        "d": 0.30000000000000004,
        "exact": Decimal("123456789.125"),
        "cost": Decimal("19.99"),
        "loose": Decimal("1.000000000000000000001"),
        "huge": "123456789012345678901234567890123456789012345678.99",
        "born": date(2026, 3, 4),
        "at": datetime(2026, 1, 1, 10, tzinfo=UTC),
        "wall": datetime(2026, 1, 1, 12, tzinfo=UTC),
        "bytes": b"\x00\xff",
        "name": "ñandú",
        "code": "ab",
        "doc": '{"a": null, "b": [1, 2]}',
        "u": "00000000-0000-0000-0000-000000000005",
        "feeling": "happy",
        "tags": '{x,"y z"}',
        "span": "1 day 02:00:00",
        "t": "13:14:15.5",
        "updated_at": datetime(2026, 1, 2, tzinfo=UTC),
    }
    conn.close()


def test_text_keys_in_a_non_byte_collation(postgres, pg_database, tmp_path):
    """The cursor compares in the column's collation; the key scan in byte order: both must stay right."""
    conn = postgres.connect(pg_database)
    collation = conn.execute(
        "SELECT collname FROM pg_collation WHERE collname IN ('und-x-icu', 'en-x-icu') ORDER BY 1 LIMIT 1"
    ).fetchone()
    if collation is None:
        pytest.skip("this PostgreSQL has no ICU collations")
    conn.execute(
        f'CREATE TABLE kv (k text COLLATE "{collation[0]}" PRIMARY KEY, v int, updated_at timestamptz NOT NULL)'
    )
    keys = ["a", "B", "b", "É", "e", "Z", "z", "ä", "_", "10", "9"]
    conn.execute("INSERT INTO kv SELECT k, 1, '2026-01-01' FROM unnest(%s::text[]) k", (keys,))
    table = rhei_lake.PolledTable("kv", updated_at="updated_at")
    with rhei_lake.open(
        source=postgres.url(pg_database),
        storage=str(tmp_path / "lake"),
        tables=[table],
        batch_size=3,
        hard_delete_interval=0,
    ) as lake:
        lake.sync_now()
        conn.execute("DELETE FROM kv WHERE k IN ('B', 'ä')")
        conn.execute("INSERT INTO kv VALUES ('A', 2, '2026-01-01')")  # at the boundary instant, below the cursor
        conn.execute("UPDATE kv SET v = 3, updated_at = '2026-01-02' WHERE k = 'e'")
        lake.sync_now()
        got = {r["k"]: r["v"] for r in lake.query("SELECT k, v FROM kv").to_pylist()}
        assert got == dict(conn.execute("SELECT k, v FROM kv").fetchall())
        ops = lake.query("SELECT _rhei_op, count(*) AS n FROM kv_changes GROUP BY _rhei_op ORDER BY 1").to_pylist()
        assert ops == [{"_rhei_op": "D", "n": 2}, {"_rhei_op": "I", "n": 12}, {"_rhei_op": "U", "n": 1}]
    conn.close()
