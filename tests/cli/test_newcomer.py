"""A newcomer's first minutes with ``rh``: the quick start works verbatim, and nothing they type hurts a lake."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.support.files import tree_digest
from tests.support.rh import RH, one_error_line, rh, rh_env

QUICK_START = [
    ("exec", "--db", "my.db", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"),
    ("exec", "--db", "my.db", "INSERT INTO users VALUES (1, 'Alice')"),
    ("query", "--db", "my.db", "SELECT COUNT(*) FROM users"),
]


def test_the_rhei_quick_start_runs_verbatim_in_an_empty_folder(tmp_path):
    results = [rh(*args, cwd=tmp_path) for args in QUICK_START]
    for result in results:
        assert result.returncode == 0, result.stderr
    lines = [line.strip("│ ") for line in results[-1].stdout.splitlines()]
    assert "1" in lines, results[-1].stdout
    assert sorted(os.listdir(tmp_path)) == ["my.db", "my.db-lake"]  # the durable lake, beside its database
    again = rh("query", "--db", "my.db", "--format", "csv", "SELECT name FROM users", cwd=tmp_path)
    assert again.stdout.splitlines() == ['"name"', '"Alice"']  # it outlives the process that wrote it
    shell = rh(
        "repl",
        "--db",
        "my.db",
        input="INSERT INTO users VALUES (2, 'Bob');\nSELECT count(*) AS n FROM users;\n",
        cwd=tmp_path,
    )
    assert shell.returncode == 0 and "ok, 1 row changed" in shell.stdout and "│ 2 " in shell.stdout, shell.stderr
    board = rh("dashboard", "--db", "my.db", cwd=tmp_path)  # not a terminal: the status, once
    assert board.returncode == 0 and "users" in board.stdout and "my.db-lake" in board.stdout, board.stderr


@pytest.fixture
def fed(tmp_path):
    """app.db mirrored into its default lake, then an application write captured but not synced."""
    for sql in ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (1, 'a')"):
        assert rh("exec", "--db", "app.db", sql, cwd=tmp_path).returncode == 0
    app = sqlite3.connect(tmp_path / "app.db")
    with app:
        app.execute("INSERT INTO t VALUES (2, 'b')")
    app.close()
    return tmp_path


def test_read_commands_never_snapshot_sync_prune_or_write(fed):
    before = tree_digest(fed)
    (fed / "ro.toml").write_text('oltp_path = "app.db"\nsync_interval = 0.5\n')
    for args in (
        ["status", "--db", "app.db"],
        ["info", "--db", "app.db"],
        ["query", "--db", "app.db", "SELECT * FROM t"],
        ["query", "--db", "app.db", "SELECT v FROM t WHERE id = 2"],
        ["status", "-c", "ro.toml"],
        ["query", "--storage", "app.db-lake", "SELECT 1"],
        ["dashboard", "--db", "app.db"],
    ):
        result = rh(*args, cwd=fed)
        assert result.returncode == 0, (args, result.stderr)
    (fed / "ro.toml").unlink()
    assert tree_digest(fed) == before  # the database (and its log of the unsynced write) and the lake, byte for byte
    status = json.loads(rh("status", "--db", "app.db", "--format", "json", cwd=fed).stdout)
    assert status["tables"]["t"]["lag_events"] == 1  # still waiting in the CDC log for the real lake
    assert rh("sync", "--db", "app.db", cwd=fed).stdout.startswith("synced 1 events")


def test_db_without_storage_opens_the_lake_the_database_feeds(tmp_path):
    import rhei_lake

    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "elsewhere")) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (7)")
        lake.sync_now()
    result = rh("query", "--db", "app.db", "--format", "csv", "SELECT id FROM t", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.splitlines() == ['"id"', "7"], result.stderr
    assert rh("exec", "--db", "app.db", "INSERT INTO t VALUES (8)", cwd=tmp_path).returncode == 0
    assert not (tmp_path / "app.db-lake").exists()  # no second lake was made beside it
    with rhei_lake.open(storage=str(tmp_path / "elsewhere")) as lake:
        assert lake.query("SELECT count(*) AS n FROM t").column("n").to_pylist() == [2]


def test_a_read_command_on_a_database_without_a_lake_creates_nothing(tmp_path):
    sqlite3.connect(tmp_path / "plain.db").execute("CREATE TABLE t (id INTEGER PRIMARY KEY)").connection.close()
    before = tree_digest(tmp_path)
    assert rh("status", "--db", "plain.db", cwd=tmp_path).returncode == 0
    line = one_error_line(rh("query", "--db", "plain.db", "SELECT * FROM t", cwd=tmp_path))
    assert "rh register --db plain.db t mirrors it" in line
    assert "no SQLite database at 'typo.db'" in one_error_line(rh("query", "--db", "typo.db", "SELECT 1", cwd=tmp_path))
    assert tree_digest(tmp_path) == before


def _start_serve(cwd, *args):
    process = subprocess.Popen(
        [str(RH), "serve", "--headless", *args],
        cwd=cwd,
        env=rh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    assert '"event": "start"' in line, line + process.stderr.read()
    return process


def _stop(process) -> None:
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 0


def test_every_command_works_on_the_config_rh_init_writes(tmp_path):
    assert rh("init", "--db", "app.db", "--storage", "./lake", cwd=tmp_path).returncode == 0
    steps = [
        ("exec", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"),
        ("exec", "INSERT INTO t VALUES (1, 'a')"),
        ("register", "t"),
        ("sync",),
        ("query", "SELECT count(*) FROM t"),
        ("status",),
        ("info",),
        ("dashboard",),
        ("compact",),
        ("restore", "copy.db"),
    ]
    for step in steps:  # no --config: ./rhei.toml is found
        result = rh(*step, cwd=tmp_path)
        assert result.returncode == 0, (step, result.stderr)
    assert rh("repl", input="SELECT count(*) AS n FROM t;\n", cwd=tmp_path).returncode == 0
    flight = subprocess.Popen(
        [str(RH), "flight", "--port", "0"],
        cwd=tmp_path,
        env=rh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "serving" in flight.stdout.readline()
    flight.send_signal(signal.SIGINT)
    flight.communicate(timeout=60)
    serve = _start_serve(tmp_path)
    _stop(serve)


def test_compact_and_restore_never_open_a_sidecar_source(tmp_path):
    source = tmp_path / "src.db"
    conn = sqlite3.connect(source)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, updated_at TEXT)")
    conn.execute("INSERT INTO t VALUES (1, '2026-01-01 00:00:00')")
    conn.commit()
    conn.close()
    assert (
        rh("init", "--source", "sqlite://src.db", "--table", "t", "--storage", "./lake", cwd=tmp_path).returncode == 0
    )
    assert rh("sync", cwd=tmp_path).returncode == 0
    source.rename(tmp_path / "moved.db")  # the source is gone: only the lake is needed
    for step in (("compact",), ("restore", "copy.db"), ("query", "SELECT count(*) FROM t"), ("status",), ("info",)):
        result = rh(*step, cwd=tmp_path)
        assert result.returncode == 0, (step, result.stderr)


def test_beside_rh_serve_reads_work_and_exec_says_who_owns_the_database(tmp_path):
    assert rh("init", "--db", "app.db", cwd=tmp_path).returncode == 0
    assert rh("exec", "CREATE TABLE t (id INTEGER PRIMARY KEY)", cwd=tmp_path).returncode == 0
    serve = _start_serve(tmp_path)
    try:
        for step in (("query", "SELECT count(*) FROM t"), ("status",), ("info",)):
            result = rh(*step, cwd=tmp_path)
            assert result.returncode == 0, (step, result.stderr)
        line = one_error_line(rh("exec", "INSERT INTO t VALUES (1)", cwd=tmp_path))
        assert line.startswith("error: rh exec: the lake is being written by another process") and "rh serve" in line
        shell = rh("repl", input="SELECT count(*) AS n FROM t;\n", cwd=tmp_path)
        assert shell.returncode == 0 and "this shell is read-only" in shell.stderr, shell.stderr
    finally:
        _stop(serve)


def test_forgetting_register_is_named_with_the_command_that_fixes_it(tmp_path):
    assert rh("exec", "--db", "app.db", "CREATE TABLE t (id INTEGER PRIMARY KEY)", cwd=tmp_path).returncode == 0
    app = sqlite3.connect(tmp_path / "app.db")
    app.execute("CREATE TABLE logs (id INTEGER PRIMARY KEY, msg TEXT)")  # behind rh's back: not mirrored
    app.close()
    synced = rh("sync", "--db", "app.db", cwd=tmp_path)
    assert synced.returncode == 0
    assert "warning: not mirrored (their changes are not synced): logs; rh register --db app.db logs" in synced.stderr
    line = one_error_line(rh("query", "--db", "app.db", "SELECT * FROM logs", cwd=tmp_path))
    assert "logs is a table of app.db that is not mirrored: rh register --db app.db logs mirrors it" in line
    nopk = rh("exec", "--db", "app.db", "CREATE TABLE notes (body TEXT)", cwd=tmp_path)
    assert nopk.returncode == 0 and "warning: table 'notes' was created but is not mirrored" in nopk.stderr


def test_an_interrupted_register_is_resumed_by_the_next_not_by_a_read(tmp_path):
    db = tmp_path / "big.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000000) "
        "INSERT INTO t SELECT i, 'value ' || i FROM s"
    )
    conn.commit()
    conn.close()
    env = rh_env({"RHEI_BATCH_SIZE": "2000", "RHEI_COLUMNAR_MIN_ROWS": "0"})  # many small commits: time to interrupt
    process = subprocess.Popen(
        [str(RH), "register", "--db", "big.db", "t"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "registering t:" in process.stderr.readline()
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the copy finished before the interrupt arrived")
    assert process.returncode == 130 and "rh register interrupted: run it again" in err, err
    before = tree_digest(tmp_path)
    assert rh("status", "--db", "big.db", cwd=tmp_path).returncode == 0
    assert rh("query", "--db", "big.db", "SELECT count(*) FROM t", cwd=tmp_path).returncode in (0, 1)
    assert tree_digest(tmp_path) == before  # a read never finishes the write
    resumed = rh("register", "--db", "big.db", "t", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    count = rh("query", "--db", "big.db", "--format", "csv", "SELECT count(*) AS n FROM t", cwd=tmp_path)
    assert count.stdout.splitlines() == ['"n"', "1000000"], count.stderr
