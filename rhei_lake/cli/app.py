"""``rh``: the rhei_lake command line, a thin layer over the public API.

Every command resolves its configuration once (``--config`` file, else
``$RHEI_CONFIG``, else ``./rhei.toml``; then ``RHEI_*`` variables; then flags),
opens the library object, calls its methods, and turns any
:class:`~rhei_lake.errors.RheiError` into one clear line on stderr and a
non-zero exit (the traceback only with ``--debug``). Commands that only read
(``query``, ``status``, ``info``, ``dashboard``) open the lake read-only: they
never snapshot, sync, prune or write.

Nothing heavy is imported here: each command imports what it needs when it
runs, so ``rh --help`` starts fast (``bench/startup.py`` measures it).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, DbOption, StorageOption
from rhei_lake.cli.compact import compact_command
from rhei_lake.cli.dashboard_command import dashboard_command
from rhei_lake.cli.detach import detach_command
from rhei_lake.cli.flight import flight_command
from rhei_lake.cli.init import init_command
from rhei_lake.cli.repl import repl_command
from rhei_lake.cli.restore import restore_command
from rhei_lake.cli.runner import main
from rhei_lake.cli.serve import serve_command
from rhei_lake.cli.status import status_command
from rhei_lake.cli.views import views_command

app = typer.Typer(
    name="rh",
    help="rhei_lake: mirror SQLite/PostgreSQL into a Delta Lake on memory, local disk or S3, and query it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        import rhei_lake

        print(f"rh (rhei_lake) {rhei_lake.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    common.STATE.debug = debug


@app.command("exec")
def exec_command(
    sql: Annotated[
        str,
        typer.Argument(
            metavar="SQL",
            help="One statement, or several separated by ';' (run in one transaction: all or nothing).",
        ),
    ],
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Run SQL on the SQLite database, as sqlite3 would, and commit the change to the lake.

    A query prints its rows; a write prints how many rows it changed. Tables
    it creates are mirrored at once (unless auto_register = false), and what
    it changed is synced before it returns, so rh query sees it.
    """
    from rhei_lake.cli.exec import run_exec

    with common.open_lake(config=config, storage=storage, db=db, require_db=True, command="rh exec") as lake:
        run_exec(lake, sql)


@app.command("query")
def query_command(
    sql: Annotated[str, typer.Argument(metavar="SQL", help="Read-only SQL over the lake's tables and views.")],
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of",
            metavar="INSTANT",
            help="Query the state at this instant (ISO 8601 with Z or an offset, or epoch seconds).",
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="FORMAT", help="Output: table, csv, json, parquet or arrow.")
    ] = "table",
    output: Annotated[
        Optional[str], typer.Option("--output", "-o", metavar="FILE", help="Write to this file instead of stdout.")
    ] = None,
    hint: Annotated[
        Optional[str],
        typer.Option("--hint", metavar="ROUTE", help="Force the route: oltp (SQLite) or olap (the lake)."),
    ] = None,
    engine: common.EngineOption = None,
) -> None:
    """Run read-only SQL over the lake and print the result (never writes or syncs).

    Ctrl-C cancels a running query (exit code 130).
    """
    from rhei_lake.cli.reads import run_query

    common.check_format(fmt)
    instant = common.parse_instant(as_of)
    with common.open_reader(config=config, storage=storage, db=db, command="rh query", engine=engine) as lake:
        result = run_query(lake, sql, as_of=instant, hint=hint)
    common.write_table(result, fmt, output)


@app.command("sync")
def sync_command(
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Commit every captured change to the lake once, and report what was synced.

    With --db it syncs the SQLite database rhei_lake owns (and names its tables
    that are not mirrored); with a config that sets source and [[tables]] it
    polls an external database (sidecar mode), showing progress while a big
    table is first copied.
    """
    from rhei_lake.cli.reads import unmirrored_note

    with common.open_lake(config=config, storage=storage, db=db, require_source=True, command="rh sync") as lake:
        if lake.config.source is not None:
            with common.sync_progress() as progress:
                report = lake.sync_now(progress=progress)
        else:
            report = lake.sync_now()
        note = unmirrored_note(lake)
    common.console.print(str(report), highlight=False)
    if note:
        common.warning(note)


@app.command("register")
def register_command(
    tables: Annotated[list[str], typer.Argument(metavar="TABLE...", help="Tables of the SQLite database to mirror.")],
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
) -> None:
    """Mirror SQLite tables: install capture triggers and commit their existing rows once.

    The first copy of a big table shows a progress bar (plain lines when not a
    terminal). Interrupted, it resumes where it stopped when run again.
    """
    from rhei_lake.cli.runner import Interrupted

    specs = []
    with common.open_lake(config=config, storage=storage, db=db, require_db=True, command="rh register") as lake:
        try:
            with common.sync_progress("registering") as progress:
                for name in tables:
                    specs.append(lake.register_table(name, progress=progress))
        except KeyboardInterrupt:
            raise Interrupted(
                "rh register interrupted: run it again to finish the first copy (what was committed is kept)"
            ) from None
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
    """Versions, mode, storage and mirrored tables (read-only)."""
    from rhei_lake.cli.reads import show_info

    with common.open_reader(config=config, storage=storage, db=db, command="rh info") as lake:
        show_info(lake)


app.command("status")(status_command)
app.command("dashboard")(dashboard_command)
app.command("compact")(compact_command)
app.command("restore")(restore_command)
app.command("repl")(repl_command)
app.command("init")(init_command)
app.command("serve")(serve_command)
app.command("flight")(flight_command)
app.command("views")(views_command)
app.command("detach")(detach_command)

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
