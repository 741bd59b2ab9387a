"""``rh dashboard``: a live, read-only view of a lake that another process (``rh serve``, an application) writes."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, DbOption, StorageOption


def dashboard_command(
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
    interval: Annotated[
        float, typer.Option("--interval", metavar="SECONDS", min=0.1, help="Seconds between refreshes.")
    ] = 1.0,
) -> None:
    """Live status of a lake, refreshed every second: lag, last commit, unfolded events (q quits).

    Read-only: it never syncs or writes, so it runs beside rh serve or the
    application that syncs. rh serve shows the same with the service's own
    sync loop, compaction and log. Not on a terminal, it prints the status once.
    """
    from rhei_lake.cli.status import render_status

    with common.open_reader(config=config, storage=storage, db=db, command="rh dashboard") as lake:
        where = lake.location.describe()
        out = common.console
        if not (out.is_terminal and _stdin_is_terminal()):
            out.print(render_status(lake.sync_status(), where))
            return
        _live(lake, where, interval)


def _stdin_is_terminal() -> bool:
    import sys

    return sys.stdin.isatty()


def _live(lake, where: str, interval: float) -> None:  # noqa: ANN001 - a rhei_lake.Lake
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from rhei_lake.cli.dashboard import KeyReader
    from rhei_lake.cli.status import render_status

    stop = threading.Event()

    def key(pressed: str) -> None:
        if pressed in ("q", "Q"):
            stop.set()

    def screen() -> Group:
        try:
            body = render_status(lake.sync_status(), where)
        except Exception as exc:  # noqa: BLE001 - a failed refresh is shown, the next one may work
            body = Text(f"status unavailable: {exc}", style="red")
        footer = Text(f"rh dashboard (read-only), every {interval:g}s   q quit", style="dim")
        return Group(body, footer)

    try:
        with KeyReader(key), Live(screen(), console=common.console, screen=True, auto_refresh=False) as live:
            while not stop.wait(interval):
                live.update(screen(), refresh=True)
    except KeyboardInterrupt:
        pass  # Ctrl-C is a way to leave a dashboard, not a failure
