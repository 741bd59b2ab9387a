"""What every ``rh`` command shares: options, opening the lake, output, error handling."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

import rhei_lake
from rhei_lake.config_file import load_config_file
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


STATE = _State()


def resolve_options(
    *, config: Path | None, storage: str | None = None, db: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Merge a config file with command-line flags (flags win)."""
    options: dict[str, Any] = load_config_file(config) if config is not None else {}
    if storage is not None:
        options["storage"] = storage
    if db is not None:
        options["oltp_path"] = db
    options.update({k: v for k, v in extra.items() if v is not None})
    return options


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
def sync_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(table, done, total)`` callback drawing one bar per table on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err_console, transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bars.add_task(table, total=total)
        bars.update(tasks[table], completed=done, total=total)

    with bars:
        yield update


def parse_instant(text: str | None) -> str | float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text


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


def run(app: typer.Typer) -> int:
    """Run the typer app; library errors become one line and exit code 1."""
    try:
        app(standalone_mode=False)
        return 0
    except RheiError as exc:
        if STATE.debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # click usage errors and anything unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if STATE.debug:
            raise
        err_console.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {exc} (rerun with --debug)")
        return 2
