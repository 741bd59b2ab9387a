"""Security: secrets never shown or stored, hostile identifiers quoted everywhere, the analytic path cannot write.

Secrets get distinctive values; everything the engine says is captured (every
log record at DEBUG, stdout and stderr, ``repr()``, ``str()`` of errors and of
the status, a CLI subprocess's output, every byte written to the lake) and
searched for them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.errors import RheiError, WriteRefusedError
from tests.reliability import summary
from tests.support.oracle import assert_same_state
from tests.support.s3_fault_proxy import S3FaultProxy
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY = "AKIARHEITESTKEY77ZQ"
SECRET_KEY = "rhei-secret-Vq8mX2pL9wK4"
SESSION_TOKEN = "rhei-session-token-Jd7sQ1"


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in text]


def _everything_stored(url: str, options: dict[str, str]) -> bytes:
    from rhei_lake.storage.lake_storage import open_storage
    from rhei_lake.storage.location import parse_storage_url

    blobs = open_storage(parse_storage_url(url, options)).blobs
    return b"".join(blobs.get(info.key) or b"" for info in blobs.list(""))


@pytest.mark.s3
def test_s3_credentials_never_appear_in_logs_errors_reprs_status_or_storage(moto, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    secrets = [SECRET_KEY, SESSION_TOKEN, ACCESS_KEY]
    bucket = f"sec-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket)
    proxy = S3FaultProxy(moto.endpoint)
    options = {
        **moto.storage_options(),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_ENDPOINT_URL": proxy.endpoint,
    }
    url = f"s3://{bucket}/lake"
    shown: list[str] = []
    try:
        lake = rhei_lake.open(
            oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, sync_max_backoff=0.2
        )
        try:
            lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            lake.register_table("t")
            lake.execute("INSERT INTO t VALUES (1, 'a')")
            lake.sync_now()
            shown += [
                repr(lake),
                repr(lake.config),
                str(lake.config),
                lake.location.describe(),
                repr(lake.location),
                repr(lake.sync_status()),
            ]
            proxy.down()  # errors, retries and the loop's log lines while the store is unreachable
            lake.execute("INSERT INTO t VALUES (2, 'b')")
            with pytest.raises(RheiError) as failed:
                lake.sync_now()
            shown += [str(failed.value), repr(failed.value), repr(failed.value.__cause__)]
            lake.start_sync(0.05)
            status = wait_for(
                lambda: (s := lake.sync_status()).loop.consecutive_failures >= 2 and s,
                timeout=30,
                what="the loop to fail and retry while the store is down",
            )
            shown += [repr(status), str(status.last_error), repr(status.loop)]
            proxy.up()
        finally:
            lake.close()
        with rhei_lake.open(storage=url, storage_options=options) as reader:
            shown += [repr(reader), repr(reader.sync_status())]
    finally:
        proxy.close()
    with pytest.raises(ValueError) as config_error:  # a validation error echoes no option value
        rhei_lake.open(storage=url, storage_options={"AWS_SECRET_ACCESS_KEY": ["not", SECRET_KEY]})
    shown.append(str(config_error.value))
    captured = capsys.readouterr()
    shown += [caplog.text, captured.out, captured.err]
    assert "storage unavailable" in caplog.text or "retrying" in caplog.text, "the outage was not logged at all"
    assert not [(i, _leaks(text, secrets), text[:300]) for i, text in enumerate(shown) if _leaks(text, secrets)]
    stored = _everything_stored(url, moto.storage_options())
    assert stored and not [s for s in secrets if s.encode() in stored]
    summary.count("security.secret_checks", len(shown))


@pytest.mark.s3
def test_the_cli_never_prints_s3_credentials_even_with_debug(moto, tmp_path):
    bucket = f"sec-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket)
    env = {
        **os.environ,
        **moto.storage_options(),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "PYTHONPATH": str(ROOT),
    }
    db = tmp_path / "app.db"
    runs = []
    for args in (
        ["exec", "--db", str(db), "--storage", f"s3://{bucket}/lake", "CREATE TABLE t (id INTEGER PRIMARY KEY)"],
        ["--debug", "info", "--storage", f"s3://{bucket}/lake"],
        ["--debug", "query", "--storage", f"s3://no-such-bucket-{bucket}/lake", "SELECT 1"],
        ["--debug", "info", "--storage", f"s3://{bucket}/lake"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "rhei_lake.cli.app", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        runs.append(result.stdout + result.stderr)
    assert "bucket does not exist" in runs[2], runs[2]
    assert not _leaks("\n".join(runs), [SECRET_KEY, SESSION_TOKEN, ACCESS_KEY])


@pytest.mark.postgres
def test_postgres_passwords_never_appear(postgres, tmp_path, caplog, capsys):
    from tests.support.postgres import PASSWORD

    caplog.set_level(logging.DEBUG)
    database = postgres.create_database()
    with postgres.connect(database) as conn:
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, v text, updated_at timestamptz NOT NULL)")
        conn.execute("INSERT INTO items VALUES (1, 'a', now())")
    table = rhei_lake.PolledTable("items", updated_at="updated_at")
    url = str(tmp_path / "lake")
    shown = []
    with rhei_lake.open(source=postgres.url(database), storage=url, tables=[table]) as lake:
        lake.sync_now()
        shown += [
            repr(lake),
            repr(lake.config),
            str(lake.config),
            repr(lake.sync_status()),
            repr(lake.table_spec("items")),
        ]
    for bad in (postgres.url(database, password="wrong-" + PASSWORD), postgres.url("no_such_db")):
        with pytest.raises(RheiError) as refused:
            rhei_lake.open(source=bad, storage=str(tmp_path / "other"), tables=[table])
        shown += [str(refused.value), repr(refused.value)]
    postgres.stop_server()
    try:
        with rhei_lake.open(source=postgres.url(database), storage=str(tmp_path / "down"), tables=[table]) as lake:
            pass
    except RheiError as exc:
        shown += [str(exc), repr(exc)]
    finally:
        postgres.start_server()
    config = tmp_path / "sidecar.toml"
    config.write_text(
        f'source = "{postgres.url(database, password="wrong-" + PASSWORD)}"\nstorage = "{tmp_path / "cli"}"\n'
        '[[tables]]\nname = "items"\nupdated_at = "updated_at"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "rhei_lake.cli.app", "--debug", "sync", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "credentials" in result.stderr, result.stderr
    captured = capsys.readouterr()
    shown += [caplog.text, captured.out, captured.err, result.stdout, result.stderr]
    assert any("authentication failed" in s or "wrong credentials" in s for s in shown)
    assert not _leaks("\n".join(shown), [PASSWORD])
    assert PASSWORD.encode() not in _everything_stored(url, {})


# -- hostile identifiers -----------------------------------------------------------
HOSTILE_TABLE = "we\"ird'; DROP TABLE sentinel; --"
HOSTILE_COLUMNS = [
    'k"ey',
    "va'l",
    "select",
    "x y",
    "--c",
    "c;d",
    "[br]",
    "%s%%",
    "Ωü 漢",
    'q"); DELETE FROM sentinel; --',
]


def _hostile_sqlite(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE sentinel (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO sentinel VALUES (1)")
    cols = ", ".join(f"{q(c)} {'INTEGER' if i == 0 else 'TEXT'}" for i, c in enumerate(HOSTILE_COLUMNS))
    conn.execute(f"CREATE TABLE {q(HOSTILE_TABLE)} ({cols}, PRIMARY KEY ({q(HOSTILE_COLUMNS[0])}))")
    return conn


def _write_hostile(execute, rounds: int) -> None:
    table = q(HOSTILE_TABLE)
    cols = ", ".join(q(c) for c in HOSTILE_COLUMNS)
    marks = ", ".join("?" * len(HOSTILE_COLUMNS))
    for i in range(rounds):
        execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", (i, *[f"'{c}\"{i}" for c in HOSTILE_COLUMNS[1:]]))
    execute(f"UPDATE {table} SET {q(HOSTILE_COLUMNS[1])} = '''; DROP TABLE sentinel' WHERE {q(HOSTILE_COLUMNS[0])} = 1")
    execute(f"UPDATE {table} SET {q(HOSTILE_COLUMNS[0])} = 100 WHERE {q(HOSTILE_COLUMNS[0])} = 2")
    execute(f"DELETE FROM {table} WHERE {q(HOSTILE_COLUMNS[0])} = 3")


def test_hostile_names_in_trigger_mode_are_quoted_everywhere(storage, tmp_path):
    url, options = storage
    db = tmp_path / "app.db"
    conn = _hostile_sqlite(db)
    with rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=2) as lake:
        lake.register_table(HOSTILE_TABLE)
        _write_hostile(lake.execute, 6)
        lake.sync_now()
        lake.flush()
        assert_same_state(lake, conn, HOSTILE_TABLE)
        hostile_new = "new'col\"; DROP TABLE sentinel"
        lake.add_column(HOSTILE_TABLE, hostile_new, "TEXT")
        lake.execute(f"UPDATE {q(HOSTILE_TABLE)} SET {q(hostile_new)} = 'x' WHERE {q(HOSTILE_COLUMNS[0])} = 0")
        lake.drop_column(HOSTILE_TABLE, HOSTILE_COLUMNS[5])
        lake.sync_now()
        assert_same_state(lake, conn, HOSTILE_TABLE)
        changes = lake.query(f"SELECT count(*) AS n FROM {q(HOSTILE_TABLE + '_changes')}").column(0)[0].as_py()
        assert changes == 6 + 1 + 2 + 1 + 1  # inserts, update, key change (D+I), delete, update
        history = lake.query(f"SELECT * FROM {q(HOSTILE_TABLE + '_history')}")
        assert history.num_rows >= 7
        lake.restore_sqlite(tmp_path / "restored.db")
    restored = sqlite3.connect(tmp_path / "restored.db")
    assert sorted(restored.execute(f"SELECT * FROM {q(HOSTILE_TABLE)}").fetchall(), key=repr) == sorted(
        conn.execute(f"SELECT * FROM {q(HOSTILE_TABLE)}").fetchall(), key=repr
    )
    assert conn.execute("SELECT * FROM sentinel").fetchall() == [(1,)], "an identifier was executed as SQL"
    if not url.startswith("memory://"):
        with rhei_lake.open(storage=url, storage_options=options) as reader:  # the name survives as a directory
            assert reader.tables() == [HOSTILE_TABLE]
    summary.count("security.hostile_identifiers", len(HOSTILE_COLUMNS) + 2)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_hostile_names_in_polling_queries_are_quoted(kind, tmp_path, request):
    updated = 'upd"ated; --'
    deleted = "del'eted"
    key = 'k"ey'
    value = "%(v)s %s"
    table_name = "po\"ll'ed; DROP TABLE sentinel"
    if kind == "sqlite":
        path = tmp_path / "external.db"
        conn = sqlite3.connect(path, isolation_level=None)
        source = f"sqlite://{path}"
        types = ("INTEGER", "TEXT", "TEXT", "TEXT")

        def execute(sql, params=()):
            conn.execute(sql, params)
    else:
        server = request.getfixturevalue("postgres")
        database = server.create_database()
        conn = server.connect(database)
        source = server.url(database)
        types = ("bigint", "text", "timestamptz", "timestamptz")

        def execute(sql, params=()):
            if params:
                conn.execute(sql.replace("%", "%%").replace("?", "%s"), params)
            else:
                conn.execute(sql)

    execute("CREATE TABLE sentinel (id integer PRIMARY KEY)")
    execute("INSERT INTO sentinel VALUES (1)")
    execute(
        f"CREATE TABLE {q(table_name)} ({q(key)} {types[0]} PRIMARY KEY, {q(value)} {types[1]}, "
        f"{q(updated)} {types[2]} NOT NULL, {q(deleted)} {types[3]})"
    )
    stamp = "2026-01-01T00:00:0{}Z" if kind == "sqlite" else "2026-01-01 00:00:0{}+00"
    for i in range(5):
        execute(f"INSERT INTO {q(table_name)} VALUES (?, ?, ?, NULL)", (i, f"v'{i}\"%s", stamp.format(i)))
    table = rhei_lake.PolledTable(table_name, updated_at=updated, deleted_at=deleted, primary_key=[key])
    url = str(tmp_path / "lake")
    with rhei_lake.open(source=source, storage=url, tables=[table], hard_delete_interval=0) as lake:
        lake.sync_now()
        execute(
            f"UPDATE {q(table_name)} SET {q(value)} = '%s''', {q(updated)} = ? WHERE {q(key)} = 1", (stamp.format(6),)
        )
        execute(
            f"UPDATE {q(table_name)} SET {q(deleted)} = ?, {q(updated)} = ? WHERE {q(key)} = 2",
            (stamp.format(7), stamp.format(7)),
        )
        execute(f"DELETE FROM {q(table_name)} WHERE {q(key)} = 3")
        lake.sync_now()
        rows = lake.query(f"SELECT {q(key)}, {q(value)} FROM {q(table_name)} ORDER BY 1").to_pylist()
    assert [(r[key], r[value]) for r in rows] == [(0, "v'0\"%s"), (1, "%s'"), (4, "v'4\"%s")]
    assert [tuple(r) for r in conn.execute("SELECT * FROM sentinel").fetchall()] == [(1,)]
    conn.close()


# -- the analytic path cannot write ------------------------------------------------
def test_the_analytic_path_cannot_write_files_or_tables(tmp_path):
    target = tmp_path / "exfiltrated"
    attempts = [
        f"COPY (SELECT * FROM t) TO '{target}.csv'",
        f"COPY t TO '{target}.parquet' STORED AS PARQUET",
        f"CREATE EXTERNAL TABLE x (a INT) STORED AS CSV LOCATION '{target}-ext.csv'",
        "CREATE TABLE y AS SELECT * FROM t",
        "CREATE VIEW z AS SELECT 1",
        "INSERT INTO t_changes SELECT * FROM t_changes",
        "DELETE FROM t",
        "UPDATE t SET v = 'x'",
        "DROP TABLE t",
        "DROP VIEW t_history",
        "SET datafusion.catalog.information_schema = true",
        "SELECT 1; DELETE FROM t",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "EXPLAIN ANALYZE INSERT INTO t VALUES (9, 'x')",
    ]
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        lake.sync_now()
        before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "_rhei" not in p.parts)
        for sql in attempts:
            for options in ({}, {"hint": "olap"}, {"as_of": "2100-01-01T00:00:00Z"}):
                with pytest.raises(RheiError) as refused:
                    lake.query(sql, **options)
                assert (
                    isinstance(refused.value, (WriteRefusedError,))
                    or "one statement" in str(refused.value)
                    or ("syntax" in str(refused.value).lower() or "parser" in str(refused.value).lower())
                ), (sql, options, refused.value)
        after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if "_rhei" not in p.parts)
        assert [p for p in after if p not in before and not p.startswith("app.db")] == []
        assert lake.query("SELECT * FROM t").to_pylist() == [{"id": 1, "v": "a"}]
        assert not list(tmp_path.glob("exfiltrated*"))


def test_the_flight_token_never_appears_in_the_servers_output(tmp_path):
    """``rh flight`` with its token from the environment, refused and admitted clients, then Ctrl-C."""
    import re
    import select
    import signal
    import time

    from tests.flight.flight_clients import adbc_connect

    token = "rhei-flight-token-Zp4kR8"
    url = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1)")
        lake.sync_now()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RHEI_FLIGHT_TOKEN": token}
    server = subprocess.Popen(
        [sys.executable, "-m", "rhei_lake.cli.app", "--debug", "flight", "--storage", url, "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        output = b""
        deadline = time.monotonic() + 60
        while b"grpc" not in output and time.monotonic() < deadline and server.poll() is None:
            if select.select([server.stdout], [], [], 0.5)[0]:
                output += os.read(server.stdout.fileno(), 4096)
        location = re.search(rb"grpc(?:\+tcp)?://[0-9.]+:\d+", output).group().decode()
        for wrong in (None, "wrong", token[:-1]):
            with pytest.raises(Exception) as refused:
                with adbc_connect(location, token=wrong) as conn, conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM t")
            assert token not in str(refused.value)
        with adbc_connect(location, token=token) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM t")
            assert cur.fetch_arrow_table().column(0)[0].as_py() == 1
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    text = (output + out + err).decode(errors="replace")
    assert "serving" in text and token not in text, text[-2000:]
    assert token.encode() not in _everything_stored(url, {})
