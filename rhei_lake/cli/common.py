"""What every ``rh`` command shares: options, finding the configuration, opening the lake, output, errors.

Nothing heavy is imported at module level (pyarrow, DataFusion, delta-rs,
pydantic, rich): ``rh --help`` must start in a blink, so each function imports
what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer

if TYPE_CHECKING:
    import pyarrow as pa
    from rich.console import Console
    from rich.table import Table

    import rhei_lake

DbOption = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        metavar="PATH",
        help="The SQLite database (oltp_path). Its lake: --storage, else the config's, else the lake it feeds, else PATH-lake beside it.",
    ),
]
StorageOption = Annotated[
    Optional[str],
    typer.Option("--storage", "-s", metavar="URL", help="The lake: memory://, a local path, or s3://bucket/prefix."),
]
ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", metavar="FILE", help="A TOML configuration file (default: $RHEI_CONFIG, else ./rhei.toml)."
    ),
]

EngineOption = Annotated[
    Optional[str],
    typer.Option(
        "--engine",
        metavar="ENGINE",
        help="The query engine: datafusion (default) or duckdb (DuckDB's SQL; pip install 'rhei-lake[duckdb]').",
    ),
]

OUTPUT_FORMATS = ("table", "csv", "json", "parquet", "arrow")
DEFAULT_LAKE_SUFFIX = "-lake"
"""``rh ... --db app.db`` without a storage keeps its lake in ``app.db-lake`` beside the database."""


@dataclass
class _State:
    debug: bool = False
    env_sources: dict[str, str] = field(default_factory=dict)  # option -> the RHEI_* variable that set it
    consoles: dict[str, Any] = field(default_factory=dict)


STATE = _State()

_STRUCTURED_FIELDS = ("storage_options", "tables")


def __getattr__(name: str) -> Any:
    """``console`` (stdout) and ``err_console`` (stderr): rich consoles, made on first use."""
    if name in ("console", "err_console"):
        made = STATE.consoles.get(name)
        if made is None:
            from rich.console import Console

            made = STATE.consoles[name] = Console(stderr=name == "err_console")
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    console: Console
    err_console: Console


def usage_error(message: str) -> NoReturn:
    """A bad argument: one line and exit code 2, as for an unknown option."""
    raise typer.BadParameter(message)


def default_storage(db: str) -> str:
    """The lake of ``--db PATH`` when no storage is given.

    The durable lake the database already feeds (it records it), else ``PATH-lake`` beside it.
    """
    if os.path.isfile(db):
        from rhei_lake.errors import RheiError
        from rhei_lake.sync.binding import bound_lake

        try:
            bound = bound_lake(db)
        except RheiError:
            bound = None  # not a database we can read: opening it reports why
        if bound is not None and not bound.volatile:
            return bound.url
    return db + DEFAULT_LAKE_SUFFIX


def config_path(config: Path | None) -> Path | None:
    """``--config``, else ``$RHEI_CONFIG``, else ``./rhei.toml`` if it exists."""
    if config is not None:
        return config
    from rhei_lake.config_file import find_config_file

    return find_config_file(os.environ, os.getcwd())


def resolve_settings(
    *, config: Path | None, storage: str | None = None, db: str | None = None, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The lake's options and ``rh serve``'s settings: defaults < config file < ``RHEI_*`` < flags.

    The file is ``--config``, else ``$RHEI_CONFIG``, else ``./rhei.toml``.
    ``extra`` flags go to whichever of the two names them. Everything is
    validated here, once, before any command adjusts it (so an invalid value
    is refused even by a command that does not use it). A ``--db`` naming
    another database than the file's keeps the file's storage for that one:
    it gets its own lake. The usual ``AWS_*`` variables are not read here:
    :func:`rhei_lake.open` resolves them.
    """
    from rhei_lake.config import LakeConfig
    from rhei_lake.config_file import environment_options, read_config_file
    from rhei_lake.service.config import ServiceConfig

    path = config_path(config)
    file = read_config_file(path) if path is not None else None
    lake: dict[str, Any] = dict(file.lake) if file else {}
    serve: dict[str, Any] = dict(file.serve) if file else {}
    lake_fields, serve_fields = set(LakeConfig.model_fields), set(ServiceConfig.model_fields)
    if path is not None:
        _check_keys(path, lake, serve, lake_fields, serve_fields)
    env, warnings = environment_options(os.environ, lake_fields | serve_fields, structured=_STRUCTURED_FIELDS)
    for message in warnings:
        warning(message)
    for name, value in env.items():
        (serve if name in serve_fields else lake)[name] = value
        STATE.env_sources[name] = f"RHEI_{name.upper()}"
    if db is not None:
        if lake.get("oltp_path") and not _same_file(str(lake["oltp_path"]), db) and "storage" not in env:
            lake.pop("storage", None)  # the file's lake belongs to its own database
        lake["oltp_path"] = db
    if storage is not None:
        lake["storage"] = storage
    for name, value in extra.items():
        if value is not None:
            (serve if name in serve_fields else lake)[name] = value
            STATE.env_sources.pop(name, None)
    _validate(lake, serve)
    if lake.get("oltp_path") and "storage" not in lake:
        lake["storage"] = default_storage(str(lake["oltp_path"]))
    return lake, serve


def _check_keys(
    path: Path, lake: dict[str, Any], serve: dict[str, Any], lake_fields: set[str], serve_fields: set[str]
) -> None:
    """Every unknown key of the file at once, each with the closest known one."""
    from rhei_lake.config import did_you_mean
    from rhei_lake.errors import ConfigError

    unknown = [name + did_you_mean(name, lake_fields) for name in lake if name not in lake_fields]
    unknown += [f"serve.{name}" + did_you_mean(name, serve_fields) for name in serve if name not in serve_fields]
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown option{'s' if len(unknown) > 1 else ''} " + ", ".join(unknown)
        )


def _validate(lake: dict[str, Any], serve: dict[str, Any]) -> None:
    """Both parts, every invalid value reported at once."""
    from rhei_lake.config import build_config
    from rhei_lake.errors import ConfigError
    from rhei_lake.service.config import build_service_config

    problems = []
    for build, options in ((build_config, lake), (build_service_config, serve)):
        try:
            build(options)
        except ConfigError as exc:
            problems.append(str(exc).removeprefix("invalid configuration: "))
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


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
    command: str = "this command",
    **extra: Any,
) -> rhei_lake.Lake:
    """The lake for a command that writes (``rh exec``, ``register``, ``sync``, ``repl``): it owns the database.

    Tables created through it are mirrored unless ``auto_register = false`` is configured.
    """
    from rhei_lake.errors import ConfigError

    options = resolve_options(config=config, storage=storage, db=db, **extra)
    options.pop("sync_interval", None)  # one-shot commands never start the background loop (`rh serve` does)
    if require_db and not options.get("oltp_path"):
        raise ConfigError(f"{command} needs a SQLite database: pass --db PATH (or set oltp_path in the config file)")
    if require_source and not options.get("oltp_path") and not options.get("source"):
        raise ConfigError(
            f"{command} needs a database to sync from: pass --db PATH, or a config file with "
            'source = "postgresql://..." and [[tables]] entries (sidecar mode)'
        )
    if not options.get("oltp_path") and not options.get("source") and "storage" not in options:
        raise ConfigError("nothing to open: pass --db PATH or --storage URL (or write a config file: rh init)")
    if options.get("oltp_path"):
        options.setdefault("auto_register", True)
    return _open(options, command)


def open_reader(
    *,
    config: Path | None,
    storage: str | None = None,
    db: str | None = None,
    command: str = "this command",
    **extra: Any,
) -> rhei_lake.Lake:
    """The lake for a command that only reads (``rh query``, ``status``, ``info``, ``dashboard``).

    Opened ``read_only``: it never snapshots, syncs, prunes or writes, takes no
    writer lease (so it works beside ``rh serve``), and reads the database only
    for point queries and lag.
    """
    from rhei_lake.errors import ConfigError

    options = resolve_options(config=config, storage=storage, db=db, **extra)
    for key in ("sync_interval", "auto_register"):
        options.pop(key, None)
    if not options.get("oltp_path") and "storage" not in options:
        raise ConfigError("nothing to open: pass --db PATH or --storage URL (or write a config file: rh init)")
    db_path = options.get("oltp_path")
    if db_path and not os.path.isfile(db_path):
        raise ConfigError(f"--db: no SQLite database at {db_path!r}")
    options["read_only"] = True
    return _open(options, command)


def lake_only(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without the source: for commands that work from the lake alone (compact, restore, flight)."""
    return {
        k: v
        for k, v in options.items()
        if k not in ("oltp_path", "source", "tables", "sync_interval", "auto_register", "read_only")
    }


def _open(options: dict[str, Any], command: str) -> rhei_lake.Lake:
    import rhei_lake
    from rhei_lake.cli.runner import show_library_warnings

    show_library_warnings()

    try:
        return rhei_lake.open(**options)
    except rhei_lake.LeaseHeldError as exc:
        db = options.get("oltp_path")
        owner = f"; it owns {db}" if db else ""
        raise rhei_lake.LeaseHeldError(
            f"{command}: {exc}{owner}. A running `rh serve` (or an application) syncs every write made to the "
            "database by any program, so write through it; rh query, rh status and rh info read beside it"
        ) from None


@contextmanager
def sync_progress(verb: str = "syncing") -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(table, done, total)`` callback: bars on a terminal, plain lines on stderr otherwise."""
    from rhei_lake.cli.progress import progress_reporter

    with progress_reporter(err_console_(), verb) as update:
        yield update


def err_console_() -> Console:
    return __getattr__("err_console")


def console_() -> Console:
    return __getattr__("console")


def read_instant(text: str, what: str) -> str | float:
    """Epoch seconds, or ISO 8601 text with ``Z`` or an offset, checked now: a ConfigError names ``what``.

    A naive instant is refused, as by the library.
    """
    from rhei_lake.timeutil import to_micros

    try:
        value: str | float = float(text)
    except ValueError:
        value = text
    to_micros(value, what=what)
    return value


def parse_instant(text: str | None, option: str = "--as-of") -> str | float | None:
    """An instant given to ``option`` on the command line; a bad one is a usage error (exit code 2)."""
    if text is None:
        return None
    from rhei_lake.errors import ConfigError

    try:
        return read_instant(text, option)
    except ConfigError as exc:
        usage_error(str(exc))


def rich_table(*columns: str) -> Table:
    from rich.table import Table

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


def check_format(fmt: str, allowed: tuple[str, ...] = OUTPUT_FORMATS) -> str:
    if fmt.lower() not in allowed:
        usage_error(f"--format must be one of {', '.join(allowed)}, not {fmt!r}")
    return fmt.lower()


def write_table(result: pa.Table, fmt: str, output: str | None) -> None:
    """Print or save a query result in one of :data:`OUTPUT_FORMATS`."""
    fmt = check_format(fmt)
    if fmt == "table":
        if output:
            usage_error("--output needs --format csv, json, parquet or arrow")
        write_rows(result.column_names, result.to_pylist())
        return
    data = _encode(result, fmt)
    if output:
        Path(output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()


def write_rows(columns: list[str], rows: list[dict[Any, Any]]) -> None:
    """A table of rows (their values, in column order) and a ``(N rows)`` line, as ``rh query`` prints them."""
    table = rich_table(*columns)
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    out = console_()
    out.print(table)
    out.print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", style="dim")


def _encode(result: pa.Table, fmt: str) -> bytes:
    import io

    sink = io.BytesIO()
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(result, sink)
    elif fmt == "json":
        import json

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

    err_console_().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    """Print one warning line on stderr."""
    from rich.markup import escape

    err_console_().print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _with_sources(message: str) -> str:
    """Name the RHEI_* variable behind each invalid option the message mentions."""
    named = [var for name, var in STATE.env_sources.items() if f"{name}:" in message or f"serve.{name}:" in message]
    return message + (f" (set by {', '.join(named)})" if named else "")
