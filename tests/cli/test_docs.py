"""Every ``rh`` command is in the command table of docs/cli.md and has help text (as sqlite-utils checks its CLI)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from rhei_lake.cli.app import app
from tests.support.rh import rh

CLI_PAGE = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
COMMANDS = typer.main.get_command(app).commands


def _command_table() -> set[str]:
    text = CLI_PAGE.read_text(encoding="utf-8")
    section = text[text.index("# Command line\n") :]
    section = section[: section.index("\n## ", 1)]
    return set(re.findall(r"^\| `rh ([a-z-]+)[^`]*` \|", section, flags=re.MULTILINE))


def test_every_command_is_in_the_docs_table_and_nothing_else():
    assert _command_table() == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_text(name):
    command = COMMANDS[name]
    assert command.help and len(command.help.split()) >= 4, name
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"rh {name} {param.opts[0]} has no help text"


def test_help_runs_for_every_command():
    for name in sorted(COMMANDS):
        result = rh(name, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout and "--config" in result.stdout, (
            name,
            result.stderr,
        )
