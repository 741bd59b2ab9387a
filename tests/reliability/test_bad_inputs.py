"""Bad input, one row each: the specific rhei_lake error, a message that says what to fix, nothing written.

Every case runs on its own directory (or bucket). Before the failing call the
test takes a fingerprint of everything the call could write: the files under
the directory (the lake, the SQLite files' siblings) and a logical dump of the
SQLite database. The call must raise exactly the expected class with a
one-line message containing the expected fragment, and the fingerprint must be
unchanged: no partial write anywhere.
"""

from __future__ import annotations

import glob
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import rhei_lake
from rhei_lake.errors import (
    ConfigError,
    CorruptStorageError,
    QueryError,
    RheiError,
    SchemaError,
    SourceError,
    StorageAccessError,
    StorageUnavailableError,
    TypeMismatchError,
    WriteRefusedError,
)
from tests.reliability import summary

_VARIABLE_LIMIT = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
COLUMNS = (
    "id INTEGER PRIMARY KEY, n INTEGER, s TEXT, r REAL, b BLOB, d DATE, ts TIMESTAMP, "
    "dec DECIMAL(5,2), flag BOOLEAN, must REAL NOT NULL DEFAULT 0"
)


class Ctx:
    """One case's directory, its SQLite database and (opened on demand) its lake."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.tmp = tmp_path
        self.db = tmp_path / "app.db"
        self.url = str(tmp_path / "lake")
        self.request = request
        self._lake: rhei_lake.Lake | None = None
        self.bucket_listing: Callable[[], list] | None = None

    def lake(self) -> rhei_lake.Lake:
        if self._lake is None:
            lake = rhei_lake.open(oltp_path=str(self.db), storage=self.url, tail_flush_segments=100)
            lake.execute(f"CREATE TABLE t ({COLUMNS})")
            lake.register_table("t")
            lake.execute_batch([("INSERT INTO t (id, n, s) VALUES (?, ?, ?)", (i, i, f"s{i}")) for i in range(3)])
            lake.sync_now()
            self._lake = lake
        _settle(self._lake)
        return self._lake

    def sqlite(self, sql: str, params: tuple = ()) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            conn.execute(sql, params)
        finally:
            conn.close()

    def moto(self):
        return self.request.getfixturevalue("moto")

    def close(self) -> None:
        if self._lake is not None:
            self._lake.close(final_sync=False)


def _settle(lake: rhei_lake.Lake) -> None:
    """Let the background upkeep a sync hands off (CDC-log pruning, tail folding) finish."""
    engine = lake.sync_engine
    if engine is not None:
        assert engine.wait_idle(30)


@dataclass(frozen=True)
class Case:
    id: str
    act: Callable[[Ctx], object]
    error: type[RheiError]
    fragment: str
    setup: Callable[[Ctx], object] | None = None
    s3: bool = False
    fresh: bool = False  # the call opens a lake itself, in an empty directory


def _open(**options) -> Callable[[Ctx], object]:
    def act(ctx: Ctx) -> object:
        resolved = {k: (v(ctx) if callable(v) else v) for k, v in options.items()}
        return rhei_lake.open(**resolved)

    return act


def _db(ctx: Ctx) -> str:
    return str(ctx.db)


def _bad_value(sql: str, params: tuple = ()) -> Callable[[Ctx], object]:
    """Setup: the lake is synced, then SQLite stores a value that does not fit its declared type."""

    def setup(ctx: Ctx) -> None:
        ctx.lake().execute(sql, params)

    return setup


def _sync(ctx: Ctx) -> object:
    return ctx.lake().sync_now()


def _lake_file(pattern: str, write: Callable[[str], None]) -> Callable[[Ctx], None]:
    """Setup: a lake with data, closed, then ``write`` applied to its newest file matching ``pattern``."""

    def setup(ctx: Ctx) -> None:
        lake = ctx.lake()
        lake.execute("INSERT INTO t (id) VALUES (3)")
        lake.sync_now()
        lake.flush()  # the segments folded into Delta
        lake.execute("INSERT INTO t (id) VALUES (4)")
        lake.sync_now()  # and one left in the tail
        # close() flushes the tail, so keep the store as a crash right here would leave it
        # (less the writer lease, which a crashed writer's would have let lapse)
        crashed = f"{ctx.url}.crashed"
        shutil.copytree(ctx.url, crashed, ignore=shutil.ignore_patterns("leases"))
        ctx.close()
        ctx._lake = None
        shutil.rmtree(ctx.url)
        os.rename(crashed, ctx.url)
        path = max(glob.glob(os.path.join(ctx.url, pattern)))
        write(path)

    return setup


def _truncate(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def _garbage(path: str) -> None:
    Path(path).write_bytes(b"this is not what rhei_lake wrote\n")


def _read_only_query(ctx: Ctx) -> object:
    with rhei_lake.open(storage=ctx.url) as lake:
        return lake.query("SELECT count(*) FROM t")


def _foreign_delta_table(ctx: Ctx) -> None:
    import deltalake
    import pyarrow as pa

    ctx.lake()
    deltalake.write_deltalake(os.path.join(ctx.url, "stranger", "changes"), pa.table({"a": [1]}))


def _missing_bucket(ctx: Ctx) -> object:
    return rhei_lake.open(storage="s3://no-such-bucket-here/lake", storage_options=ctx.moto().storage_options())


def _authed(options: dict[str, str] | None = None, *, writer: bool = False) -> Callable[[Ctx], object]:
    def act(ctx: Ctx) -> object:
        _endpoint, good, bucket = ctx.request.getfixturevalue("authed_moto")
        extra = {"oltp_path": str(ctx.db)} if writer else {}
        return rhei_lake.open(
            storage=f"s3://{bucket}/{ctx.tmp.name}", storage_options={**good, **(options or {})}, **extra
        )

    return act


CASES = [
    # -- storage URLs and options: refused before anything is touched
    Case("empty-storage-url", _open(storage=""), ConfigError, "must be a non-empty URL", fresh=True),
    Case("blank-storage-url", _open(storage="   "), ConfigError, "must be a non-empty URL", fresh=True),
    Case("s3-without-bucket", _open(storage="s3://"), ConfigError, "names no bucket", fresh=True),
    Case("s3-one-slash", _open(storage="s3:/bucket/lake"), ConfigError, "is malformed", fresh=True),
    Case(
        "s3-bad-bucket-name",
        _open(storage="s3://Bad_Bucket/lake"),
        ConfigError,
        "not a valid S3 bucket name",
        fresh=True,
    ),
    Case("s3-dotdot-prefix", _open(storage="s3://bucket/a/../b"), ConfigError, "'.' or '..'", fresh=True),
    Case(
        "s3-query-string",
        _open(storage="s3://bucket/lake?versionId=3"),
        ConfigError,
        "must not carry a query",
        fresh=True,
    ),
    Case("unknown-scheme-gs", _open(storage="gs://bucket/lake"), ConfigError, "unknown URL scheme 'gs://'", fresh=True),
    Case(
        "unknown-scheme-ftp", _open(storage="ftp://host/lake"), ConfigError, "unknown URL scheme 'ftp://'", fresh=True
    ),
    Case("memory-without-slashes", _open(storage="memory:lake"), ConfigError, "not a memory URL", fresh=True),
    Case("memory-name-with-slash", _open(storage="memory://a/b"), ConfigError, "cannot contain '/'", fresh=True),
    Case(
        "file-url-with-host", _open(storage="file://host/data/lake"), ConfigError, "file:///absolute/path", fresh=True
    ),
    Case(
        "unknown-option",
        _open(storage="memory://", sync_intervall=1),
        ConfigError,
        "sync_intervall: unknown option",
        fresh=True,
    ),
    Case("zero-batch-size", _open(storage="memory://", batch_size=0), ConfigError, "batch_size", fresh=True),
    Case("huge-batch-size", _open(storage="memory://", batch_size=10**9), ConfigError, "batch_size", fresh=True),
    Case(
        "negative-sync-interval", _open(storage="memory://", sync_interval=-1), ConfigError, "sync_interval", fresh=True
    ),
    Case("zero-lease-ttl", _open(storage="memory://", lease_ttl=0), ConfigError, "lease_ttl", fresh=True),
    Case("empty-oltp-path", _open(oltp_path=""), ConfigError, "oltp_path: must not be empty", fresh=True),
    Case("in-memory-sqlite", _open(oltp_path=":memory:"), ConfigError, "in-memory SQLite database", fresh=True),
    Case(
        "oltp-in-missing-dir",
        _open(oltp_path=lambda c: str(c.tmp / "no" / "app.db")),
        ConfigError,
        "does not exist",
        fresh=True,
    ),
    Case(
        "source-and-oltp", _open(oltp_path=_db, source="sqlite:///x.db"), ConfigError, "exclude each other", fresh=True
    ),
    Case("source-unknown-scheme", _open(source="mysql://h/db", tables=[]), ConfigError, "source", fresh=True),
    Case("sidecar-without-tables", _open(source="sqlite:///x.db"), ConfigError, "needs tables=", fresh=True),
    Case(
        "tables-without-source",
        _open(tables=[{"name": "t", "updated_at": "u"}]),
        ConfigError,
        "set source=",
        fresh=True,
    ),
    Case(
        "config-not-a-mapping",
        lambda c: rhei_lake.open(42),
        ConfigError,
        "must be a LakeConfig or a mapping",
        fresh=True,
    ),
    # -- object storage that refuses us
    Case("missing-bucket", _missing_bucket, StorageAccessError, "the bucket does not exist", s3=True, fresh=True),
    Case(
        "wrong-secret-key",
        _authed({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}),
        StorageAccessError,
        "access denied; check the credentials",
        s3=True,
        fresh=True,
    ),
    Case(
        "unknown-access-key",
        _authed({"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY0000000"}),
        StorageAccessError,
        "access denied; check the credentials",
        s3=True,
        fresh=True,
    ),
    Case(
        "wrong-secret-writer",
        _authed({"AWS_SECRET_ACCESS_KEY": "not-the-secret"}, writer=True),
        StorageAccessError,
        "access denied",
        s3=True,
        fresh=True,
    ),
    Case(
        "unreachable-endpoint",
        _open(
            storage="s3://bucket/lake",
            storage_options={
                "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": "s",
            },
        ),
        StorageUnavailableError,
        "storage unavailable",
        fresh=True,
    ),
    # -- tables and columns
    Case("register-unknown-table", lambda c: c.lake().register_table("nope"), SchemaError, "does not exist"),
    Case(
        "register-without-primary-key",
        lambda c: c.lake().register_table("nokey"),
        SchemaError,
        "no PRIMARY KEY",
        setup=lambda c: c.lake().execute("CREATE TABLE nokey (a INTEGER, b TEXT)"),
    ),
    Case(
        "register-a-view",
        lambda c: c.lake().register_table("v"),
        SchemaError,
        "is a view",
        setup=lambda c: c.lake().execute("CREATE VIEW v AS SELECT * FROM t"),
    ),
    Case(
        "register-untyped-column",
        lambda c: c.lake().register_table("loose"),
        SchemaError,
        "types=",
        setup=lambda c: c.lake().execute("CREATE TABLE loose (id INTEGER PRIMARY KEY, anything)"),
    ),
    Case(
        "register-types-unknown-column",
        lambda c: c.lake().register_table("t2", types={"zz": "TEXT"}),
        SchemaError,
        "unknown columns",
        setup=lambda c: c.lake().execute("CREATE TABLE t2 (id INTEGER PRIMARY KEY)"),
    ),
    Case(
        "register-reserved-column",
        lambda c: c.lake().register_table("r"),
        SchemaError,
        "_rhei_",
        setup=lambda c: c.lake().execute("CREATE TABLE r (id INTEGER PRIMARY KEY, _rhei_seq INTEGER)"),
    ),
    Case("add-existing-column", lambda c: c.lake().add_column("t", "S", "TEXT"), SchemaError, "already has a column"),
    Case(
        "add-column-with-default",
        lambda c: c.lake().add_column("t", "x", "TEXT DEFAULT 'a'"),
        SchemaError,
        "is not a type name",
    ),
    Case(
        "add-column-reserved-name",
        lambda c: c.lake().add_column("t", "_rhei_x", "TEXT"),
        SchemaError,
        "reserved prefix",
    ),
    Case("drop-primary-key", lambda c: c.lake().drop_column("t", "id"), SchemaError, "part of the primary key"),
    Case("drop-unknown-column", lambda c: c.lake().drop_column("t", "zz"), SchemaError, "has no column"),
    Case("rename-column", lambda c: c.lake().rename_column("t", "s", "s2"), SchemaError, "not supported"),
    Case("spec-of-unknown-table", lambda c: c.lake().table_spec("nope"), SchemaError, "no mirrored table"),
    Case("query-unknown-table", lambda c: c.lake().query("SELECT * FROM nope"), QueryError, "not found"),
    Case("query-unknown-column", lambda c: c.lake().query("SELECT nope FROM t"), QueryError, "No field named nope"),
    # -- SQL the engine cannot run
    Case("execute-syntax-error", lambda c: c.lake().execute("INSERT INTO t VALUS (1)"), SourceError, "syntax error"),
    Case("query-syntax-error", lambda c: c.lake().query("SELEC * FROM t"), QueryError, "SELEC"),
    Case(
        "execute-unknown-table",
        lambda c: c.lake().execute("INSERT INTO nope VALUES (1)"),
        SchemaError,
        "no such table: nope",
    ),
    Case(
        "execute-wrong-bindings",
        lambda c: c.lake().execute("INSERT INTO t (id) VALUES (?)", (7, 8)),
        SourceError,
        "Incorrect number of bindings",
    ),
    Case(
        "batch-with-a-bad-statement",
        lambda c: c.lake().execute_batch(
            ["INSERT INTO t (id) VALUES (10)", "INSERT INTO t (id) VALUES (1)", "INSERT INTO t (id) VALUES (11)"]
        ),
        SourceError,
        "statement 2 of 3 failed, nothing was applied",
    ),
    Case(
        "batch-item-not-a-statement",
        lambda c: c.lake().execute_batch(["SELECT 1", 42]),
        ConfigError,
        "statement 2 must be SQL text",
    ),
    Case(
        "batch-that-commits",
        lambda c: c.lake().execute_batch(["INSERT INTO t (id) VALUES (10)", "COMMIT"]),
        SourceError,
        "execute_batch",
    ),
    Case(
        "alter-a-mirrored-table",
        lambda c: c.lake().execute("ALTER TABLE t ADD COLUMN z TEXT"),
        SchemaError,
        "add_column()/drop_column()",
    ),
    Case(
        "huge-statement",
        lambda c: c.lake().execute(
            "INSERT INTO t (id) VALUES " + ",".join(["(?)"] * (_VARIABLE_LIMIT + 1)), tuple(range(_VARIABLE_LIMIT + 1))
        ),
        SourceError,
        "too many SQL variables",
    ),
    Case(
        "not-null-violated-by-nan",
        lambda c: c.lake().execute("INSERT INTO t (id, must) VALUES (50, ?)", (float("nan"),)),
        SourceError,
        "NOT NULL constraint failed",
    ),
    Case(
        "query-as-of-not-a-time",
        lambda c: c.lake().query("SELECT * FROM t", as_of="yesterday"),
        ConfigError,
        "not an ISO 8601 timestamp",
    ),
    Case(
        "query-as-of-out-of-range",
        lambda c: c.lake().query("SELECT * FROM t", as_of=1e20),
        ConfigError,
        "outside years 1-9999",
    ),
    # -- writes sent to the analytic path
    Case("olap-delete", lambda c: c.lake().query("DELETE FROM t"), WriteRefusedError, "read-only"),
    Case(
        "olap-insert",
        lambda c: c.lake().query("INSERT INTO t (id) VALUES (9)", hint="olap"),
        WriteRefusedError,
        "read-only",
    ),
    Case(
        "olap-create-table-as",
        lambda c: c.lake().query("CREATE TABLE x AS SELECT 1", hint="olap"),
        WriteRefusedError,
        "read-only",
    ),
    Case(
        "olap-copy-to-file",
        lambda c: c.lake().query(f"COPY (SELECT 1 AS a) TO '{c.tmp / 'out.csv'}'"),
        WriteRefusedError,
        "read-only",
    ),
    Case(
        "olap-external-table",
        lambda c: c.lake().query(f"CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{c.tmp / 'x.csv'}'"),
        WriteRefusedError,
        "read-only",
    ),
    Case("olap-drop-view", lambda c: c.lake().query("DROP VIEW t_history"), WriteRefusedError, "read-only"),
    Case(
        "olap-set-option",
        lambda c: c.lake().query("SET datafusion.execution.batch_size = 1"),
        WriteRefusedError,
        "read-only",
    ),
    Case("olap-as-of-delete", lambda c: c.lake().query("DELETE FROM t", as_of=0), WriteRefusedError, "read-only"),
    Case("olap-two-statements", lambda c: c.lake().query("SELECT 1; DELETE FROM t"), QueryError, "one statement"),
    # -- values that do not fit their declared types (found at sync; nothing from that event on commits)
    Case(
        "text-in-integer",
        _sync,
        TypeMismatchError,
        "column 'n'",
        setup=_bad_value("INSERT INTO t (id, n) VALUES (20, 'abc')"),
    ),
    Case(
        "real-in-integer",
        _sync,
        TypeMismatchError,
        "column 'n'",
        setup=_bad_value("INSERT INTO t (id, n) VALUES (20, 1.5)"),
    ),
    Case(
        "infinity-in-integer",
        _sync,
        TypeMismatchError,
        "column 'n'",
        setup=_bad_value("INSERT INTO t (id, n) VALUES (20, ?)", (float("inf"),)),
    ),
    Case(
        "blob-in-text",
        _sync,
        TypeMismatchError,
        "declared TEXT",
        setup=_bad_value("INSERT INTO t (id, s) VALUES (20, x'00ff')"),
    ),
    Case(
        "non-utf8-text",
        _sync,
        TypeMismatchError,
        "not valid UTF-8",
        setup=_bad_value("INSERT INTO t (id, s) VALUES (20, CAST(x'ff61' AS TEXT))"),
    ),
    Case(
        "text-in-blob",
        _sync,
        TypeMismatchError,
        "column 'b'",
        setup=_bad_value("INSERT INTO t (id, b) VALUES (20, 'text')"),
    ),
    Case(
        "blob-in-real",
        _sync,
        TypeMismatchError,
        "column 'r'",
        setup=_bad_value("INSERT INTO t (id, r) VALUES (20, x'01')"),
    ),
    Case(
        "text-in-real",
        _sync,
        TypeMismatchError,
        "column 'r'",
        setup=_bad_value("INSERT INTO t (id, r) VALUES (20, 'NaN')"),
    ),
    Case(
        "impossible-date",
        _sync,
        TypeMismatchError,
        "column 'd'",
        setup=_bad_value("INSERT INTO t (id, d) VALUES (20, '2024-13-45')"),
    ),
    Case(
        "timestamp-year-99999",
        _sync,
        TypeMismatchError,
        "column 'ts'",
        setup=_bad_value("INSERT INTO t (id, ts) VALUES (20, '99999-01-01T00:00:00')"),
    ),
    Case(
        "timestamp-epoch-out-of-range",
        _sync,
        TypeMismatchError,
        "column 'ts'",
        setup=_bad_value("INSERT INTO t (id, ts) VALUES (20, 1e20)"),
    ),
    Case(
        "timestamp-garbage",
        _sync,
        TypeMismatchError,
        "column 'ts'",
        setup=_bad_value("INSERT INTO t (id, ts) VALUES (20, 'last tuesday')"),
    ),
    Case(
        "decimal-too-precise",
        _sync,
        TypeMismatchError,
        "column 'dec'",
        setup=_bad_value("INSERT INTO t (id, dec) VALUES (20, '123.456')"),
    ),
    Case(
        "decimal-too-large",
        _sync,
        TypeMismatchError,
        "column 'dec'",
        setup=_bad_value("INSERT INTO t (id, dec) VALUES (20, 12345)"),
    ),
    Case(
        "infinity-in-decimal",
        _sync,
        TypeMismatchError,
        "column 'dec'",
        setup=_bad_value("INSERT INTO t (id, dec) VALUES (20, ?)", (float("inf"),)),
    ),
    Case(
        "two-in-boolean",
        _sync,
        TypeMismatchError,
        "column 'flag'",
        setup=_bad_value("INSERT INTO t (id, flag) VALUES (20, 2)"),
    ),
    Case(
        "bad-value-in-an-update",
        _sync,
        TypeMismatchError,
        "column 'n'",
        setup=_bad_value("UPDATE t SET n = 'x' WHERE id = 1"),
    ),
    # -- files under the lake prefix that are damaged or not rhei_lake's
    Case(
        "garbage-delta-log-entry",
        _read_only_query,
        CorruptStorageError,
        "damaged",
        setup=_lake_file("t/changes/_delta_log/*.json", _garbage),
    ),
    Case(
        "garbage-delta-log-writer",
        lambda c: rhei_lake.open(oltp_path=str(c.db), storage=c.url),
        CorruptStorageError,
        "damaged",
        setup=_lake_file("t/changes/_delta_log/*.json", _garbage),
    ),
    Case(
        "truncated-tail-segment",
        _read_only_query,
        CorruptStorageError,
        "not a rhei_lake segment",
        setup=_lake_file("t/_tail/*.arrow", _truncate),
    ),
    Case(
        "foreign-tail-segment",
        _read_only_query,
        CorruptStorageError,
        "not a rhei_lake segment",
        setup=_lake_file("t/_tail/*.arrow", _garbage),
    ),
    Case(
        "truncated-parquet-file",
        _read_only_query,
        CorruptStorageError,
        "damaged",
        setup=_lake_file("t/changes/*.parquet", _truncate),
    ),
    Case(
        "missing-parquet-file",
        _read_only_query,
        CorruptStorageError,
        "damaged",
        setup=_lake_file("t/changes/*.parquet", os.remove),
    ),
    Case(
        "missing-first-log-entry",
        _read_only_query,
        CorruptStorageError,
        "damaged",
        setup=_lake_file("t/changes/_delta_log/00000000000000000000.json", os.remove),
    ),
    Case(
        "foreign-delta-table",
        lambda c: rhei_lake.open(storage=c.url),
        SchemaError,
        "did not write",
        setup=_foreign_delta_table,
    ),
]


def _fingerprint(ctx: Ctx) -> tuple:
    files = []
    for path in sorted(ctx.tmp.rglob("*")):
        rel = path.relative_to(ctx.tmp).as_posix()
        if path.is_dir() or rel.startswith("app.db") or "/_rhei/leases/" in f"/{rel}":
            continue
        files.append((rel, path.stat().st_size))
    dump = []
    if ctx.db.exists():
        conn = sqlite3.connect(ctx.db)
        conn.text_factory = bytes  # some cases store text that is not UTF-8
        try:
            for name, sql in conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall():
                rows = (
                    conn.execute(f'SELECT * FROM "{name.decode()}"').fetchall()
                    if (sql or b"").startswith(b"CREATE TABLE")
                    else []
                )
                dump.append((name, sql, sorted(rows, key=repr)))
        finally:
            conn.close()
    bucket = ctx.bucket_listing() if ctx.bucket_listing else None
    return files, dump, bucket


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.s3] if c.s3 else []) for c in CASES])
def test_bad_input_is_refused_with_a_specific_error_and_nothing_written(case: Case, tmp_path, request):
    ctx = Ctx(tmp_path, request)
    try:
        if not case.fresh:
            ctx.lake()
        if case.setup is not None:
            case.setup(ctx)
        if ctx._lake is not None:
            _settle(ctx._lake)
        before = _fingerprint(ctx)
        with pytest.raises(RheiError) as raised:
            result = case.act(ctx)
            if isinstance(result, rhei_lake.Lake):
                result.close()
        error = raised.value
        assert type(error) is case.error, f"{type(error).__name__}: {error}"
        message = str(error)
        assert case.fragment in message, message
        assert "\n" not in message and len(message) < 1200, message
        assert _fingerprint(ctx) == before, "the failing call wrote something"
        summary.count("bad_inputs_tried")
    finally:
        ctx.close()


def test_the_table_is_big_enough():
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)


def test_a_bad_value_stops_the_sync_exactly_there_and_repair_goes_on(tmp_path, request):
    """Everything before the bad event is committed, nothing from it on, nothing skipped."""
    ctx = Ctx(tmp_path, request)
    lake = ctx.lake()
    try:
        lake.execute("INSERT INTO t (id, n) VALUES (30, 1)")
        lake.execute("INSERT INTO t (id, n) VALUES (31, 'bad')")
        lake.execute("INSERT INTO t (id, n) VALUES (32, 3)")
        with pytest.raises(TypeMismatchError) as raised:
            lake.sync_now()
        error = raised.value
        assert (error.table, error.column, error.primary_key) == ("t", "n", {"id": 31})
        assert lake.query("SELECT id FROM t WHERE id >= 30").column(0).to_pylist() == [30]
        status = lake.sync_status()
        assert status.failing and not status.last_error.transient and status.tables["t"].lag_events == 2
        lake.repair_event("t", error.seq, {"n": 2})
        lake.execute("UPDATE t SET n = 2 WHERE id = 31")
        lake.sync_now()
        rows = lake.query("SELECT id, n FROM t WHERE id >= 30 ORDER BY id").to_pylist()
        assert rows == [{"id": 30, "n": 1}, {"id": 31, "n": 2}, {"id": 32, "n": 3}]
    finally:
        ctx.close()


def test_edge_values_that_are_not_errors_round_trip(tmp_path, request):
    """Empty batches, infinities, huge values, odd but valid text: accepted and mirrored exactly."""
    ctx = Ctx(tmp_path, request)
    lake = ctx.lake()
    try:
        assert lake.execute_batch([]) == 0
        big = "é" * 2_000_000
        lake.execute_batch(
            [
                ("INSERT INTO t (id, r, s) VALUES (40, ?, ?)", (float("inf"), big)),
                ("INSERT INTO t (id, r, s) VALUES (41, ?, '')", (float("-inf"),)),
                (
                    "INSERT INTO t (id, r, b) VALUES (42, ?, ?)",
                    (float("nan"), b"\x00" * 3_000_000),
                ),  # NaN: SQLite stores NULL
                ("INSERT INTO t (id, n, s) VALUES (43, ?, ?)", (-(2**63), "\u0000 zero byte and 🚀")),
                ("INSERT INTO t (id, ts, d, dec) VALUES (44, '0001-01-01T00:00:00', '9999-12-31', '-999.99')", ()),
            ]
        )
        lake.sync_now()
        rows = {r["id"]: r for r in lake.query("SELECT * FROM t WHERE id >= 40", hint="olap").to_pylist()}
        assert rows[40]["r"] == float("inf") and rows[40]["s"] == big
        assert rows[41]["r"] == float("-inf") and rows[41]["s"] == ""
        assert rows[42]["r"] is None and len(rows[42]["b"]) == 3_000_000
        assert rows[43]["n"] == -(2**63) and rows[43]["s"] == "\u0000 zero byte and 🚀"
        assert rows[44]["ts"].year == 1 and rows[44]["d"].year == 9999 and str(rows[44]["dec"]) == "-999.99"
    finally:
        ctx.close()


def test_harmless_foreign_files_under_the_lake_are_ignored(tmp_path, request):
    ctx = Ctx(tmp_path, request)
    ctx.lake()
    ctx.close()
    lake_dir = Path(ctx.url)
    (lake_dir / "notes.txt").write_text("not a table")
    (lake_dir / "junk").mkdir()
    (lake_dir / "junk" / "x.bin").write_bytes(b"\x00")
    (lake_dir / "t" / "_tail" / "README").write_text("not a segment")
    (lake_dir / "_rhei" / "leases" / "writer" / "00000000000000000099.json").write_text("{garbage")
    with rhei_lake.open(oltp_path=str(ctx.db), storage=ctx.url) as lake:  # the unreadable lease counts as expired
        assert lake.tables() == ["t"]
        assert lake.query("SELECT count(*) AS n FROM t").column(0)[0].as_py() == 3
