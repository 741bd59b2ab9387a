"""A polled SQLite table's first sync read whole by the ADBC reader process, checked against the row poll.

``columnar_min_rows=1`` sends every first sync through the columnar read,
``columnar_min_rows=0`` through the row poll: both must leave the same lake
(events, cursor, history) and agree with SQLite itself.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading

import pyarrow as pa
import pytest

import rhei_lake
from rhei_lake import faults
from rhei_lake.capture.sqlite_order import GreatestRow
from rhei_lake.capture.typed_select import after_witness
from rhei_lake.errors import TypeMismatchError
from tests.support.sidecar_source import SidecarWorkload, items_table, sqlite_source
from tests.sync.test_sidecar_random import COLUMNS

pytest.importorskip("adbc_driver_sqlite")

COLUMNAR, ROWS = 1, 0  # columnar_min_rows


def _open(source_url: str, storage: str, min_rows: int, table=None, **options) -> rhei_lake.Lake:
    # The key scan runs only when a test asks for it (it would mend a first read that missed rows).
    return rhei_lake.open(
        source=source_url,
        storage=storage,
        tables=[table or items_table()],
        columnar_min_rows=min_rows,
        hard_delete_interval=3600,
        **options,
    )


def _feed(lake: rhei_lake.Lake) -> list[dict]:
    """The change feed without sequence numbers (the columnar read numbers rows in storage order)."""
    return lake.query(f"SELECT {COLUMNS}, _rhei_op, _rhei_ts FROM items_changes ORDER BY id, _rhei_seq").to_pylist()


def _used_columnar(caplog) -> bool:
    return any("committed in one read" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("seed", [3, 11])
def test_first_read_leaves_the_lake_the_row_poll_leaves(source_db, tmp_path, caplog, seed, durable_storage):
    """Random rows (soft deletes, ties on updated_at, NULLs, exact doubles, 64-bit integers), then more syncs.

    SQLite and PostgreSQL sources; the columnar lake is on each durable tier, the row-poll lake
    beside it on local disk.
    """
    url, options = durable_storage
    source = source_db
    workload = SidecarWorkload(source, seed, key_space=400)
    workload.run(700)
    caplog.set_level(logging.INFO, logger="rhei_lake.sync")
    lakes = {
        COLUMNAR: _open(source.url, url, COLUMNAR, batch_size=64, storage_options=options),
        ROWS: _open(source.url, str(tmp_path / "lake-rows"), ROWS, batch_size=64),
    }
    try:
        for round_ in range(3):
            for mode, lake in lakes.items():
                lake.sync_now()
                if round_ == 0 and mode == COLUMNAR:
                    assert _used_columnar(caplog)
            workload.synced()
            assert _feed(lakes[COLUMNAR]) == _feed(lakes[ROWS]), f"round {round_}"
            cursors = {m: lake.sync_engine.changelogs["items"].cursor for m, lake in lakes.items()}
            assert cursors[COLUMNAR] == cursors[ROWS]
            for lake in lakes.values():
                lake.sync_engine.reconcile_now()  # hard deletes of the previous round
            assert _feed(lakes[COLUMNAR]) == _feed(lakes[ROWS]), f"round {round_}, after the key scan"
            current = lakes[COLUMNAR].query(f"SELECT {COLUMNS} FROM items").to_pylist()
            assert {r["id"]: tuple(r.values()) for r in current} == source.live_items(), f"round {round_}"
            workload.run(workload.rng.randint(20, 60))
        seqs = lakes[COLUMNAR].query("SELECT _rhei_seq FROM items_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs))
    finally:
        for lake in lakes.values():
            lake.close()


def test_a_table_whose_rows_are_all_soft_deleted_commits_only_its_cursor(tmp_path):
    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, "
        "updated_at TEXT NOT NULL, deleted_at TEXT)"
    )
    source.executemany(
        "INSERT INTO items VALUES (?, 'x', 1.5, 1, ?, ?)", [(i, f"2026-01-01T00:00:0{i}Z", "gone") for i in range(1, 6)]
    )
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        assert lake.sync_now().events == 0
        assert lake.sync_engine.changelogs["items"].cursor is not None
        source.execute("UPDATE items SET deleted_at = NULL, updated_at = '2026-01-02T00:00:00Z' WHERE id = 2")
        assert lake.sync_now().events == 1
        assert lake.query("SELECT id FROM items").to_pylist() == [{"id": 2}]
    source.close()


@pytest.mark.parametrize("min_rows", [COLUMNAR, ROWS])
def test_a_misfit_value_is_named_and_the_rows_before_it_are_committed(tmp_path, min_rows, caplog):
    """The columnar read hands a table with a bad value to the row poll, which commits up to it and names it."""
    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT NOT NULL)")
    source.executemany(
        "INSERT INTO items VALUES (?, ?, ?)", [(i, i, f"2026-01-01T00:00:{i:02d}Z") for i in range(1, 41)]
    )
    source.execute("UPDATE items SET qty = 'many' WHERE id = 30")
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    caplog.set_level(logging.INFO, logger="rhei_lake.sync")
    with _open(source.url, str(tmp_path / "lake"), min_rows, table, batch_size=8) as lake:
        with pytest.raises(TypeMismatchError, match=r"'qty', row id=30") as info:
            lake.sync_now()
        assert info.value.primary_key == {"id": 30}
        assert lake.query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 29}]
        assert not _used_columnar(caplog)
        source.execute("UPDATE items SET qty = 30 WHERE id = 30")
        lake.sync_now()
        assert lake.query("SELECT count(*) AS n, sum(qty) AS s FROM items").to_pylist() == [{"n": 40, "s": 820}]
    source.close()


@pytest.mark.parametrize("at", [1, 20, 40])  # in the first batch, a middle one, the last one
def test_a_blob_in_a_text_column_stops_the_columnar_read_and_the_row_poll_names_it(tmp_path, at, caplog):
    """The fast read's own SQL check stops it wherever the blob is (ADBC would read it as text
    past the first batch); the row poll then commits the rows before it and names it."""
    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, updated_at TEXT NOT NULL)")
    source.executemany(
        "INSERT INTO items VALUES (?, ?, ?)", [(i, f"n{i}", f"2026-01-01T00:00:{i:02d}Z") for i in range(1, 41)]
    )
    source.execute("UPDATE items SET name = ? WHERE id = ?", (b"blob", at))  # valid UTF-8: ADBC would take it as text
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    caplog.set_level(logging.INFO, logger="rhei_lake.sync")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR, table, batch_size=8) as lake:
        with pytest.raises(TypeMismatchError) as info:
            lake.sync_now()
        assert info.value.column == "name" and info.value.primary_key == {"id": at}
        assert lake.query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": at - 1}]
        assert not _used_columnar(caplog)
        source.execute("UPDATE items SET name = 'fixed' WHERE id = ?", (at,))
        lake.sync_now()
        assert lake.query("SELECT count(*) AS n FROM items WHERE name IS NOT NULL").to_pylist() == [{"n": 40}]
    source.close()


def test_an_unreadable_updated_at_is_named_by_the_row_poll(tmp_path):
    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, updated_at TEXT)")
    source.executemany("INSERT INTO items VALUES (?, ?)", [(1, "2026-01-01"), (2, "2026-01-02"), (3, "soon")])
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR, table) as lake:
        with pytest.raises(TypeMismatchError, match=r"'updated_at', row id=3: 'soon'"):
            lake.sync_now()
        assert lake.query("SELECT id FROM items ORDER BY id").to_pylist() == [{"id": 1}, {"id": 2}]
    source.close()


def test_a_crash_between_the_events_and_the_cursor_doubles_nothing(tmp_path):
    """The events commit first, the cursor second: without the cursor the next poll re-reads, adding nothing."""
    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, "
        "updated_at TEXT NOT NULL, deleted_at TEXT)"
    )
    SidecarWorkload(source, 5, key_space=200).run(300)
    lake_path = str(tmp_path / "lake")

    class Crash(Exception):
        pass

    def crash(_point: str) -> None:
        raise Crash

    with _open(source.url, lake_path, COLUMNAR) as lake, faults.armed("first_sync.after_events_before_cursor", crash):
        with pytest.raises(Crash):
            lake.sync_now()
        assert lake.sync_engine.changelogs["items"].cursor is None
    with _open(source.url, lake_path, COLUMNAR) as lake:
        assert lake.sync_now().events == 0
        assert lake.sync_engine.changelogs["items"].cursor is not None
        current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
        assert current == source.live_items()
        inserts = lake.query("SELECT id, count(*) AS n FROM items_changes GROUP BY id HAVING count(*) > 1")
        assert inserts.num_rows == 0
    source.close()


def test_a_declared_collation_is_left_to_sqlite(tmp_path):
    """Text compared NOCASE sorts unlike its bytes: the cursor must be the one SQLite's order ends on."""
    source = sqlite_source(str(tmp_path / "ext.db"))
    source.execute("CREATE TABLE items (code TEXT COLLATE NOCASE PRIMARY KEY, updated_at TEXT NOT NULL)")
    source.executemany("INSERT INTO items VALUES (?, '2026-01-01T00:00:00Z')", [("a",), ("B",), ("c",), ("D",)])
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    cursors = {}
    for mode in (COLUMNAR, ROWS):
        with _open(source.url, str(tmp_path / f"lake-{mode}"), mode, table) as lake:
            assert lake.sync_now().events == 4
            cursors[mode] = lake.sync_engine.changelogs["items"].cursor
    assert cursors[COLUMNAR] == cursors[ROWS]
    assert '"D"' in cursors[ROWS]
    source.close()


def _stored(rng: random.Random):
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.35:
        return rng.choice([0, 1, -1, 2**62, -(2**62), rng.randint(-50, 50)])
    if roll < 0.55:
        return rng.choice([0.0, -0.5, 1.0, 1e300, rng.uniform(-50, 50)])
    if roll < 0.85:
        return "".join(rng.choice("aAbZ0 é漢") for _ in range(rng.randint(0, 4)))
    return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 3)))


class _FourParts:
    """Stands in for TypedSelect: each column read as four storage-class parts (integer, real, text, blob)."""

    names = ("u", "k1", "k2")

    def raw_parts(self, batch: pa.RecordBatch, name: str) -> list[pa.Array]:
        start = 4 * self.names.index(name)
        return [batch.column(start + k) for k in range(4)]

    @classmethod
    def sql(cls) -> str:
        parts = [
            f"CASE WHEN typeof({c}) = '{kind}' THEN {c} END"
            for c in cls.names
            for kind in ("integer", "real", "text", "blob")
        ]
        witness = "SELECT " + ", ".join(["0", "0.0", "''", "x''"] * len(cls.names))
        return f"{witness} UNION ALL SELECT {', '.join(parts)} FROM t"


@pytest.mark.parametrize("seed", range(6))
def test_greatest_row_agrees_with_sqlites_order(tmp_path, seed):
    """Every storage class, NULLs and ties in untyped columns: the greatest (u, k1, k2) is ORDER BY's first."""
    import adbc_driver_sqlite.dbapi as adbc

    rng = random.Random(seed)
    conn = sqlite3.connect(tmp_path / "order.db")
    conn.execute("CREATE TABLE t (u, k1, k2, PRIMARY KEY (k1, k2))")
    rows = {}
    for _ in range(300):
        key = (
            rng.choice([1, 2, 2.5, "x", "X", b"\x01"]),
            rng.randint(0, 40) if rng.random() < 0.7 else rng.choice("ab"),
        )
        rows[key] = _stored(rng) if rng.random() < 0.5 else rng.choice([5, 5.0, "zz", b"\xff"])
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [(u, *k) for k, u in rows.items()])
    conn.commit()
    expected = conn.execute("SELECT u, k1, k2 FROM t ORDER BY u DESC, k1 DESC, k2 DESC LIMIT 1").fetchone()
    conn.close()
    greatest = GreatestRow(_FourParts(), _FourParts.names)
    with adbc.connect(str(tmp_path / "order.db")) as reader, reader.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "37"})
        cur.execute(_FourParts.sql())
        for batch in after_witness(cur.fetch_record_batch()):
            greatest.observe(batch)
    assert greatest.values == tuple(expected)
    assert [type(v) for v in greatest.values] == [type(v) for v in expected]


PG_TYPES_DDL = """
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TABLE "odd%types" (
    id bigint, part smallint, flag boolean, small integer, amount numeric(12, 3), loose numeric,
    ratio real, wide double precision, born date, naive timestamp, seen timestamptz, blob bytea,
    uid uuid, doc jsonb, code char(5), label varchar(20), counter positive_int,
    updated_at timestamptz NOT NULL, deleted_at boolean,
    PRIMARY KEY (id, part)
)
"""


def _pg_row(rng: random.Random, i: int) -> tuple:
    import uuid
    from datetime import UTC, date, datetime, timedelta
    from decimal import Decimal

    def maybe(value):
        return None if rng.random() < 0.15 else value

    seen = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randint(0, 10**12))
    return (
        i // 3,
        i % 3,
        maybe(rng.random() < 0.5),
        maybe(rng.randint(-(2**31), 2**31 - 1)),
        maybe(Decimal(rng.randint(-(10**11), 10**11)) / 1000),
        maybe(Decimal(str(rng.uniform(-1e6, 1e6)))),
        maybe(rng.uniform(-1, 1)),
        maybe(rng.uniform(-1e300, 1e300)),
        maybe(date(2026, 1, 1) + timedelta(days=i)),
        maybe(seen.replace(tzinfo=None)),
        maybe(seen),
        maybe(bytes(rng.randint(0, 255) for _ in range(3))),
        maybe(uuid.UUID(int=rng.getrandbits(128))),
        maybe(f'{{"n": {i}}}'),
        maybe("ab"),
        maybe(f"l{i}%"),
        maybe(rng.randint(1, 99)),
        datetime(2026, 2, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 50)),
        rng.choice([None, None, False, True]),
    )


def _pg_items(postgres, rows: int, name: str = "'n' || g"):
    """A PostgreSQL source whose ``items`` hold ``rows`` rows (ids 1..rows, ``name`` an SQL expression of g)."""
    from tests.support.sidecar_source import ITEMS_DDL, postgres_source

    source = postgres_source(postgres, postgres.create_database())
    source.execute(ITEMS_DDL["postgresql"])
    source.execute(
        f"INSERT INTO items SELECT g, {name}, g * 0.25, g, timestamptz '2026-01-01' + g * interval '1 ms', NULL "
        f"FROM generate_series(1, {rows}) g"
    )
    return source


def _break_the_copys_statement(monkeypatch, **methods) -> None:
    """Make the first read's COPY statement (its SELECT) call ``methods`` (e.g. ``cancel=...``) instead of the
    driver's own; the rest of it stays the driver's."""
    from rhei_lake.capture.postgres_first_read import PostgresFirstRead

    class Broken:
        def __init__(self, statement) -> None:
            self._statement = statement

        def __getattr__(self, name: str):
            return methods[name] if name in methods else getattr(self._statement, name)

    real_statement = PostgresFirstRead._statement

    def statement(self, sql: str):
        made = real_statement(self, sql)
        return Broken(made) if sql.startswith("SELECT") else made

    monkeypatch.setattr(PostgresFirstRead, "_statement", statement)


def test_postgres_types_read_columnar_equal_the_row_poll(postgres, tmp_path, caplog):
    """Every PostgreSQL type rhei_lake maps, NULLs included, through both reads: the same events and cursor."""
    from tests.support.sidecar_source import postgres_source

    source = postgres_source(postgres, postgres.create_database())
    source.conn.execute(PG_TYPES_DDL)
    rng = random.Random(4)
    marks = ", ".join(["%s"] * 19)
    with source.conn.cursor() as cur:
        cur.executemany(f'INSERT INTO "odd%%types" VALUES ({marks})', [_pg_row(rng, i) for i in range(300)])
    table = rhei_lake.PolledTable("odd%types", updated_at="updated_at", deleted_at="deleted_at")
    caplog.set_level(logging.INFO, logger="rhei_lake.sync")
    results = {}
    for mode in (COLUMNAR, ROWS):
        with _open(source.url, str(tmp_path / f"lake-{mode}"), mode, table) as lake:
            report = lake.sync_now()
            assert report.events == source.query('SELECT count(*) FROM "odd%types" WHERE deleted_at IS NOT TRUE')[0][0]
            feed = lake.query('SELECT * EXCEPT (_rhei_seq) FROM "odd%types_changes" ORDER BY id, part')
            results[mode] = (feed, lake.sync_engine.changelogs["odd%types"].cursor)
        assert _used_columnar(caplog) == (mode == COLUMNAR)
        caplog.clear()
    assert results[COLUMNAR][0].equals(results[ROWS][0])
    assert results[COLUMNAR][1] == results[ROWS][1]
    source.close()


def test_a_postgres_value_the_cast_refuses_is_named_by_the_row_poll(postgres, tmp_path, caplog):
    from tests.support.sidecar_source import postgres_source

    source = postgres_source(postgres, postgres.create_database())
    source.conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, amount numeric(8, 2), updated_at timestamptz)")
    source.conn.execute(
        "INSERT INTO items SELECT g, g, timestamptz '2026-01-01' + g * interval '1 s' FROM generate_series(1, 50) g"
    )
    source.conn.execute("UPDATE items SET amount = 'NaN' WHERE id = 40")
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    caplog.set_level(logging.INFO, logger="rhei_lake.sync")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR, table) as lake:
        with pytest.raises(TypeMismatchError, match=r"'amount'.*id=40"):
            lake.sync_now()
        assert not _used_columnar(caplog)
        assert lake.query("SELECT count(*) AS n FROM items").to_pylist() == [{"n": 39}]
    source.close()


def test_a_failing_columnar_setup_falls_back_to_the_row_poll_without_echoing_the_url(
    postgres, tmp_path, caplog, monkeypatch
):
    import adbc_driver_postgresql as adbc_pg

    from tests.support.sidecar_source import ITEMS_DDL, postgres_source

    source = postgres_source(postgres, postgres.create_database())
    source.execute(ITEMS_DDL["postgresql"])
    SidecarWorkload(source, 2).run(50)

    def refuse(url, *args, **kwargs):
        raise RuntimeError(f"cannot reach {url}")

    monkeypatch.setattr(adbc_pg, "connect", refuse)
    caplog.set_level(logging.INFO, logger="rhei_lake")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        lake.sync_now()
        current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
        assert current == source.live_items()
    assert not _used_columnar(caplog)
    warnings = [r.getMessage() for r in caplog.records if "columnar first read is unavailable" in r.getMessage()]
    assert warnings and "RuntimeError" in warnings[0]
    from tests.support.postgres import PASSWORD

    assert PASSWORD in source.url
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
    source.close()


def test_a_postgres_first_read_failing_mid_pipeline_leaves_no_thread_and_a_retry_commits_once(
    postgres, tmp_path, caplog
):
    """The read-and-cast thread fails (as a lost connection would): the sync fails with that error,
    nothing is committed, the thread and the cursor's query are gone, and the next sync commits
    every row once."""
    import threading

    from rhei_lake.errors import SourceError
    from tests.support.sidecar_source import ITEMS_DDL, postgres_source

    source = postgres_source(postgres, postgres.create_database())
    source.execute(ITEMS_DDL["postgresql"])
    SidecarWorkload(source, 5).run(300)

    def lost(_point: str) -> None:
        raise SourceError("connection lost (injected)")

    caplog.set_level(logging.INFO, logger="rhei_lake")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        with faults.armed("first_read.batch_converted", lost):
            with pytest.raises(SourceError, match="injected"):
                lake.sync_now()
        readers = [t.name for t in threading.enumerate() if t.name.startswith(("rhei-first-read", "rhei-reader"))]
        assert not readers, f"threads of the read outlived it: {readers}"
        assert _feed(lake) == []
        lake.sync_now()
        current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
        assert current == source.live_items()
        seqs = lake.query("SELECT _rhei_seq FROM items_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)) == len(current)
    assert _used_columnar(caplog)
    source.close()


def test_a_postgres_first_read_whose_connection_is_killed_mid_read_is_transient_and_a_retry_commits_once(
    postgres, tmp_path, caplog
):
    """The server ends the ADBC connection while rows still stream (pg_terminate_backend, as a
    restart or an administrator would): the sync fails with a transient SourceUnavailableError,
    commits nothing, leaves no thread of the read, and the next sync commits every row once."""
    import threading

    from rhei_lake.errors import SourceUnavailableError

    # ~40 MB of COPY data: the driver reads it in several batches (BATCH_BYTES each).
    source = _pg_items(postgres, 120000, "repeat('x', 300) || g")
    killed: list[int] = []

    def kill_the_copy(_point: str) -> None:
        rows = source.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'COPY%'"
        )
        killed.extend(1 for (ok,) in rows if ok)

    caplog.set_level(logging.INFO, logger="rhei_lake")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        with faults.armed("first_read.batch_converted", kill_the_copy, hit=1):
            with pytest.raises(SourceUnavailableError) as raised:
                lake.sync_now()
        assert raised.value.transient
        assert killed, "no COPY was running to kill"
        readers = [t.name for t in threading.enumerate() if t.name.startswith("rhei-first-read")]
        assert not readers, f"threads of the read outlived it: {readers}"
        assert lake.query("SELECT count(*) AS n FROM items_changes").column(0)[0].as_py() == 0
        lake.sync_now()
        ids = lake.query("SELECT id FROM items_changes").column(0).to_pylist()
        assert sorted(ids) == list(range(1, 120001))
        seqs = lake.query("SELECT _rhei_seq FROM items_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)) == 120000
    assert _used_columnar(caplog)
    source.close()


@pytest.mark.parametrize(("rows", "columnar"), [(499, False), (500, True), (501, True)])
def test_a_postgres_table_is_read_whole_from_columnar_min_rows_rows(postgres, tmp_path, caplog, rows, columnar):
    """The size check reads at most ``columnar_min_rows`` rows; the boundary is where it says."""

    source = _pg_items(postgres, rows)
    caplog.set_level(logging.INFO, logger="rhei_lake")
    with _open(source.url, str(tmp_path / "lake"), 500) as lake:
        assert lake.sync_now().events == rows
        current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
        assert current == source.live_items()
    assert _used_columnar(caplog) == columnar
    source.close()


def test_a_postgres_first_read_is_one_snapshot_while_another_connection_writes(postgres, tmp_path, caplog):
    """Another connection inserts, updates and soft-deletes rows all through a first read whose rows are
    counted, and whose last row is read, in a thread beside the COPY: the first sync commits one
    snapshot (its events as many as the rows it counted, or it fails), the next sync the rest, and
    the lake equals PostgreSQL."""
    import time

    import psycopg

    source = _pg_items(postgres, 60000)
    stop = threading.Event()
    writes = [0]

    def write() -> None:
        with psycopg.connect(source.url, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                n += 1
                stamp = f"2027-01-01 00:00:00+00'::timestamptz + interval '{n} ms"
                if n % 3 == 0:
                    conn.execute(f"INSERT INTO items VALUES ({100000 + n}, 'new', 0.5, {n}, '{stamp}', NULL)")
                elif n % 3 == 1:
                    conn.execute(
                        f"UPDATE items SET qty = qty + 1, updated_at = '{stamp}' WHERE id = {n * 7919 % 60000 + 1}"
                    )
                else:
                    conn.execute(
                        f"UPDATE items SET deleted_at = '{stamp}', updated_at = '{stamp}' WHERE id = {n * 104729 % 60000 + 1}"
                    )
                writes[0] = n
                time.sleep(0.0005)

    writer = threading.Thread(target=write)
    caplog.set_level(logging.INFO, logger="rhei_lake")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        writer.start()
        try:
            while writes[0] < 20:
                time.sleep(0.005)
            before = writes[0]
            with faults.armed("first_read.batch_converted", lambda _point: time.sleep(0.05), times=0):
                lake.sync_now()
            assert writes[0] > before + 20, "nothing was written while the first read ran"
        finally:
            stop.set()
            writer.join()
        assert _used_columnar(caplog)
        lake.sync_now()
        current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
        assert current == source.live_items()
        seqs = lake.query("SELECT _rhei_seq FROM items_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs))
    source.close()


@pytest.mark.parametrize("what", ["ended before the COPY", "ended during the COPY", "statement timeout"])
def test_a_postgres_first_read_whose_count_fails_hands_the_table_to_the_row_poll(postgres, tmp_path, caplog, what):
    """The count beside the read fails: the server ends the connection holding the snapshot just before
    it counts (before the COPY took the snapshot up, or once the COPY runs), or the count exceeds a
    statement timeout. The row poll reads the table instead, as it did when the count came first (it
    reads in small steps, and raises what it meets itself); no thread of the read is left, and the
    lake equals PostgreSQL."""
    import time

    import psycopg

    from rhei_lake.capture.postgres_db import APPLICATION_NAME
    from tests.support.postgres import PASSWORD

    source = _pg_items(postgres, 60000, "repeat('x', 300) || g")
    activity = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    killed: list[int] = []

    def fail_the_count(_point: str) -> None:
        deadline = time.monotonic() + 10
        while what != "ended before the COPY" and not source.query(
            f"SELECT 1 {activity} AND query LIKE 'COPY%%' AND state = 'active'"
        ):
            assert time.monotonic() < deadline, "the COPY never started"
            time.sleep(0.002)
        if what == "statement timeout":
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")
        rows = source.query(
            f"SELECT pg_terminate_backend(pid) {activity} AND application_name = '{APPLICATION_NAME}' "
            "AND state = 'idle in transaction'"
        )
        killed.extend(1 for (ok,) in rows if ok)

    caplog.set_level(logging.INFO, logger="rhei_lake")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        with faults.armed("first_read.before_count", fail_the_count):
            assert lake.sync_now().events == 60000
        assert killed == ([] if what == "statement timeout" else [1]), "not exactly the snapshot's connection ended"
        readers = [t.name for t in threading.enumerate() if t.name.startswith("rhei-first-read")]
        assert not readers, f"threads of the read outlived it: {readers}"
        assert _used_columnar(caplog) is False
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        gone = "could not count" if what != "ended before the COPY" else "columnar first read is unavailable"
        assert any(gone in m for m in warned), warned
        assert all(PASSWORD not in m for m in warned)
        ids = lake.query("SELECT id FROM items_changes").column(0).to_pylist()
        assert sorted(ids) == list(range(1, 60001))
        current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
        assert current == source.live_items()
    source.close()


def test_a_lock_the_copy_waits_for_mid_read_is_transient_and_the_next_sync_reads_the_table(postgres, tmp_path):
    """A view whose column calls a function reading another table, which a job holds exclusively for a
    while: the COPY gives up waiting for it after a second (neither the size check nor the count calls the
    function, so the read holds no lock on that table). The sync fails transiently (the loop retries, it
    does not stop), and once the job is done the next sync reads every row."""
    import time

    import psycopg

    from rhei_lake.errors import SourceUnavailableError

    source = _pg_items(postgres, 3000)
    source.execute("CREATE TABLE lookup (id int PRIMARY KEY, label text)")
    source.execute("INSERT INTO lookup VALUES (0, 'even'), (1, 'odd')")
    source.execute(
        "CREATE FUNCTION label_of(i bigint) RETURNS text LANGUAGE plpgsql STABLE AS "
        "$$ BEGIN RETURN (SELECT label FROM lookup WHERE id = (i %% 2)::int); END $$"
    )
    source.execute("CREATE VIEW labelled AS SELECT items.*, label_of(items.id) AS label FROM items")
    held, release = threading.Event(), threading.Event()

    def hold_lookup() -> None:
        with psycopg.connect(source.url) as conn:
            conn.execute("LOCK TABLE lookup IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lookup)
    holder.start()
    table = rhei_lake.PolledTable("labelled", primary_key=["id"], updated_at="updated_at", deleted_at="deleted_at")
    try:
        assert held.wait(10)
        with _open(source.url, str(tmp_path / "lake"), COLUMNAR, table) as lake:
            started = time.monotonic()
            with pytest.raises(SourceUnavailableError, match="lock timeout") as raised:
                lake.sync_now()
            assert raised.value.transient
            assert time.monotonic() - started < 8
            release.set()
            holder.join()
            lake.sync_now()
            rows = lake.query("SELECT id, label FROM labelled").to_pylist()
            assert sorted(r["id"] for r in rows) == list(range(1, 3001))
            assert {r["label"] for r in rows} == {"even", "odd"}
    finally:
        release.set()
        holder.join()
    source.close()


def test_a_first_read_closed_while_the_server_refuses_its_cancel_still_ends_its_threads(
    postgres, tmp_path, monkeypatch
):
    """The count fails while the COPY streams, so the read is closed early, and the COPY's cancel cannot
    reach the server (as when it went away): the close goes on (no driver error escapes, no thread or
    connection is left) and the row poll reads the table."""
    import adbc_driver_manager
    import psycopg

    source = _pg_items(postgres, 3000)

    def refused() -> None:
        raise adbc_driver_manager.OperationalError("PQcancel() -- connect() failed", status_code=1)

    def fail_the_count(_point: str) -> None:
        raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    _break_the_copys_statement(monkeypatch, cancel=refused)
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        with faults.armed("first_read.before_count", fail_the_count):
            assert lake.sync_now().events == 3000
        readers = [t.name for t in threading.enumerate() if t.name.startswith("rhei-first-read")]
        assert not readers, f"threads of the read outlived it: {readers}"
        assert source.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state LIKE 'idle in transaction%%'"
        ) == [(0,)]
    source.close()


@pytest.mark.timeout(60)  # without the read giving way, it waits for ever
def test_a_schema_change_queued_during_a_postgres_first_read_is_let_through_and_the_next_sync_reads_it(
    postgres, tmp_path, caplog, monkeypatch
):
    """An ALTER TABLE queues behind the first read's snapshot connection (which holds the table from its
    size check) before the COPY asks for the table: the COPY would wait behind the ALTER, which waits for
    the read to end, and nothing in PostgreSQL breaks that cycle. The read gives way (transient), the
    ALTER runs, and the next sync commits every row once."""
    import time

    import adbc_driver_postgresql
    import psycopg

    from rhei_lake.errors import SourceUnavailableError

    source = _pg_items(postgres, 5000)
    altered: list[float] = []

    def migrate() -> None:
        with psycopg.connect(source.url, autocommit=True) as conn:
            started = time.monotonic()
            conn.execute("ALTER TABLE items ADD COLUMN note text DEFAULT 'x'")
            altered.append(time.monotonic() - started)

    real_connect = adbc_driver_postgresql.connect

    def connect_once_the_alter_waits(url: str):
        threading.Thread(target=migrate, daemon=True).start()
        deadline = time.monotonic() + 10
        while not source.query(
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'ALTER%%' AND wait_event_type = 'Lock'"
        ):
            assert time.monotonic() < deadline, "the ALTER never queued"
            time.sleep(0.005)
        return real_connect(url)

    monkeypatch.setattr(adbc_driver_postgresql, "connect", connect_once_the_alter_waits)
    caplog.set_level(logging.INFO, logger="rhei_lake")
    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        started = time.monotonic()
        with pytest.raises(SourceUnavailableError, match="lock timeout") as raised:
            lake.sync_now()
        assert raised.value.transient
        assert time.monotonic() - started < 8
        deadline = time.monotonic() + 10
        while not altered:
            assert time.monotonic() < deadline, "the ALTER still waits once the read gave way"
            time.sleep(0.01)
        monkeypatch.setattr(adbc_driver_postgresql, "connect", real_connect)
        lake.sync_now()
        assert _used_columnar(caplog)
        ids = lake.query("SELECT id FROM items_changes").column(0).to_pylist()
        assert sorted(ids) == list(range(1, 5001))
        current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
        assert current == source.live_items()
    source.close()


@pytest.mark.parametrize(
    ("sqlstate", "transient"),
    [("57P01", True), ("08006", True), ("55P03", True), ("42501", False), ("XX000", False), (None, False)],
)
def test_an_error_of_a_postgres_first_reads_copy_is_rhei_lakes_own(
    postgres, tmp_path, monkeypatch, sqlstate, transient
):
    """The COPY's query fails as it is prepared (the server going away, a lock given up, a permission, an
    internal error): the sync raises a rhei_lake SourceError, transient where retrying may help, never the
    driver's own error, and nothing of the password; no thread of the read is left."""
    import adbc_driver_manager

    from rhei_lake.errors import SourceError
    from tests.support.postgres import PASSWORD

    source = _pg_items(postgres, 3000)

    def refused():
        raise adbc_driver_manager.ProgrammingError(
            f"Failed to prepare query ({source.url})", status_code=6, sqlstate=sqlstate
        )

    with _open(source.url, str(tmp_path / "lake"), COLUMNAR) as lake:
        _break_the_copys_statement(monkeypatch, execute_query=refused)
        with pytest.raises(SourceError) as raised:
            lake.sync_now()
        assert raised.value.transient == transient, raised.value
        assert PASSWORD not in str(raised.value)
        readers = [t.name for t in threading.enumerate() if t.name.startswith("rhei-first-read")]
        assert not readers, f"threads of the read outlived it: {readers}"
        monkeypatch.undo()
        lake.sync_now()
        assert sorted(lake.query("SELECT id FROM items_changes").column(0).to_pylist()) == list(range(1, 3001))
    source.close()


def test_a_postgres_first_read_closed_before_its_count_starts_runs_no_count(postgres, tmp_path, monkeypatch):
    """The ADBC connection cannot be made while the thread that counts the rows has not sent its
    query yet: a cancel then would be lost, and the count and the last row's scan would run to their
    end before the row poll takes over. The read closes without running either."""
    import time

    import adbc_driver_postgresql

    from rhei_lake.capture.polled_source import open_polled_source
    from rhei_lake.capture.postgres_first_read import PostgresFirstRead
    from rhei_lake.capture.source_url import parse_source_url

    source = _pg_items(postgres, 2000)

    def refuse(url: str):
        raise RuntimeError("no connection for the driver")

    closed: list[PostgresFirstRead] = []
    real_close = PostgresFirstRead.close

    def close(self) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(adbc_driver_postgresql, "connect", refuse)
    monkeypatch.setattr(PostgresFirstRead, "close", close)
    polled = open_polled_source(parse_source_url(source.url))
    try:
        plan = polled.describe(items_table())
        with faults.armed("first_read.before_count", lambda _point: time.sleep(0.3)):
            assert polled.first_read(plan, 1) is None  # the row poll takes over
        (first,) = closed
        assert first._rows is None and first.cursor is None, "the count or the last row's scan ran"
        assert not [t.name for t in threading.enumerate() if t.name.startswith("rhei-first-read")]
    finally:
        polled.close()
    source.close()


@pytest.mark.parametrize("storage", ["local", "memory"])
def test_a_transient_source_error_inside_the_first_read_stays_transient(tmp_path, monkeypatch, storage):
    """The source goes away while the columnar read streams into the Delta writer: the error the
    sync raises is the source's own (transient, so the loop retries), not a storage error."""
    from rhei_lake.capture.sqlite_first_read import SqliteFirstRead
    from rhei_lake.errors import SourceUnavailableError

    source = sqlite_source(str(tmp_path / "external.db"))
    source.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, "
        "updated_at TEXT NOT NULL, deleted_at TEXT)"
    )
    source.executemany(
        "INSERT INTO items VALUES (?, 'n', 0.5, 1, '2026-01-01 00:00:00', NULL)", [(i,) for i in range(50)]
    )
    batches = SqliteFirstRead.batches

    def failing(self, batch_rows):
        for i, batch in enumerate(batches(self, batch_rows)):
            if i == 1:
                raise SourceUnavailableError("external.db: database is locked")
            yield batch

    monkeypatch.setattr(SqliteFirstRead, "batches", failing)
    url = str(tmp_path / "lake") if storage == "local" else "memory://"
    with _open(source.url, url, COLUMNAR, batch_size=10) as lake:
        with pytest.raises(SourceUnavailableError, match="database is locked") as raised:
            lake.sync_now()
        assert raised.value.transient
        monkeypatch.setattr(SqliteFirstRead, "batches", batches)
        lake.sync_now()
        assert lake.query("SELECT count(*) FROM items").column(0)[0].as_py() == 50
    source.close()


def test_a_first_read_meeting_a_committing_writer_of_a_rollback_journal_database_waits_for_it(tmp_path, monkeypatch):
    """In rollback-journal mode a writer's commit locks readers out for a moment; the first read that meets
    it waits, as the row poll's connections do, and reads the table as SQLite has it after the commit (it
    used to fail at once with a terminal SourceError, stopping the sync loop for good)."""
    from rhei_lake.capture.reader_process import ReaderProcess

    path = str(tmp_path / "journal.db")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA journal_mode=DELETE")
    writer.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, "
        "updated_at TEXT NOT NULL, deleted_at TEXT)"
    )
    writer.executemany(
        "INSERT INTO items VALUES (?, 'n', 0.1, 1, '2026-01-01 00:00:00', NULL)", [(i,) for i in range(50)]
    )
    begin = ReaderProcess.begin
    commits: list[threading.Timer] = []

    def begin_while_a_writer_commits(self):
        if not commits:
            writer.execute("BEGIN EXCLUSIVE")
            writer.execute("INSERT INTO items VALUES (50, 'late', 0.3, 2, '2026-01-01 00:00:01', NULL)")
            commits.append(threading.Timer(0.3, writer.execute, ("COMMIT",)))
            commits[0].start()
        begin(self)

    monkeypatch.setattr(ReaderProcess, "begin", begin_while_a_writer_commits)
    try:
        with _open(f"sqlite://{path}", str(tmp_path / "lake"), COLUMNAR) as lake:
            assert lake.sync_now().events == 51
            got = lake.query("SELECT id, name, price, qty, updated_at FROM items ORDER BY id").to_pylist()
            want = writer.execute("SELECT id, name, price, qty, updated_at FROM items ORDER BY id").fetchall()
            assert [tuple(row.values()) for row in got] == want
    finally:
        for commit in commits:
            commit.join()
        writer.close()
