"""Rows the polling cursor passes over because their ``updated_at`` is spelled unlike the cursor's.

The cursor compares ``updated_at`` as the source orders it (SQLite: numbers,
then text by bytes), so that an index serves the poll. When an application
writes ``updated_at`` in more than one spelling (``' '`` or ``'T'``, offsets,
``Z``, fractions of different lengths, epoch numbers beside text), a row
written after the last poll can sort before the cursor while its instant is
not before anything the sidecar has read. After every poll's read,
:func:`catch_up_unordered` asks the source for such rows
(:meth:`~rhei_lake.capture.polled_source.PolledSource.read_unordered`: index
ranges around the cursor, see :mod:`rhei_lake.capture.updated_at_order`), keeps
those whose instant is at or after the time the sidecar had reached when the
poll began, and commits their current state like any polled row, the cursor
unchanged. So no row waits for the periodic key scan because of how its time is
spelled; like any polled row, it must carry a time no earlier than the rows
read before it was written (a row written with an older time is a late row,
which the key scan catches).

The time reached (:attr:`UnorderedWatch.reached`) is the newest instant the
cursor or a catch-up has stood on, kept in memory; a new process starts from
the cursor's instant, which is never later (it only re-reads a few rows and
finds nothing to do). Repeated polls stay cheap: nothing is read when the
source has committed nothing since the last successful look (SQLite's
``data_version``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.polled_source import PolledSource
from rhei_lake.sync.polled_events import updated_at_micros

if TYPE_CHECKING:
    from rhei_lake.sync.polling_sync import PolledTableSync

log = logging.getLogger("rhei_lake.sync")


@dataclass
class UnorderedWatch:
    """One table's catch-up state: the time reached, and what the last successful look saw."""

    reached: int | None = None  # UTC micros: no row written after the last poll is older
    counter: int | None = None  # the source's commit counter at the last successful look
    warned: bool = False

    def since(self, cursor: PollCursor | None, unit: str) -> int | None:
        """The time reached as a poll begins (``None`` before anything was read)."""
        if self.reached is not None:
            return self.reached
        return None if cursor is None else updated_at_micros(cursor.updated_at, unit)


def catch_up_unordered(table: PolledTableSync, source: PolledSource, since: int | None) -> int:
    """Commit the rows that sort before the cursor although their instant is at or after ``since``
    (the time reached as the poll began); returns the events committed."""
    cursor = table.cursor()
    if cursor is None:
        return 0
    unit = table.plan.table.epoch_unit
    instant = updated_at_micros(cursor.updated_at, unit)  # a committed cursor's updated_at was read
    floor = instant if since is None else since
    watch = table.unordered
    counter = source.commit_counter()
    if counter is not None and counter == watch.counter:
        watch.reached = max(floor, instant)
        return 0
    keys: list[tuple] = []
    examples: list[object] = []
    newest = max(floor, instant)
    for updated_at, *key in source.read_unordered(table.plan, cursor, floor):
        try:
            ts: int | None = updated_at_micros(updated_at, unit)
        except (ValueError, OverflowError, TypeError):
            ts = None  # the event builder names the value it cannot read
        if ts is None or ts >= floor:
            keys.append(tuple(key))
            examples.append(updated_at)
            newest = max(newest, ts if ts is not None else newest)
    committed = table.catch_up(source, list(dict.fromkeys(keys)), table.clock(cursor))
    watch.counter, watch.reached = counter, newest
    if committed and not watch.warned:
        watch.warned = True
        log.warning(
            "table %r: %d rows sorted before the cursor %r although not older than it: column %r holds times "
            "in more than one spelling (e.g. %r). They were caught up; one spelling for every writer keeps "
            "polls cheapest", table.name, committed, cursor.updated_at, table.plan.table.updated_at, examples[0],
        )
    return committed
