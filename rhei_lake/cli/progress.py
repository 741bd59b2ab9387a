"""Progress of long work (initial sync, snapshot, restore): bars on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

ProgressCallback = Callable[[str, int, int], None]
"""``progress(table, rows_done, rows_total)``, as the library calls it."""

LINE_INTERVAL = 2.0
"""Seconds between plain progress lines of one table (the first and the last always print)."""


@contextmanager
def progress_reporter(
    console: Console, verb: str, *, unit: str = "rows", line_interval: float = LINE_INTERVAL
) -> Iterator[ProgressCallback]:
    """A callback showing one bar per table when ``console`` is a terminal, else log-style lines.

    Lines read ``<verb> orders: 12000/50000 rows (24%)`` and come at most every
    ``line_interval`` seconds per table, so a log collector is not flooded.
    """
    if console.is_terminal:
        with _bars(console, unit) as update:
            yield update
        return
    last: dict[str, float] = {}
    finished: set[str] = set()

    def line(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        complete = total > 0 and done >= total
        if table in finished or (not complete and now - last.get(table, -line_interval) < line_interval):
            return
        last[table] = now
        if complete:
            finished.add(table)
        percent = f" ({100 * done // total}%)" if total else ""
        console.print(f"{verb} {table}: {done}/{total} {unit}{percent}", highlight=False, soft_wrap=True)

    yield line


@contextmanager
def _bars(console: Console, unit: str) -> Iterator[ProgressCallback]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[str, Any] = {}

    def update(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bars.add_task(table, total=total)
        bars.update(tasks[table], completed=done, total=max(total, done))

    with bars:
        yield update
