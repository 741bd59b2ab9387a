"""Rows the polling cursor passes over because their ``updated_at`` is spelled unlike the cursor's.

The cursor compares ``updated_at`` as the source orders it (SQLite: numbers,
then text by bytes), so that an index serves the poll. When an application
writes ``updated_at`` in more than one spelling (``' '`` or ``'T'``, offsets,
``Z``, fractions of different lengths, epoch numbers beside text), a row
written after the last poll can sort before the cursor while its instant is
not before anything the sidecar had read. So each poll's read also returns,
from the same snapshot and before the rows after the cursor, the rows that sort
before the cursor although their instant may be at or after the time the
sidecar has reached (:class:`~rhei_lake.capture.polled_source.ChangeRead`: index
ranges around the cursor, see :mod:`rhei_lake.capture.updated_at_order`).
:func:`catch_up_unordered` keeps those whose instant is at or after that time
and commits their current state like any polled row, the cursor unchanged. So
no row waits for the periodic key scan because of how its time is spelled; like
any polled row, it must carry a time no earlier than the rows that were read
before it was written (a row written with an older time is a late row, which the
key scan catches).

The time reached (:attr:`UnorderedWatch.reached`) is the newest instant of a row
a poll's snapshot held (the cursor it ended on, the unordered rows it caught): a
row written after that snapshot is not older. It is kept in memory; a new
process starts from the cursor's instant, which is never later (it re-reads a
few rows and finds nothing to do). Repeated polls stay cheap: the ranges are not
read when the source has committed nothing since the last successful look
(SQLite's ``data_version``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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

    reached: int | None = None  # UTC micros: no row written after the last poll's snapshot is older
    counter: int | None = None  # the source's commit counter before the last successful look
    warned: bool = False

    def look_since(self, cursor: PollCursor | None, unit: str, counter: int | None) -> int | None:
        """The time to read unordered rows from as a poll begins; ``None``: nothing to look for
        (no cursor yet, or the source committed nothing since the last successful look)."""
        if cursor is None or (counter is not None and counter == self.counter):
            return None
        if self.reached is not None:
            return self.reached
        return updated_at_micros(cursor.updated_at, unit)  # a committed cursor's updated_at was read


def catch_up_unordered(
    table: PolledTableSync, source: PolledSource, unordered: Sequence[tuple], since: int, cursor: PollCursor
) -> int:
    """Commit the current state of the ``unordered`` rows (``(updated_at, *key)``, read from the
    poll's snapshot) whose instant is at or after ``since``; returns the events committed."""
    unit = table.plan.table.epoch_unit
    keys: list[tuple] = []
    examples: list[object] = []
    newest = since
    for updated_at, *key in unordered:
        try:
            ts: int | None = updated_at_micros(updated_at, unit)
        except (ValueError, OverflowError, TypeError):
            ts = None  # the event builder names the value it cannot read
        if ts is None or ts >= since:
            keys.append(tuple(key))
            examples.append(updated_at)
            newest = max(newest, ts if ts is not None else newest)
    committed = table.catch_up(source, list(dict.fromkeys(keys)), table.clock(cursor))
    table.unordered.reached = max(table.unordered.reached or newest, newest)
    if committed and not table.unordered.warned:
        table.unordered.warned = True
        log.warning(
            "table %r: %d rows sorted before the cursor %r although not older than it: column %r holds times "
            "in more than one spelling (e.g. %r). They were caught up; one spelling for every writer keeps "
            "polls cheapest",
            table.name,
            committed,
            cursor.updated_at,
            table.plan.table.updated_at,
            examples[0],
        )
    return committed
