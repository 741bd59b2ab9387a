"""Long work shows a progress bar on a terminal (and plain lines otherwise: see test_commands)."""

from __future__ import annotations

import sqlite3

from tests.support.rh import RH, ROOT
from tests.support.tmux import Terminal


def test_register_draws_a_progress_bar_on_a_terminal(tmp_path):
    db = tmp_path / "big.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, 'x')", [(i,) for i in range(30_000)])
    conn.commit()
    conn.close()
    term = Terminal(tmp_path, width=120, height=20)
    term.start(
        [str(RH), "register", "--db", str(db), "--storage", str(tmp_path / "lake"), "t"],
        env={"PYTHONPATH": str(ROOT), "RHEI_BATCH_SIZE": "3000"},
        cwd=tmp_path,
    )
    try:
        assert term.wait_exit() == 0
        screen = term.screen()
    finally:
        term.close()
    bar = next(line for line in screen.splitlines() if line.startswith("t "))
    assert "━" in bar and "30000/30000 rows" in bar, screen  # a finished bar, not log lines
    assert "registering t:" not in screen and "mirroring t: key (id), 2 columns" in screen
