"""``rh compact``: the batch compaction job, which needs nothing but the lake's storage URL."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

import rhei_lake
from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, StorageOption
from rhei_lake.errors import ConfigError, SchemaError
from rhei_lake.timeutil import parse_duration

if TYPE_CHECKING:
    from rich.console import Console

    from rhei_lake.compaction.report import CompactionReport

TableOption = Annotated[
    Optional[list[str]], typer.Option("--table", "-t", help="Compact only this table (repeat for several).")
]
RetentionOption = Annotated[
    Optional[str],
    typer.Option(
        "--vacuum-retention",
        help="Keep unreferenced files this long (7d, 12h, 30m, 0); default: the configured vacuum_retention (7d).",
    ),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Change nothing; report what would be done.")]


def compact_command(
    storage: StorageOption = None,
    config: ConfigOption = None,
    table: TableOption = None,
    vacuum_retention: RetentionOption = None,
    dry_run: DryRunOption = False,
) -> None:
    """Fold change feeds into history, expire old change rows, bin-pack, checkpoint and vacuum.

    Runs against the lake alone (no SQLite file needed), safely beside a process that syncs into it.
    """
    from rhei_lake.cli.runner import Interrupted

    retention = parse_duration(vacuum_retention, what="--vacuum-retention") if vacuum_retention is not None else None
    with _open(config, storage) as lake:
        if not lake.tables():
            raise SchemaError(f"no mirrored tables in {lake.location.url}: nothing to compact")
        try:
            with _Display(common.err_console) as display:
                report = lake.compact(table, vacuum_retention=retention, dry_run=dry_run, progress=display)
        except KeyboardInterrupt:
            raise Interrupted(
                "rh compact interrupted: each step commits on its own, so run it again to go on"
            ) from None
    _print_report(report)


def _open(config: Path | None, storage: str | None) -> rhei_lake.Lake:
    options = common.resolve_options(config=config, storage=storage)
    if "storage" not in options:
        raise ConfigError("rh compact needs the lake: pass --storage URL (or set storage in --config)")
    return rhei_lake.open(**common.lake_only(options))  # a compaction job never opens the source


class _Display:
    """Progress: a bar per table on a terminal, one plain line per step otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._progress: Any = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> _Display:
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, table: str, step: str, done: int, total: int) -> None:
        from rhei_lake.compaction.job import STEPS

        detail = f" {done}/{total} events" if total else ""
        if self._progress is None:
            self.console.print(f"{table}: {step}{detail}", highlight=False, soft_wrap=True)
            return
        task = self._tasks.get(table)
        if task is None:
            task = self._tasks[table] = self._progress.add_task(table, total=len(STEPS))
        self._progress.update(task, description=f"{table}: {step}{detail}", completed=STEPS.index(step))


def _print_report(report: CompactionReport) -> None:
    from rhei_lake.compaction.report import size_text

    table = common.rich_table("table", "events", "versions", "closed", "expired", "files", "vacuumed", "time")
    for t in report.tables.values():
        table.add_row(
            t.table if t.mode == "temporal" else f"{t.table} (mirror)",
            str(t.events_folded),
            str(t.versions_written),
            str(t.versions_closed),
            str(t.changes_expired),
            f"{t.files_before}->{t.files_after}",
            size_text(t.bytes_removed),
            f"{t.duration_seconds:.2f}s",
        )
    common.console.print(table)
    if report.dry_run:
        common.console.print("dry run: nothing was changed", style="bold")
    else:
        common.console.print(
            f"compacted {len(report.tables)} table(s) in {report.duration_seconds:.2f} s", highlight=False
        )
