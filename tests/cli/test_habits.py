"""``rh`` behaves as sqlite3, duckdb and litestream users expect: Ctrl-C, exec, help, errors, exit codes."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.support.rh import RH, one_error_line, rh, rh_env
from tests.support.tmux import Terminal

LONG_QUERY = (
    "SELECT count(*) AS n FROM (SELECT unnest(range(1, 10000)) AS a) x, (SELECT unnest(range(1, 10000)) AS b) y, "
    "(SELECT unnest(range(1, 1000)) AS c) z"
)
"""About 10^11 rows to count: minutes of work, so only Ctrl-C ends it."""

COMMANDS = [
    "exec",
    "query",
    "sync",
    "register",
    "info",
    "status",
    "dashboard",
    "compact",
    "restore",
    "repl",
    "init",
    "serve",
    "flight",
]


@pytest.fixture
def lake_dir(tmp_path):
    assert rh("exec", "--db", "app.db", "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", cwd=tmp_path).returncode == 0
    return tmp_path


@pytest.mark.parametrize("engine", ["datafusion", "duckdb"])
def test_ctrl_c_cancels_a_running_query_with_exit_code_130(lake_dir, engine):
    process = subprocess.Popen(
        [str(RH), "query", "--db", "app.db", "--engine", engine, LONG_QUERY],
        cwd=lake_dir,
        env=rh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # well into the query
    assert process.poll() is None, process.communicate()
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    assert process.returncode == 130
    assert err.strip() == "error: query cancelled (Ctrl-C)"
    assert elapsed < 3, elapsed  # ~1 s on an idle machine (the query stops within ~0.2 s, then the process exits)


def test_ctrl_c_in_the_repl_cancels_the_query_and_returns_to_the_prompt(lake_dir):
    terminal = Terminal(lake_dir)
    try:
        terminal.start(
            [str(RH), "repl", "--db", "app.db", "--history", str(lake_dir / "history")], env=rh_env(), cwd=lake_dir
        )
        terminal.wait_for("rhei>")
        terminal.type(LONG_QUERY + ";")
        terminal.send("Enter")
        time.sleep(3)
        terminal.send("C-c")
        terminal.wait_for("cancelled (Ctrl-C)", timeout=10)
        terminal.type("SELECT 6 * 7 AS answer;")
        terminal.send("Enter")
        terminal.wait_for("42")
        terminal.type(".quit")
        terminal.send("Enter")
        assert terminal.wait_exit() == 0
    finally:
        terminal.close()


def test_exec_prints_rows_true_counts_and_runs_several_statements_all_or_nothing(lake_dir):
    def run(sql):
        return rh("exec", "--db", "app.db", sql, cwd=lake_dir)

    big = run(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300000) "
        "INSERT INTO t SELECT i, 'x' FROM s"
    )
    assert big.stdout.strip() == "ok, 300,000 rows changed", big.stderr
    rows = run("SELECT id, v FROM t WHERE id <= 2 ORDER BY id")
    assert re.search(r"│ 1 +│ x +│", rows.stdout) and "(2 rows)" in rows.stdout, rows.stdout
    several = run("DELETE FROM t WHERE id > 2; UPDATE t SET v = 'y' WHERE id = 1; SELECT count(*) AS n FROM t;")
    assert "│ 2 " in several.stdout and "ok, 299,999 rows changed" in several.stdout, several.stderr
    failed = run("INSERT INTO t VALUES (10, 'a'); INSERT INTO t VALUES (1, 'duplicate')")
    assert failed.returncode == 1 and "UNIQUE" in one_error_line(failed)
    trigger = run(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT); "
        "CREATE TRIGGER t_audit AFTER UPDATE ON t BEGIN INSERT INTO audit (note) VALUES ('u'); END; "
        "UPDATE t SET v = 'z'"
    )
    assert trigger.returncode == 0 and "ok, 2 rows changed" in trigger.stdout, trigger.stderr
    app = sqlite3.connect(lake_dir / "app.db")
    assert app.execute("SELECT count(*) FROM t WHERE id = 10").fetchone() == (0,)  # the failed batch left nothing
    app.close()
    lake = rh("query", "--db", "app.db", "--format", "json", "SELECT count(*) AS n FROM audit", cwd=lake_dir)
    assert json.loads(lake.stdout) == [{"n": 2}], lake.stderr  # created by rh exec: mirrored and synced


def test_exec_prints_the_rows_a_returning_clause_returns_and_they_reach_the_lake(lake_dir):
    returned = rh(
        "exec",
        "--db",
        "app.db",
        "INSERT INTO t VALUES (7, 'seven'), (8, 'eight') RETURNING id, upper(v) AS up",
        cwd=lake_dir,
    )
    assert returned.returncode == 0, returned.stderr
    assert re.search(r"│ 7 +│ SEVEN +│", returned.stdout) and "(2 rows)" in returned.stdout, returned.stdout
    assert "ok, 2 rows changed" in returned.stdout
    mixed = rh(
        "exec",
        "--db",
        "app.db",
        "UPDATE t SET v = 'x' WHERE id = 8 RETURNING v; DELETE FROM t WHERE id = 7",
        cwd=lake_dir,
    )
    assert re.search(r"│ x +│", mixed.stdout) and "ok, 2 rows changed" in mixed.stdout, mixed.stdout + mixed.stderr
    lake = rh("query", "--db", "app.db", "--format", "json", "SELECT id, v FROM t ORDER BY id", cwd=lake_dir)
    assert json.loads(lake.stdout) == [{"id": 8, "v": "x"}], lake.stderr


def test_a_query_of_a_table_function_runs_on_the_lake(lake_dir):
    series = rh("query", "--db", "app.db", "--format", "json", "SELECT * FROM generate_series(1, 3)", cwd=lake_dir)
    assert series.returncode == 0 and [r["value"] for r in json.loads(series.stdout)] == [1, 2, 3], series.stderr


def test_version_and_help_that_reads_as_written(tmp_path):
    version = rh("--version")
    assert version.returncode == 0 and re.fullmatch(r"rh \(rhei_lake\) \d+\.\d+\.\d+\n", version.stdout)
    top = rh("--help").stdout
    bare = rh()
    assert bare.returncode == 0 and bare.stdout.strip() == top.strip() and bare.stderr == ""  # `rh` alone: its help
    for name in COMMANDS:
        assert re.search(rf"^  {name} ", top, re.MULTILINE), name
    texts = {name: rh(name, "--help").stdout for name in COMMANDS}
    for name, text in texts.items():
        assert "<bool>" not in text and "<str>" not in text and "<path>" not in text, text
        usage = text.splitlines()[0]
        assert usage.startswith(f"Usage: rh {name} ") and "{" not in usage, usage
    assert texts["exec"].splitlines()[0] == "Usage: rh exec [OPTIONS] SQL"
    assert texts["restore"].splitlines()[0] == "Usage: rh restore [OPTIONS] FILE"
    assert "the [serve] table" in texts["serve"] and "[[tables]]" in texts["sync"]


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["query", "--bogus", "SELECT 1"], 2, "No such option: --bogus"),
        (["query", "--storage", "./lake", "--format", "xml", "SELECT 1"], 2, "--format must be one of"),
        (["query", "--storage", "./lake", "--as-of", "yesterday", "SELECT 1"], 2, "--as-of: "),
        (["restore", "out.db"], 1, "rh restore needs the lake"),
        (["exec", "--storage", "./lake", "SELECT 1"], 1, "rh exec needs a SQLite database: pass --db PATH"),
        (["query", "--storage", "", "SELECT 1"], 1, "invalid configuration: storage: must be a non-empty"),
    ],
)
def test_exit_codes_and_cli_words(tmp_path, args, code, expected):
    result = rh(*args, cwd=tmp_path)
    line = one_error_line(result)
    assert expected in line and result.returncode == code, (line, result.returncode)
    assert "storage: storage:" not in line and "None" not in line and "()" not in line


def test_every_unknown_config_key_at_once_with_a_suggestion(tmp_path):
    (tmp_path / "rhei.toml").write_text('storge = "./lake"\nbatch_sise = 3\n[serve]\nmetrics_prot = 1\n')
    line = one_error_line(rh("status", cwd=tmp_path))
    assert (
        "unknown options storge (did you mean storage?), batch_sise (did you mean batch_size?), "
        "serve.metrics_prot (did you mean metrics_port?)"
    ) in line


def test_a_sqlite_url_with_three_slashes_gets_a_hint(tmp_path):
    sqlite3.connect(tmp_path / "app.db").close()
    (tmp_path / "rhei.toml").write_text(
        'storage = "./lake"\nsource = "sqlite:///app.db"\n[[tables]]\nname = "t"\nupdated_at = "u"\n'
    )
    line = one_error_line(rh("sync", cwd=tmp_path))
    assert (
        "sqlite:///app.db is the absolute path /app.db; for app.db in the working folder write sqlite://app.db" in line
    )


def test_serve_warns_about_a_lake_that_does_not_exist(tmp_path):
    process = subprocess.Popen(
        [str(RH), "serve", "--headless", "--storage", "./typo"],
        cwd=tmp_path,
        env=rh_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert '"event": "start"' in process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)
    assert "warning:" in err and "holds no lake yet" in err and "check --storage" in err, err


def test_restore_refuses_an_as_of_before_the_first_sync(lake_dir):
    assert rh("exec", "--db", "app.db", "INSERT INTO t VALUES (1, 'a')", cwd=lake_dir).returncode == 0
    line = one_error_line(
        rh("restore", "--storage", "app.db-lake", "--as-of", "2020-01-01T00:00:00Z", "old.db", cwd=lake_dir)
    )
    assert "before the lake's history of 't' begins" in line and not (lake_dir / "old.db").exists()


def test_status_shows_the_last_commit_info_the_mode_and_schema_the_rowid_key_as_not_null(lake_dir):
    status = rh("status", "--db", "app.db", cwd=lake_dir).stdout
    assert "last commit" in status and re.search(r"│ t +│.*s ago", status.replace("\n", " ")), status
    info = rh("info", "--db", "app.db", cwd=lake_dir).stdout
    assert "HTAP: captures app.db with triggers" in info
    schema = rh("repl", "--db", "app.db", input=".schema t\n", cwd=lake_dir).stdout
    id_row = next(line for line in schema.splitlines() if line.startswith("│ id "))
    assert [cell.strip() for cell in id_row.split("│")[1:-1]] == ["id", "INTEGER", "int64", "yes", "no"]


def test_errors_name_the_command_not_the_library_call(lake_dir):
    line = one_error_line(rh("exec", "--db", "app.db", "DROP TABLE t", cwd=lake_dir))
    assert "run those statements in one rh exec (separated by ';')" in line and "execute_batch()" not in line, line
    from rhei_lake.cli.runner import cli_words

    assert cli_words("run writes with execute(); then sync_now(); or register_table('t')") == (
        "run writes with rh exec; then rh sync; or rh register t"
    )
