"""Running ``rh``: one line per error, exit codes as docs/cli.md states, Ctrl-C as in sqlite3.

Exit codes: 0 success, 1 an error (one ``error: ...`` line; ``--debug`` shows
the traceback), 2 a bad argument or option, 130 interrupted by Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from typing import Any

import typer

from rhei_lake.cli import common
from rhei_lake.cli.help_format import plain_help

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


_CLI_WORDS = [
    (re.compile(r"in one execute_batch\(\)"), "in one rh exec (separated by ';')"),
    (re.compile(r"\bexecute(_batch)?\(\)"), "rh exec"),
    (re.compile(r"\bsync_now\(\)"), "rh sync"),
    (re.compile(r"\bregister_table\('([^']+)'\)"), r"rh register \1"),
    (re.compile(r"\bregister_table\(\)"), "rh register"),
    (re.compile(r"\bdetach_database\(\)"), "rh detach"),
]
"""The library's messages name its methods; on the command line the command that does the same is named."""


def cli_words(message: str) -> str:
    """``message`` with API calls that have a command replaced by that command."""
    for pattern, words in _CLI_WORDS:
        message = pattern.sub(words, message)
    return message


class Interrupted(Exception):
    """Ctrl-C stopped a command; the message says what was cancelled and what state it left."""


class WarningLines(logging.Handler):
    """The library's warnings (a created table left unmirrored, a retry) as ``warning: ...`` lines."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            common.warning(record.getMessage())
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def run(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the typer app; returns the exit code."""
    from rhei_lake.errors import ConfigError, RheiError

    command = typer.main.get_command(app)
    plain_help(command)
    try:
        code = command.main(args=args, prog_name="rh", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except RheiError as exc:
        if common.STATE.debug:
            raise
        common.error(cli_words(common._with_sources(str(exc)) if isinstance(exc, ConfigError) else str(exc)))
        return EXIT_ERROR
    except OSError as exc:  # a file the user named cannot be read or written
        if common.STATE.debug:
            raise
        where = f" {exc.filename!r}" if exc.filename else ""
        common.error(f"{exc.strerror or exc}{':' if where else ''}{where}")
        return EXIT_ERROR
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        common.err_console.print("aborted")
        return EXIT_INTERRUPTED
    except Interrupted as exc:
        common.error(str(exc))
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        common.error("interrupted (Ctrl-C)")
        return EXIT_INTERRUPTED
    except Exception as exc:  # click usage errors and anything unexpected
        return _other(exc)


def show_library_warnings() -> None:
    """Print the library's warnings as ``warning: ...`` lines (one-shot commands; `rh serve` logs its own way)."""
    library_log = logging.getLogger("rhei_lake")
    if not any(isinstance(h, WarningLines) for h in library_log.handlers):
        library_log.addHandler(WarningLines())
        library_log.setLevel(logging.WARNING)
        library_log.propagate = False


def _other(exc: Exception) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":  # `rh` alone: its help, as `rh --help` prints it
        print(exc.format_message())  # type: ignore[attr-defined]
        return 0
    if isinstance(exc, typer.BadParameter) and getattr(exc, "param", None) is None:
        common.error(exc.message)  # common.usage_error: the message says it all
        return EXIT_USAGE
    if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
        ctx: Any = getattr(exc, "ctx", None)
        usage = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        common.error(f"{exc.format_message()}{usage}")
        return exc.exit_code  # type: ignore[attr-defined]
    if common.STATE.debug:
        raise exc
    common.error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug)")
    return EXIT_ERROR


def main() -> None:
    """Console-script entry point."""
    from rhei_lake.cli.app import app

    code = run(app)
    # A Ctrl-C from here on (while the interpreter waits for threads) must not turn into a traceback
    # or a death by signal: the command has finished and its exit code stands.
    signal.signal(signal.SIGINT, lambda _signum, _frame: os._exit(code))
    sys.exit(code)
