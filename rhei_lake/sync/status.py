"""``sync_status()``: how far each table's mirror is behind, and how syncing goes.

:class:`SyncTracker` records what every sync cycle did (manual or background);
:func:`collect_status` combines that with the changelogs, the source's CDC log
and the loop's state into one immutable :class:`SyncStatus`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rhei_lake.catalog import SEQ
from rhei_lake.errors import RheiError, StorageUnavailableError
from rhei_lake.sync.loop import ErrorInfo, LoopStatus
from rhei_lake.sync.report import SyncReport
from rhei_lake.timeutil import from_micros, now_micros

if TYPE_CHECKING:
    from rhei_lake.query.engine import QueryTable
    from rhei_lake.storage.base import TableStore
    from rhei_lake.storage.changelog import Changelog

log = logging.getLogger("rhei_lake.sync")

SyncListener = Callable[[SyncReport | None, ErrorInfo | None], None]
"""``listener(report, error)`` after every sync cycle: the report of a successful one, or its error."""

LagProbe = Callable[[str, int], tuple[int, int | None]]
"""``probe(table, after_seq) -> (events waiting, oldest one's timestamp in micros)``."""


@dataclass(frozen=True)
class TableStatus:
    """One mirrored table.

    ``synced_seq`` is the table's synced watermark; ``lag_events`` /
    ``lag_seconds`` are the captured events not committed yet and the age of
    the oldest; ``last_commit_*`` and ``events_synced`` describe this process'
    sync cycles; ``tail_*`` the hot-path segments not yet flushed into the
    Delta changelog (which holds ``changelog_rows`` in ``changelog_files``).
    ``unfolded_events`` counts change events not folded into the ``history``
    (or mirror mode's ``current``) table yet, all of them while the table has
    none; ``folded_seq`` is the folded watermark, ``None`` while there is no
    such table. ``tail_age_seconds`` is the age of the oldest event not yet in
    the Delta changelog (0 when the tail is empty): how far behind engines
    that read the Delta tables directly are; ``tail_flush_interval`` bounds it.
    ``stored_commit_at`` is when the lake last took a commit for the table, by
    any process, as its store records it (read only while this process has
    made none: for a lake another process syncs).
    """

    table: str
    synced_seq: int
    lag_events: int | None
    lag_seconds: float | None
    last_commit_at: datetime | None
    last_commit_seconds: float | None
    events_synced: int
    last_error: ErrorInfo | None
    tail_segments: int
    tail_rows: int
    changelog_rows: int
    changelog_files: int
    folded_seq: int | None
    unfolded_events: int
    tail_age_seconds: float = 0.0
    stored_commit_at: datetime | None = None


@dataclass(frozen=True)
class SyncStatus:
    """Returned by :meth:`~rhei_lake.Lake.sync_status`: per table and overall.

    Lags are ``None`` on a lake opened without its source (nothing to compare with).
    """

    tables: dict[str, TableStatus]
    loop: LoopStatus
    synced_seq: int | None
    lag_events: int | None
    lag_seconds: float | None
    last_sync_at: datetime | None
    last_sync_seconds: float | None
    syncs: int
    failing: bool
    last_error: ErrorInfo | None
    tail_age_seconds: float = 0.0
    """The oldest event not yet in any table's Delta changelog, in seconds (0: outside readers see everything)."""
    waiting: dict[str, ErrorInfo] = field(default_factory=dict)
    """Tables registered but not mirrored: their registration did not finish, so they are neither synced nor
    queryable. Each maps to the error that stopped it, whose message names the way on."""
    synced_through: datetime | None = None
    """Every change committed to the database before this instant is in the lake (waiting tables aside) and the
    lake's answer for any instant up to it is final (trigger mode; ``None`` before the first sync and in sidecar
    mode). See docs/time-travel-and-compaction.md, "History and time travel"."""

    @property
    def loop_running(self) -> bool:
        return self.loop.running


@dataclass
class _TableRecord:
    last_commit_at: datetime | None = None
    last_commit_seconds: float | None = None
    events_synced: int = 0
    last_error: ErrorInfo | None = None


@dataclass
class SyncTracker:
    """Records the outcome of every sync cycle of one lake (thread-safe)."""

    last_sync_at: datetime | None = None
    last_sync_seconds: float | None = None
    syncs: int = 0
    failing: bool = False
    last_error: ErrorInfo | None = None
    tables: dict[str, _TableRecord] = field(default_factory=dict)
    listeners: list[SyncListener] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, sync: Callable[[], SyncReport]) -> SyncReport:
        """Run one sync cycle, record what it did or how it failed, and tell the listeners."""
        started = time.perf_counter()
        try:
            report = sync()
        except Exception as exc:
            self._notify(None, self._failed(exc))
            raise
        self._succeeded(report, time.perf_counter() - started)
        self._notify(report, None)
        return report

    def add_listener(self, listener: SyncListener) -> Callable[[], None]:
        """Call ``listener`` after every cycle from now on; returns a function that removes it."""
        with self._lock:
            self.listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self.listeners:
                    self.listeners.remove(listener)

        return remove

    def _notify(self, report: SyncReport | None, error: ErrorInfo | None) -> None:
        with self._lock:
            listeners = list(self.listeners)
        for listener in listeners:
            try:
                listener(report, error)
            except Exception:  # noqa: BLE001 - an observer must never break the sync it observes
                log.exception("a sync listener failed")

    def _succeeded(self, report: SyncReport, seconds: float) -> None:
        now = datetime.now(UTC)
        with self._lock:
            self.syncs += 1
            self.failing = False
            self.last_sync_at = now
            self.last_sync_seconds = seconds
            for name, part in report.tables.items():
                committed = part.events + part.snapshot_rows
                if not committed:
                    continue
                record = self.tables.setdefault(name, _TableRecord())
                record.last_commit_at = now
                record.last_commit_seconds = part.commit_seconds
                record.events_synced += committed

    def _failed(self, exc: BaseException) -> ErrorInfo:
        info = ErrorInfo.of(exc)
        with self._lock:
            self.syncs += 1
            self.failing = True
            self.last_error = info
            table = getattr(exc, "table", None)
            if isinstance(exc, RheiError) and isinstance(table, str):
                self.tables.setdefault(table, _TableRecord()).last_error = info
        return info

    def record(self, table: str) -> _TableRecord:
        with self._lock:
            record = self.tables.get(table, _TableRecord())
            return _TableRecord(**vars(record))


def collect_status(
    tables: Mapping[str, QueryTable],
    tracker: SyncTracker,
    loop: LoopStatus | None,
    *,
    lag: LagProbe | None,
    position: int | None,
    waiting: Mapping[str, BaseException] | None = None,
    synced_through: int | None = None,
) -> SyncStatus:
    """One consistent-enough picture (each part is read once, without stopping the sync)."""
    now = now_micros()
    per_table = {}
    for name, table in sorted(tables.items()):
        changelog = table.changelog
        synced = changelog.watermark
        lag_events = lag_seconds = None
        if lag is not None:
            lag_events, oldest = lag(name, synced)
            lag_seconds = max(0.0, (now - oldest) / 1e6) if lag_events and oldest is not None else 0.0
        stats = changelog.store.stats()
        record = tracker.record(name)
        per_table[name] = TableStatus(
            table=name,
            synced_seq=synced,
            lag_events=lag_events,
            lag_seconds=lag_seconds,
            last_commit_at=record.last_commit_at,
            stored_commit_at=record.last_commit_at or _stored_commit_time(changelog),
            last_commit_seconds=record.last_commit_seconds,
            events_synced=record.events_synced,
            last_error=record.last_error,
            tail_segments=changelog.tail_segments,
            tail_rows=changelog.tail_rows,
            changelog_rows=stats.rows,
            changelog_files=stats.files,
            folded_seq=table.folded if _derived_store(table) is not None else None,
            unfolded_events=unfolded_events(table, stats.rows),
            tail_age_seconds=changelog.tail_age(),
        )
    lags = [t.lag_events for t in per_table.values() if t.lag_events is not None]
    ages = [t.lag_seconds for t in per_table.values() if t.lag_seconds is not None]
    return SyncStatus(
        tables=per_table,
        loop=loop or LoopStatus("stopped", None, 0, 0, None, None),
        synced_seq=position,
        lag_events=sum(lags) if lag is not None else None,
        lag_seconds=max(ages, default=0.0) if lag is not None else None,
        last_sync_at=tracker.last_sync_at,
        last_sync_seconds=tracker.last_sync_seconds,
        syncs=tracker.syncs,
        failing=tracker.failing,
        last_error=tracker.last_error,
        tail_age_seconds=max((t.tail_age_seconds for t in per_table.values()), default=0.0),
        waiting={name: ErrorInfo.of(error) for name, error in sorted((waiting or {}).items())},
        synced_through=from_micros(synced_through) if synced_through else None,
    )


def _stored_commit_time(changelog: Changelog) -> datetime | None:
    """The last commit another process (or an earlier run) made, for a table this process has not synced;
    ``None`` while the store cannot be reached (the status must still show the outage)."""
    try:
        stamp = changelog.last_commit_at()
    except StorageUnavailableError as exc:
        log.debug("the last commit time of a table is unknown: %s", exc)
        return None
    return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None


def _derived_store(table: QueryTable) -> TableStore | None:
    """The table folded from the change feed: ``history`` (temporal) or ``current`` (mirror), once it exists."""
    return table.current if table.mirror else table.history


def unfolded_events(table: QueryTable, stored_rows: int) -> int:
    """Change events past the folded watermark (the part merge-on-read evaluates per query).

    Without a history table every event is unfolded and the count comes from
    file statistics; with one, events past ``table.folded`` are counted.
    """
    changelog = table.changelog
    if _derived_store(table) is None or table.folded <= 0:
        return stored_rows + changelog.tail_rows
    stored = 0
    if changelog.stored_watermark > table.folded:
        stored = changelog.store.to_arrow(filter=f'"{SEQ}" > {int(table.folded)}', columns=[SEQ]).num_rows
    tail = changelog.tail_table(changelog.store.schema())
    if tail.num_rows:
        import pyarrow.compute as pc

        stored += int(pc.sum(pc.greater(tail.column(SEQ), table.folded)).as_py() or 0)
    return stored
