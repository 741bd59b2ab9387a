"""When a captured change happened: no earlier than the last read of the CDC log that missed it.

A trigger runs at its statement and cannot see when (or whether) the
transaction commits, so ``_rhei_ts`` starts as the statement's time. Left at
that, a transaction still open while a sync read the log would later be dated
before that read: an instant the lake had already answered for would change
its answer (time travel would not be repeatable).

SQLite has one writer at a time and a transaction holds the write lock from its
first write to its commit, so sequence numbers are handed out in commit order.
A read of the log that reached its end (returned less than a full batch) saw
every change committed before the read began; whatever a later read finds was
committed after that instant. So each event is dated no earlier than just after
the *horizon*, the instant the last complete drain's final read began::

    _rhei_ts = max(statement time, horizon + 1 µs)

Every change is then dated in ``(previous read, commit]``, and the lake's
answer for any instant up to its horizon is final. Within that window a
transaction's writes show at their statements' times, as the writing
connection saw them, although others saw them only at the commit: that is the
precision left (docs/time-travel-and-compaction.md, "History and time travel").

What a restarted process must know is committed with the events, as the
changelog's cursor (which trigger mode does not otherwise use): the floor the
events were dated against and every final read they were dated by, including,
with the events of a drain's final read, that read's instant and the last
sequence it saw. A final read that committed no event is recorded alone before
the lake claims its instant (the sync's ``_record_read``), or a restart would
date a transaction open across it before instants already answered. A process
that restarts dates by every read any record names, not only the newest: a
sync that committed one table's part of a transaction and then crashed leaves
its own read in that table's cursor, and the other tables' parts must still be
dated after the read recorded before it. Unregistering a table records the
floor alone as well: the reads claimed last may be carried by that table's
events only, and its cursor is no longer read. See :class:`DatingFloor`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeGuard

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.catalog import SEQ, TIMESTAMP_TYPE, TS

Read = tuple[int, int]
"""``(read_at, through)``: a read of the CDC log that reached its end began at ``read_at`` (micros) and saw
sequences up to ``through``; every change with a later sequence was committed after ``read_at``."""


@dataclass(frozen=True)
class DatingFloor:
    """Events are dated after ``floor`` (micros), and after the ``read_at`` of each read in ``reads`` whose
    ``through`` is below their sequence.

    In a process that completed a drain, ``floor`` is that drain's horizon and
    ``reads`` is empty (no event at or below its final read's ``through`` is left
    to date). After a restart both come from the committed cursors: ``floor`` is
    the newest horizon a completed drain reached (every event after that
    drain's reads was committed after it), ``reads`` every final read recorded,
    whether or not the drain that read it finished committing. Each read stays
    a true fact for good, so keeping every one a record names is never wrong;
    reads that another one dominates (an earlier instant for the same or more
    sequences) or that the floor covers are dropped.
    """

    floor: int = 0
    reads: tuple[Read, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "reads", _essential(self.floor, self.reads))

    @property
    def newest(self) -> int:
        """The latest instant this floor dates any event after."""
        return max([self.floor, *(read_at for read_at, _ in self.reads)])

    @classmethod
    def after_read(cls, horizon: int) -> DatingFloor:
        """The floor after a drain that completed at ``horizon`` (its final read's instant, or an older floor)."""
        return cls(horizon)

    def apply(self, events: pa.Table) -> pa.Table:
        """``events`` with each ``_rhei_ts`` raised to at least its floor + 1 µs."""
        if events.num_rows == 0 or (self.floor <= 0 and not self.reads):
            return events
        index = events.schema.get_field_index(TS)
        field = events.schema.field(index)
        micros = events.column(index).cast(pa.int64())  # no timestamp kernel for max_element_wise
        floor: pa.Array | pa.Scalar = pa.scalar(self.floor + 1 if self.floor > 0 else -(2**63), pa.int64())
        seqs = events.column(SEQ)
        for read_at, through in self.reads:  # few: one per record at most
            later = pc.greater(seqs, pa.scalar(through, pa.int64()))
            floor = pc.if_else(later, pc.max_element_wise(floor, pa.scalar(read_at + 1, pa.int64())), floor)
        raised = pc.max_element_wise(micros, floor)
        return events.set_column(index, field, raised.cast(TIMESTAMP_TYPE).cast(field.type))

    def cursor(self, final_read: Read | None) -> str | None:
        """What to commit with events dated by this floor; ``final_read`` is ``(read_at, through)`` when they
        come from a drain's final read."""
        record: dict[str, object] = {"floor": self.floor} if self.floor > 0 else {}
        reads = list(self.reads)
        if final_read is not None:
            # The newest read under the keys older versions read, the others beside it.
            record["read_at"], record["through"] = final_read
        elif reads:
            record["read_at"], record["through"] = reads.pop()
        if reads:
            record["reads"] = [list(read) for read in reads]
        return json.dumps(record) if record else None

    @classmethod
    def committed(cls, cursors: Iterable[str | None]) -> DatingFloor:
        """The floor a restarted process dates events by, from the cursors committed with the last events."""
        floor, reads = 0, []
        for cursor in cursors:
            record_floor, record_reads = _record(cursor)
            floor = max(floor, record_floor)
            reads += record_reads
        return cls(floor, tuple(reads))


def _essential(floor: int, reads: Iterable[Read]) -> tuple[Read, ...]:
    """``reads`` without those the floor or another read makes redundant, by ``through`` (and instant)."""
    kept: list[Read] = []
    for read_at, through in sorted(set(reads), key=lambda read: (read[1], -read[0])):
        if read_at > floor and (not kept or read_at > kept[-1][0]):
            kept.append((read_at, through))
    return tuple(kept)


def _record(cursor: str | None) -> tuple[int, list[Read]]:
    """A cursor's floor and reads; anything malformed counts as absent."""
    if not cursor:
        return 0, []
    try:
        record = json.loads(cursor)
    except ValueError:
        return 0, []
    if not isinstance(record, dict):
        return 0, []
    floor = record.get("floor")
    listed = record.get("reads")
    reads = [(record.get("read_at"), record.get("through", 0))]
    reads += [tuple(r) for r in listed if _pair(r)] if isinstance(listed, list) else []
    return (floor if _integer(floor) else 0), [(a, t) for a, t in reads if _integer(a) and _integer(t)]


def _pair(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2


def _integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
