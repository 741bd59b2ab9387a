"""``rh repl``: multi-line statements, dot commands, history; as a script and in a real terminal."""

from __future__ import annotations

import rhei_lake
from rhei_lake.cli.repl import is_read, split_statements
from tests.support.rh import RH, ROOT, rh
from tests.support.tmux import Terminal


def _lake(tmp_path) -> tuple[str, str]:
    db, lake = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=lake) as setup:
        setup.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total REAL)")
        setup.register_table("orders")
        setup.execute("INSERT INTO orders VALUES (1, 'ada', 10), (2, 'bob', 20)")
        setup.sync_now()
    return db, lake


def _script(tmp_path, *lines: str):
    """``rh repl`` on a fresh lake with ``lines`` on stdin; the finished process."""
    db, lake = _lake(tmp_path)
    return rh("repl", "--db", db, "--storage", lake, input="\n".join(lines) + "\n", cwd=tmp_path)


def test_split_statements_respects_quotes_and_comments():
    text = "SELECT ';' AS a; -- a comment; still\nSELECT \"x;y\" FROM [a;b] /* ; */ ;\nSELECT 'it''s;"
    statements, rest = split_statements(text)
    assert statements == ["SELECT ';' AS a", '-- a comment; still\nSELECT "x;y" FROM [a;b] /* ; */']
    assert rest == "\nSELECT 'it''s;"
    assert is_read("  /* c */ (SELECT 1)") and is_read("WITH x AS (SELECT 1) SELECT * FROM x")
    assert not is_read("INSERT INTO t VALUES (1)") and not is_read("-- SELECT\nDELETE FROM t")


def test_repl_reads_a_script_from_stdin(tmp_path):
    result = _script(
        tmp_path,
        ".tables",
        ".schema orders",
        "INSERT INTO orders",
        "  VALUES (3, 'cy', 30);",
        "SELECT customer, total",
        "  FROM orders",
        "  WHERE id = 3;",
        ".sync",
        ".timing on",
        ".mode csv",
        "SELECT count(*) AS n FROM orders;",
        "SELECT * FROM no_such_table;",
        ".frobnicate",
        "SELECT 1 AS last",
    )
    out = result.stdout
    assert "orders_history, orders_changes" in out  # .tables
    assert "customer" in out and "TEXT" in out and "string" in out  # .schema
    assert "ok, 1 row changed" in out  # a multi-line INSERT through execute(), synced at once
    assert "cy" in out and "30.0" in out  # a point read, fresh from SQLite
    assert "synced 0 events" in out  # .sync: the write was synced already
    assert '"n"\n3\n' in out and "Run Time:" in out and "(olap)" in out  # csv mode, timing, the route
    assert '"last"\n1\n' in out  # a final statement without ';' still runs in a script
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 2 and "no_such_table" in errors[0] and "unknown command .frobnicate" in errors[1]
    assert result.returncode == 1  # a script with failed statements fails, after running all of them


def test_repl_on_a_read_only_lake_refuses_writes_in_one_line(tmp_path):
    _db, lake = _lake(tmp_path)
    result = rh("repl", "--storage", lake, input="DELETE FROM orders;\nSELECT count(*) AS n FROM orders;\n")
    assert "read-only" in result.stderr and "2" in result.stdout and result.returncode == 1


def test_repl_in_a_terminal_multi_line_history_and_dot_commands(tmp_path):
    db, lake = _lake(tmp_path)
    history = tmp_path / "history"
    term = Terminal(tmp_path, width=120, height=40)
    term.start(
        [str(RH), "repl", "--db", db, "--storage", lake, "--history", str(history)],
        env={"PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    try:
        term.wait_for("rhei>")
        term.type("SELECT customer,")
        term.send("Enter")
        term.wait_for("  ..>")  # the statement continues on a second line
        term.type("  total FROM orders ORDER BY id;")
        term.send("Enter")
        screen = term.wait_for("(2 rows)")
        assert "ada" in screen and "bob" in screen
        term.type(".timing on")
        term.send("Enter")
        term.type("SELECT count(*) AS n FROM orders;")
        term.send("Enter")
        term.wait_for("Run Time:")
        term.type(".schema orders")
        term.send("Enter")
        term.wait_for("REAL")
        term.send("C-l")
        for _ in range(4):  # back past .schema, SELECT count(*), .timing: the multi-line statement is one entry
            term.send("Up")
        term.wait_for("rhei> SELECT customer, total FROM orders ORDER BY id;")
        term.send("C-u")
        term.send("C-d")
        assert term.wait_exit() == 0
    finally:
        term.close()
    lines = history.read_text().splitlines()
    assert "SELECT customer, total FROM orders ORDER BY id;" in lines and ".timing on" in lines


def test_repl_as_of_refuses_a_naive_instant_and_goes_on(tmp_path):
    result = _script(
        tmp_path,
        ".as_of 2026-05-01 12:00:00",
        ".as_of",
        ".as_of 2000-01-01T00:00:00Z",
        "SELECT count(*) AS n FROM orders;",
    )
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 1 and ".as_of: '2026-05-01 12:00:00' has no UTC offset" in errors[0], result.stderr
    assert "as_of: off (latest)" in result.stdout  # the naive instant was not taken
    assert "as_of: 2000-01-01T00:00:00Z" in result.stdout and "│ 0 │" in result.stdout  # before any row
