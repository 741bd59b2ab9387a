"""``rh compact``: options, dry run, progress, and one-line failures."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

import rhei_lake
from rhei_lake.cli import app as cli_app
from rhei_lake.cli.compact import _Display


def rh(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["rh", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli_app.main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.fixture
def lake_dir(tmp_path) -> str:
    root = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=root) as lake:
        for name in ("orders", "users"):
            lake.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
            lake.register_table(name)
            for i in range(5):
                lake.execute(f"INSERT INTO {name} VALUES (?, ?)", (i, f"v{i}"))
                lake.sync_now()
            lake.execute(f"UPDATE {name} SET v = 'changed' WHERE id = 1")
            lake.sync_now()
    return root


def _history_exists(root: str, table: str) -> bool:
    with rhei_lake.open(storage=root) as lake:
        return lake.storage.table_store(table, "history").exists()


def test_compact_all_tables(monkeypatch, capsys, lake_dir):
    code, out, err = rh(monkeypatch, capsys, "compact", "--storage", lake_dir, "--vacuum-retention", "0")
    assert code == 0, err
    assert "orders" in out and "users" in out and "compacted 2 table(s)" in out
    for step in ("orders: flush", "orders: fold", "orders: vacuum", "users: checkpoint"):
        assert step in err  # not a terminal: one plain line per step
    assert _history_exists(lake_dir, "orders") and _history_exists(lake_dir, "users")
    with rhei_lake.open(storage=lake_dir) as lake:
        assert lake.query("SELECT v FROM orders WHERE id = 1").to_pylist() == [{"v": "changed"}]


def test_dry_run_changes_nothing(monkeypatch, capsys, lake_dir):
    code, out, err = rh(monkeypatch, capsys, "compact", "--storage", lake_dir, "--dry-run")
    assert code == 0, err
    assert "dry run: nothing was changed" in out
    row = next(line for line in out.splitlines() if "orders" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:5] == ["orders", "6", "6", "1", "0"]
    assert not _history_exists(lake_dir, "orders")


def test_table_option_selects(monkeypatch, capsys, lake_dir):
    code, out, _ = rh(monkeypatch, capsys, "compact", "--storage", lake_dir, "--table", "users")
    assert code == 0 and "compacted 1 table(s)" in out
    assert _history_exists(lake_dir, "users") and not _history_exists(lake_dir, "orders")
    code, _, err = rh(monkeypatch, capsys, "compact", "--storage", lake_dir, "-t", "nope")
    assert code == 1 and err.strip() == "error: no mirrored table 'nope'; known: ['orders', 'users']"


def test_config_file_supplies_storage_and_retention(monkeypatch, capsys, lake_dir, tmp_path):
    config = tmp_path / "rhei.toml"
    config.write_text(
        f'storage = "{lake_dir}"\nvacuum_retention = "0"\ntarget_file_size = 1048576\n'
        f'oltp_path = "{tmp_path / "ignored.db"}"\n'
    )
    code, out, err = rh(monkeypatch, capsys, "compact", "--config", str(config))
    assert code == 0, err
    assert "compacted 2 table(s)" in out
    assert not (tmp_path / "ignored.db").exists(), "a compaction job must not open the source database"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vacuum-retention", "soon"], "error: --vacuum-retention: 'soon' is not a duration"),
        ([], "error: rh compact needs the lake: pass --storage URL"),
    ],
)
def test_failures_are_one_line(monkeypatch, capsys, lake_dir, args, message):
    if args:
        args = ["--storage", lake_dir, *args]
    code, out, err = rh(monkeypatch, capsys, "compact", *args)
    assert code == 1
    assert err.strip().startswith(message) and len(err.strip().splitlines()) == 1


def test_progress_on_a_terminal_draws_bars():
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, width=100)
    with _Display(console) as display:
        display("orders", "flush", 0, 0)
        display("orders", "fold", 500, 2000)
        display("orders", "vacuum", 0, 0)
    assert display.live and "orders" in sink.getvalue()
