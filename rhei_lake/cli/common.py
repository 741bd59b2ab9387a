"""What every ``rh`` command shares: options, opening the lake, output, error handling."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

import rhei_lake
from rhei_lake.config import LakeConfig
from rhei_lake.config_file import environment_options, read_config_file
from rhei_lake.errors import ConfigError, RheiError

console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[Optional[str], typer.Option("--db", help="The SQLite database rhei_lake owns (oltp_path).")]
StorageOption = Annotated[
    Optional[str], typer.Option("--storage", "-s", help="Lake URL: memory://, a local path, or s3://bucket/prefix.")
]
ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="A TOML configuration file.")]

OUTPUT_FORMATS = ("table", "csv", "json", "parquet", "arrow")


@dataclass
class _State:
    debug: bool = False
    env_sources: dict[str, str] = field(default_factory=dict)  # option -> the RHEI_* variable that set it


STATE = _State()

_STRUCTURED_FIELDS = ("storage_options", "tables")


def resolve_settings(
    *, config: Path | None, storage: str | None = None, db: str | None = None, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lake's options and ``rh serve``'s settings: defaults < config file < ``RHEI_*`` < flags.

    ``extra`` flags go to whichever of the two names them. The usual ``AWS_*``
    variables are not read here: :func:`rhei_lake.open` resolves them.
    """
    from rhei_lake.server.service_config import ServiceConfig

    file = read_config_file(config) if config is not None else None
    lake: dict[str, Any] = dict(file.lake) if file else {}
    serve: dict[str, Any] = dict(file.serve) if file else {}
    lake_fields, serve_fields = set(LakeConfig.model_fields), set(ServiceConfig.model_fields)
    env, warnings = environment_options(os.environ, lake_fields | serve_fields, structured=_STRUCTURED_FIELDS)
    for message in warnings:
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    for name, value in env.items():
        (serve if name in serve_fields else lake)[name] = value
        STATE.env_sources[name] = f"RHEI_{name.upper()}"
    if storage is not None:
        lake["storage"] = storage
    if db is not None:
        lake["oltp_path"] = db
    for name, value in extra.items():
        if value is not None:
            (serve if name in serve_fields else lake)[name] = value
            STATE.env_sources.pop(name, None)
    return lake, serve


def resolve_options(
    *, config: Path | None, storage: str | None = None, db: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The lake's options: a config file, then ``RHEI_*`` variables, then flags (each overriding the one before)."""
    return resolve_settings(config=config, storage=storage, db=db, **extra)[0]


def open_lake(
    *,
    config: Path | None,
    storage: str | None = None,
    db: str | None = None,
    require_db: bool = False,
    require_source: bool = False,
    **extra: Any,
) -> rhei_lake.Lake:
    options = resolve_options(config=config, storage=storage, db=db, **extra)
    options.pop("sync_interval", None)  # one-shot commands never start the background loop (`rh serve` does)
    if require_db and not options.get("oltp_path"):
        raise ConfigError("this command needs a SQLite database: pass --db PATH or set oltp_path in --config")
    if require_source and not options.get("oltp_path") and not options.get("source"):
        raise ConfigError(
            "this command needs a database to sync from: pass --db PATH, or a --config FILE with "
            "source = \"postgresql://...\" and [[tables]] entries (sidecar mode)"
        )
    if not options.get("oltp_path") and not options.get("source") and "storage" not in options:
        raise ConfigError("nothing to open: pass --storage URL and/or --db PATH (or --config FILE)")
    return rhei_lake.open(**options)


@contextmanager
def sync_progress(verb: str = "syncing") -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(table, done, total)`` callback: bars on a terminal, plain lines on stderr otherwise."""
    from rhei_lake.cli.progress import progress_reporter

    with progress_reporter(err_console, verb) as update:
        yield update


def parse_instant(text: str | None, *, what: str = "--as-of") -> str | float | None:
    """An instant typed on the command line: epoch seconds, or ISO 8601 text with ``Z`` or an offset.

    Checked here so an error names the flag (a naive instant is refused, as by the library).
    """
    if text is None:
        return None
    from rhei_lake.timeutil import to_micros

    try:
        instant: str | float = float(text)
    except ValueError:
        instant = text
    to_micros(instant, what=what)
    return instant


def rich_table(*columns: str) -> Table:
    table = Table(show_header=True, header_style="bold")
    for col in columns:
        table.add_column(col)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "x'" + value.hex() + "'"
    return str(value)


def write_table(result: pa.Table, fmt: str, output: str | None) -> None:
    """Print or save a query result in one of :data:`OUTPUT_FORMATS`."""
    fmt = fmt.lower()
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(OUTPUT_FORMATS)}, not {fmt!r}")
    if fmt == "table":
        if output:
            raise ConfigError("--output needs --format csv, json, parquet or arrow")
        table = rich_table(*result.column_names)
        for row in result.to_pylist():
            table.add_row(*(_cell(v) for v in row.values()))
        console.print(table)
        console.print(f"({result.num_rows} row{'s' if result.num_rows != 1 else ''})", style="dim")
        return
    data = _encode(result, fmt)
    if output:
        Path(output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def _encode(result: pa.Table, fmt: str) -> bytes:
    sink = io.BytesIO()
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, sink)
    elif fmt == "json":
        rows = result.to_pylist()
        return (json.dumps(rows, default=_json_default, ensure_ascii=False) + "\n").encode()
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(result, sink)
    else:
        import pyarrow.ipc as ipc

        with ipc.new_file(sink, result.schema) as writer:
            writer.write_table(result)
    return sink.getvalue()


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def error(message: str) -> None:
    """Print one error line on stderr."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _with_sources(message: str) -> str:
    """Name the RHEI_* variable behind each invalid option the message mentions."""
    named = [var for name, var in STATE.env_sources.items() if f"{name}:" in message or f"serve.{name}:" in message]
    return message + (f" (set by {', '.join(named)})" if named else "")


def run(app: typer.Typer) -> int:
    """Run the typer app; library errors become one line and exit code 1."""
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit raised by a command
        return code if isinstance(code, int) else 0
    except RheiError as exc:
        if STATE.debug:
            raise
        error(_with_sources(str(exc)) if isinstance(exc, ConfigError) else str(exc))
        return 1
    except OSError as exc:  # a file the user named cannot be read or written
        if STATE.debug:
            raise
        where = f" {exc.filename!r}" if exc.filename else ""
        error(f"{exc.strerror or exc}{':' if where else ''}{where}")
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # click usage errors and anything unexpected
        if hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int):
            ctx = getattr(exc, "ctx", None)
            usage = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            error(f"{exc.format_message()}{usage}")
            return exc.exit_code
        if STATE.debug:
            raise
        error(f"unexpected {type(exc).__name__}: {exc} (rerun with --debug)")
        return 2
