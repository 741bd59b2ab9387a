"""``rh repl``: interactive SQL over a lake, with multi-line statements, history and dot commands.

Statements end with ``;`` and may span lines. Reads (``SELECT``, ``WITH``,
``VALUES``, ``EXPLAIN``, ...) go through :meth:`~rhei_lake.Lake.query` (point
reads to SQLite, the rest to the lake); anything else through
:meth:`~rhei_lake.Lake.execute` when the lake owns a SQLite database. When
standard input is not a terminal the statements are read from it as a script.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

import rhei_lake
from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, DbOption, StorageOption
from rhei_lake.errors import ConfigError, LeaseHeldError, RheiError, WriteRefusedError

if TYPE_CHECKING:
    from rhei_lake.catalog import Column, TableSpec

DEFAULT_HISTORY = Path("~/.rhei_history")
HISTORY_LENGTH = 1000
PROMPT = "rhei> "
CONTINUATION = "  ..> "
_CANCEL = object()
_READ_WORDS = {"select", "with", "values", "explain", "show", "describe", "desc", "from", "table"}

HELP = """\
.tables              mirrored tables (each also queryable as <t>_history and <t>_changes)
.schema TABLE        columns, declared and Arrow types, primary key
.timing on|off       show how long each statement took, and where it ran
.mode table|csv|json how results are printed
.as_of INSTANT|off   query every table as it was at an instant (ISO 8601 with Z/offset, or epoch seconds)
.sync                commit captured changes to the lake now
.status              sync status per table
.help                this text
.quit                leave (also Ctrl-D)
Statements end with ';' and may span several lines; Ctrl-C drops the one being typed,
or cancels the one running."""


def repl_command(
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
    history: Annotated[
        Optional[Path], typer.Option("--history", help=f"History file (default {DEFAULT_HISTORY}).")
    ] = None,
    timing: Annotated[bool, typer.Option("--timing", help="Start with .timing on.")] = False,
    engine: common.EngineOption = None,
) -> None:
    """Interactive SQL shell: multi-line statements, history, .tables, .schema, .timing, .help.

    Writes go to the SQLite database and are synced at once. While another
    process (rh serve) writes the lake, the shell opens it read-only.
    """
    with _open(config, storage, db, engine) as lake:
        shell = Repl(lake, timing=timing)
        if sys.stdin.isatty():
            failed = shell.interactive((history or DEFAULT_HISTORY).expanduser())
        else:
            failed = shell.script(sys.stdin)
    if failed:
        raise typer.Exit(1)


def _open(config: Path | None, storage: str | None, db: str | None, engine: str | None) -> rhei_lake.Lake:
    try:
        return common.open_lake(config=config, storage=storage, db=db, command="rh repl", engine=engine)
    except LeaseHeldError as exc:
        common.warning(f"{str(exc).split('. A running')[0]}; this shell is read-only")
        return common.open_reader(config=config, storage=storage, db=db, command="rh repl", engine=engine)


def split_statements(text: str) -> tuple[list[str], str]:
    """Complete statements in ``text`` (split at ``;`` outside quotes and comments), and the rest."""
    statements: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            end = text.find(ch, i + 1)
            while end != -1 and text[end + 1 : end + 2] == ch:  # a doubled quote escapes itself
                end = text.find(ch, end + 2)
            i = n if end == -1 else end + 1
        elif ch == "[":
            end = text.find("]", i + 1)
            i = n if end == -1 else end + 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end == -1 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end == -1 else end + 2
        elif ch == ";":
            statement = text[start:i].strip()
            if statement:
                statements.append(statement)
            i += 1
            start = i
        else:
            i += 1
    return statements, text[start:]


def is_read(sql: str) -> bool:
    """Whether ``sql`` reads (goes to ``query()``) rather than writes."""
    text = re.sub(r"^(\s|--[^\n]*\n?|/\*.*?\*/|\()*", "", sql, flags=re.DOTALL)
    word = re.match(r"[A-Za-z]+", text)
    return word is not None and word.group(0).lower() in _READ_WORDS


class Repl:
    """The shell's state and commands; input comes from :meth:`interactive` or :meth:`script`."""

    def __init__(self, lake: rhei_lake.Lake, *, timing: bool = False) -> None:
        self.lake = lake
        self.timing = timing
        self.mode = "table"
        self.as_of: str | float | None = None
        self.failures = 0
        self.done = False
        self.interactive_input = False  # Ctrl-C during a statement cancels it and returns to the prompt
        self.commands: dict[str, Callable[[str], None]] = {
            ".tables": self._tables,
            ".schema": self._schema,
            ".timing": self._timing,
            ".mode": self._mode,
            ".as_of": self._as_of,
            ".sync": self._sync,
            ".status": self._status,
            ".help": lambda _arg: common.console.print(HELP, highlight=False, markup=False),
            ".quit": self._quit,
            ".exit": self._quit,
        }

    # -- input ---------------------------------------------------------------
    def interactive(self, history: Path) -> bool:
        """Prompted input with line editing and a persistent history; returns False (errors are shown)."""
        self.interactive_input = True
        try:
            import readline
        except ImportError:  # pragma: no cover - platforms without GNU readline
            editing = False
        else:
            editing = True
        if editing:
            readline.set_auto_history(False)
            readline.set_history_length(HISTORY_LENGTH)
            if history.exists():
                try:
                    readline.read_history_file(history)
                except OSError:
                    pass
        common.console.print(
            f"rhei_lake {rhei_lake.__version__} on {self.lake.location.describe()}; "
            "statements end with ';', .help for commands",
            highlight=False,
        )
        try:
            for entry in self._entries(self._prompt, run_incomplete=False):
                if editing:  # one entry per statement, on one line, ready to run again
                    readline.add_history(" ".join(entry.split()) + ("" if entry.startswith(".") else ";"))
                self.run(entry)
                if self.done:
                    break
        finally:
            if editing:
                try:
                    history.parent.mkdir(parents=True, exist_ok=True)
                    readline.write_history_file(history)
                except OSError as exc:
                    common.error(f"cannot save the history to {str(history)!r}: {exc.strerror or exc}")
        return False

    def script(self, stream) -> bool:
        """Statements and dot commands read from ``stream``; returns whether any failed."""
        lines = iter(stream)

        def read(_pending: bool) -> str | None:
            line = next(lines, None)
            return None if line is None else line.rstrip("\n")

        for entry in self._entries(read, run_incomplete=True):
            self.run(entry)
            if self.done:
                break
        return self.failures > 0

    @staticmethod
    def _prompt(pending: bool) -> str | object | None:
        """A line typed at the prompt; ``None`` at Ctrl-D, :data:`_CANCEL` at Ctrl-C."""
        try:
            return input(CONTINUATION if pending else PROMPT)
        except EOFError:
            common.console.print()
            return None
        except KeyboardInterrupt:
            common.console.print("^C")
            return _CANCEL

    def _entries(self, read: Callable[[bool], str | object | None], *, run_incomplete: bool) -> Iterator[str]:
        """Whole statements and dot commands, from ``read(pending)`` called once per line."""
        buffer = ""
        while True:
            line = read(bool(buffer.strip()))
            if line is None:
                break
            if line is _CANCEL:
                buffer = ""
                continue
            assert isinstance(line, str)
            if not buffer.strip() and line.strip().startswith("."):
                yield line.strip()
                continue
            buffer += line + "\n"
            statements, buffer = split_statements(buffer)
            yield from statements
        if buffer.strip() and run_incomplete:
            yield buffer.strip()

    # -- running ---------------------------------------------------------------
    def run(self, entry: str) -> None:
        """Run one statement or dot command, printing its result or one error line."""
        try:
            if entry.startswith("."):
                name, _, arg = entry.partition(" ")
                command = self.commands.get(name.lower())
                if command is None:
                    raise ConfigError(f"unknown command {name}; .help lists them")
                command(arg.strip())
            else:
                self._statement(entry)
        except RheiError as exc:
            self.failures += 1
            from rhei_lake.cli.runner import cli_words

            common.error(cli_words(str(exc)))
        except KeyboardInterrupt:
            if not self.interactive_input:
                raise
            self.failures += 1
            common.error("cancelled (Ctrl-C)")

    def _statement(self, sql: str) -> None:
        started = time.perf_counter()
        result = None
        where = "oltp"
        writable = self.lake.config.oltp_path is not None and not self.lake.config.read_only
        if is_read(sql) or not writable:
            try:
                result = self.lake.query(sql, as_of=self.as_of)
                where = (result.schema.metadata or {}).get(b"rhei.route", b"olap").decode()
            except WriteRefusedError:
                if not writable:
                    raise
        if result is None:
            changed = self.lake.execute(sql)
            self.lake.sync_now()  # so the next query sees it, as in rh exec
        elapsed = time.perf_counter() - started
        if result is not None:
            common.write_table(result, self.mode, None)
        else:
            common.console.print(f"ok, {changed:,} row{'' if changed == 1 else 's'} changed", highlight=False)
        if self.timing:
            common.console.print(f"Run Time: {elapsed:.3f} s ({where})", style="dim", highlight=False)

    # -- dot commands -------------------------------------------------------------
    def _tables(self, _arg: str) -> None:
        names = self.lake.tables()
        if not names:
            common.console.print("no mirrored tables", style="dim")
            return
        table = common.rich_table("table", "primary key", "columns", "also")
        for name in names:
            spec = self.lake.table_spec(name)
            table.add_row(name, ", ".join(spec.primary_key), str(len(spec.columns)), f"{name}_history, {name}_changes")
        common.console.print(table)

    def _schema(self, arg: str) -> None:
        if not arg:
            raise ConfigError("usage: .schema TABLE")
        spec = self.lake.table_spec(arg)
        table = common.rich_table("column", "declared type", "arrow type", "key", "nullable")
        for column in spec.columns:
            table.add_row(
                column.name,
                column.declared_type,
                str(column.arrow_type),
                "yes" if column.name in spec.primary_key else "",
                "yes" if _nullable(column, spec) else "no",
            )
        common.console.print(f"{spec.name}", style="bold", highlight=False)
        common.console.print(table)

    def _sync(self, _arg: str) -> None:
        if self.lake.config.read_only:
            raise ConfigError(".sync: this shell is read-only (another process writes the lake and syncs)")
        common.console.print(str(self.lake.sync_now()), highlight=False)

    def _timing(self, arg: str) -> None:
        value = arg.lower()
        if value not in ("", "on", "off"):
            raise ConfigError("usage: .timing on|off")
        self.timing = (not self.timing) if value == "" else value == "on"
        common.console.print(f"timing {'on' if self.timing else 'off'}", highlight=False)

    def _mode(self, arg: str) -> None:
        if arg not in ("table", "csv", "json"):
            raise ConfigError("usage: .mode table|csv|json")
        self.mode = arg

    def _as_of(self, arg: str) -> None:
        if not arg:
            common.console.print(f"as_of: {self.as_of or 'off (latest)'}", highlight=False)
            return
        if arg.lower() == "off":
            self.as_of = None
        else:
            self.as_of = common.read_instant(arg, ".as_of")  # a ConfigError (a naive instant, say) is shown
        common.console.print(f"as_of: {self.as_of or 'off (latest)'}", highlight=False)

    def _status(self, _arg: str) -> None:
        from rhei_lake.cli.status import render_status

        common.console.print(render_status(self.lake.sync_status(), self.lake.location.describe()))

    def _quit(self, _arg: str) -> None:
        self.done = True


def _nullable(column: Column, spec: TableSpec) -> bool:
    """Whether SQLite lets the column hold NULL: an INTEGER PRIMARY KEY (the rowid) never does."""
    alias = tuple(spec.primary_key) == (column.name,) and (column.declared_type or "").strip().upper() == "INTEGER"
    return column.nullable and not alias
