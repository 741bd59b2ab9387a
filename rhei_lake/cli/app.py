"""``rh``: the rhei_lake command line, a thin layer over the public API.

Every command resolves its configuration once (``--config`` file, then flags),
opens the library object, calls its methods, and turns any
:class:`~rhei_lake.errors.RheiError` into one clear line on stderr and a
non-zero exit (the traceback only with ``--debug``).
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from rhei_lake.cli import common
from rhei_lake.cli.common import DbOption, ConfigOption, StorageOption
from rhei_lake.cli.compact import compact_command
from rhei_lake.cli.init import init_command
from rhei_lake.cli.repl import repl_command
from rhei_lake.cli.restore import restore_command
from rhei_lake.cli.serve import serve_command
from rhei_lake.cli.status import status_command
from rhei_lake.cli.views import views_command

app = typer.Typer(
    name="rh",
    help="rhei_lake: mirror SQLite/PostgreSQL into a Delta Lake on memory, local disk or S3, and query it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    common.STATE.debug = debug


@app.command("exec")
def exec_command(
    sql: Annotated[str, typer.Argument(help="One SQL statement to run on the SQLite database.")],
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Run a write (or any statement) on the OLTP SQLite database."""
    with common.open_lake(config=config, storage=storage, db=db, require_db=True) as lake:
        changed = lake.execute(sql)
    common.console.print(f"ok, {changed} row(s) changed")


@app.command("query")
def query_command(
    sql: Annotated[str, typer.Argument(help="Read-only SQL over the lake's tables and views.")],
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
    as_of: Annotated[
        Optional[str], typer.Option("--as-of", help="Query the state at this instant (ISO 8601 or epoch seconds).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="Output format: table, csv, json, parquet or arrow.")
    ] = "table",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
    hint: Annotated[
        Optional[str], typer.Option("--hint", help="Force the route: oltp (SQLite) or olap (the lake).")
    ] = None,
) -> None:
    """Run read-only SQL over the lake and print the result."""
    with common.open_lake(config=config, storage=storage, db=db) as lake:
        result = lake.query(sql, as_of=common.parse_instant(as_of), hint=hint)
    common.write_table(result, fmt, output)


@app.command("sync")
def sync_command(
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Commit every captured change to the lake once, and report what was synced.

    With --db it syncs the SQLite database rhei_lake owns; with a --config that
    sets `source` and `[[tables]]` it polls an external database (sidecar mode),
    showing progress while a big table is first copied.
    """
    with common.open_lake(config=config, storage=storage, db=db, require_source=True) as lake:
        if lake.config.source is not None:
            with common.sync_progress() as progress:
                report = lake.sync_now(progress=progress)
        else:
            report = lake.sync_now()
    common.console.print(str(report))


@app.command("register")
def register_command(
    tables: Annotated[list[str], typer.Argument(help="Tables of the SQLite database to mirror.")],
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Mirror SQLite tables: install capture triggers and commit their existing rows once.

    The first copy of a big table shows a progress bar (plain lines when not a terminal).
    """
    with common.open_lake(config=config, storage=storage, db=db, require_db=True) as lake:
        with common.sync_progress("registering") as progress:
            specs = [lake.register_table(name, progress=progress) for name in tables]
    for spec in specs:
        common.console.print(
            f"mirroring {spec.name}: key ({', '.join(spec.primary_key)}), {len(spec.columns)} columns", highlight=False
        )


@app.command("info")
def info_command(
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Versions, storage and mirrored tables."""
    import datafusion
    import deltalake
    import pyarrow

    import rhei_lake

    with common.open_lake(config=config, storage=storage, db=db) as lake:
        table = common.rich_table("component", "value")
        table.add_row("rhei_lake", rhei_lake.__version__)
        table.add_row("pyarrow", pyarrow.__version__)
        table.add_row("deltalake", deltalake.__version__)
        table.add_row("datafusion", datafusion.__version__)
        table.add_row("storage", lake.location.describe())
        if lake.config.source is not None:
            from rhei_lake.capture.source_url import mask_url

            table.add_row("source (sidecar)", mask_url(lake.config.source))
        else:
            table.add_row("oltp database", lake.config.oltp_path or "(none: read-only)")
        for name in lake.tables():
            spec = lake.table_spec(name)
            table.add_row(f"table {name}", f"key ({', '.join(spec.primary_key)}), {len(spec.columns)} columns")
        common.console.print(table)


app.command("compact")(compact_command)

from rhei_lake.cli.flight import flight_command  # noqa: E402

app.command("status")(status_command)
app.command("restore")(restore_command)
app.command("repl")(repl_command)
app.command("init")(init_command)
app.command("serve")(serve_command)
app.command("flight")(flight_command)
app.command("views")(views_command)


def main() -> None:
    """Console-script entry point."""
    sys.exit(common.run(app))


if __name__ == "__main__":
    main()
