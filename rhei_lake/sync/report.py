"""What a sync cycle did."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rhei_lake.timeutil import from_micros


@dataclass(frozen=True)
class TableSyncReport:
    """One table's part of a sync: events committed and the watermark after it."""

    table: str
    events: int
    watermark: int
    snapshot_rows: int = 0
    commit_seconds: float = 0.0


@dataclass(frozen=True)
class SyncReport:
    """Returned by ``sync_now()`` once every batch is committed in the store."""

    tables: dict[str, TableSyncReport] = field(default_factory=dict)
    duration_seconds: float = 0.0
    pruned: int = 0
    waiting: dict[str, str] = field(default_factory=dict)
    """Tables registered but not mirrored: their registration did not finish (not synced, not queryable). Each
    maps to the error that stopped it, which names the way on (see ``Lake.sync_status().waiting``)."""
    synced_through: datetime | None = None
    """Every change committed to SQLite before this instant is in the lake (waiting tables aside), and the lake's
    answer for any instant up to it is final: later syncs never change it (trigger mode; ``None`` in sidecar mode)."""

    @property
    def events(self) -> int:
        """Change events committed by this sync (snapshots included)."""
        return sum(t.events + t.snapshot_rows for t in self.tables.values())

    def __str__(self) -> str:
        parts = ", ".join(
            f"{t.table}: {t.events + t.snapshot_rows}" for t in self.tables.values() if t.events or t.snapshot_rows
        )
        text = f"synced {self.events} events in {self.duration_seconds * 1000:.1f} ms" + (
            f" ({parts})" if parts else ""
        )
        if self.waiting:
            text += f"; not mirrored, registration unfinished: {', '.join(sorted(self.waiting))}"
        return text


class ReportBuilder:
    """Accumulates per-table counts during one sync."""

    def __init__(self) -> None:
        self._events: dict[str, int] = {}
        self._snapshots: dict[str, int] = {}
        self._watermarks: dict[str, int] = {}
        self._seconds: dict[str, float] = {}

    def add(self, table: str, events: int, watermark: int, seconds: float = 0.0) -> None:
        self._events[table] = self._events.get(table, 0) + events
        self._watermarks[table] = watermark
        self._seconds[table] = self._seconds.get(table, 0.0) + seconds

    def add_snapshot(self, table: str, rows: int, watermark: int) -> None:
        self._snapshots[table] = self._snapshots.get(table, 0) + rows
        self._watermarks[table] = watermark

    def build(
        self,
        duration: float,
        pruned: int = 0,
        *,
        waiting: dict[str, str] | None = None,
        synced_through: int | None = None,
    ) -> SyncReport:
        """The report; ``synced_through`` in epoch micros."""
        tables = {
            t: TableSyncReport(t, self._events.get(t, 0), wm, self._snapshots.get(t, 0), self._seconds.get(t, 0.0))
            for t, wm in self._watermarks.items()
        }
        through = from_micros(synced_through) if synced_through else None
        return SyncReport(tables, duration, pruned, dict(waiting or {}), through)
