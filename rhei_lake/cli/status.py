"""``rh status``: how far each table's mirror is behind, what is unfolded, and what failed."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, DbOption, StorageOption

if TYPE_CHECKING:
    from rhei_lake.sync.status import SyncStatus


def status_command(
    db: DbOption = None,
    storage: StorageOption = None,
    config: ConfigOption = None,
    fmt: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="Output: table or json.")] = "table",
) -> None:
    """Per table: synced watermark, lag, last commit, unfolded events, files and errors (read-only).

    With --db the lag behind the database is shown; with only --storage, what
    the lake itself holds. Works beside a running rh serve.
    """
    fmt = common.check_format(fmt, ("table", "json"))
    with common.open_reader(config=config, storage=storage, db=db, command="rh status") as lake:
        status = lake.sync_status()
        where = lake.location.describe()
    if fmt == "json":
        common.console.print_json(json.dumps({"storage": where, **to_jsonable(status)}))
        return
    common.console.print(render_status(status, where))


def to_jsonable(value: Any) -> Any:
    """Dataclasses, datetimes and enums as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def ago(when: datetime | None) -> str:
    """``3.2s ago`` style text for a past instant."""
    if when is None:
        return "-"
    seconds = max(0.0, (datetime.now(UTC) - when).total_seconds())
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: int | float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def render_status(status: SyncStatus, where: str) -> Any:
    """A rich renderable: one row per table (what the lake holds and how far it lags), then errors."""
    from rich.console import Group
    from rich.text import Text

    table = common.rich_table(
        "table", "synced", "lag", "lag s", "last commit", "folded", "unfolded", "tail rows", "files"
    )
    for name, t in status.tables.items():
        table.add_row(
            name,
            number(t.synced_seq),
            number(t.lag_events),
            number(t.lag_seconds, 1),
            ago(t.stored_commit_at),
            number(t.folded_seq),
            number(t.unfolded_events),
            number(t.tail_rows),
            number(t.changelog_files),
        )
    lines: list[Any] = [Text(f"lake: {where}", overflow="fold")]
    lines.append(table if status.tables else Text("no mirrored tables yet", style="dim"))
    if status.lag_events is not None:
        lines.append(
            Text(f"behind the source: {number(status.lag_events)} events, oldest {number(status.lag_seconds, 1)} s old")
        )
    if status.loop.state != "stopped" or status.syncs:
        loop = status.loop
        lines.append(
            Text(
                f"sync loop: {loop.state}"
                + (f" every {loop.interval:g}s, {loop.cycles} cycles" if loop.interval else "")
                + (f", {loop.consecutive_failures} failures in a row" if loop.consecutive_failures else "")
                + f"; last sync {ago(status.last_sync_at)}"
            )
        )
    errors = {name: t.last_error for name, t in status.tables.items() if t.last_error is not None}
    for name, error in errors.items():
        lines.append(Text(f"{name}: {error}", style="red"))
    if status.last_error is not None and not errors:
        lines.append(Text(f"last error: {status.last_error}", style="red" if status.failing else "yellow"))
    return Group(*lines)
