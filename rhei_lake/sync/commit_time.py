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
events were dated against and, with the events of a drain's final read, that
read's instant and the last sequence it saw. A final read that committed no
event is recorded alone before the lake claims its instant (the sync's
``_record_read``), or a restart would date a transaction open across it before
instants already answered. See :class:`DatingFloor`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.catalog import SEQ, TIMESTAMP_TYPE, TS


@dataclass(frozen=True)
class DatingFloor:
    """Events are dated after ``floor`` (micros) up to sequence ``through``, after ``read_at`` beyond it.

    In a process that completed a drain all three describe its final read (no
    event at or below ``through`` is left to date). After a restart they come
    from the committed cursors: ``floor`` is the newest horizon a completed
    drain reached (every event after that drain's reads was committed after
    it), ``read_at``/``through`` the newest final read recorded (every change
    committed before ``read_at`` has a sequence up to ``through``, whether or not
    the drain that read it finished committing).
    """

    floor: int = 0
    read_at: int = 0
    through: int = 0

    @classmethod
    def after_read(cls, read_at: int, through: int) -> DatingFloor:
        return cls(read_at, read_at, through)

    def apply(self, events: pa.Table) -> pa.Table:
        """``events`` with each ``_rhei_ts`` raised to at least its floor + 1 µs."""
        if events.num_rows == 0 or max(self.floor, self.read_at) <= 0:
            return events
        index = events.schema.get_field_index(TS)
        field = events.schema.field(index)
        micros = events.column(index).cast(pa.int64())  # no timestamp kernel for max_element_wise
        floor = pa.scalar(self.floor + 1, pa.int64())
        if self.read_at > self.floor:
            later = pc.greater(events.column(SEQ), pa.scalar(self.through, pa.int64()))
            floor = pc.if_else(later, pa.scalar(self.read_at + 1, pa.int64()), floor)
        raised = pc.max_element_wise(micros, floor)
        return events.set_column(index, field, raised.cast(TIMESTAMP_TYPE).cast(field.type))

    def cursor(self, final_read: tuple[int, int] | None) -> str | None:
        """What to commit with events dated by this floor; ``final_read`` is ``(read_at, through)`` when they
        come from a drain's final read."""
        record: dict[str, int] = {"floor": self.floor} if self.floor > 0 else {}
        if final_read is not None:
            record["read_at"], record["through"] = final_read
        return json.dumps(record) if record else None

    @classmethod
    def committed(cls, cursors: Iterable[str | None]) -> DatingFloor:
        """The floor a restarted process dates events by, from the cursors committed with the last events."""
        floor, newest = 0, (0, 0)
        for cursor in cursors:
            record = _record(cursor)
            floor = max(floor, record.get("floor", 0))
            if record.get("read_at", 0) > newest[0]:
                newest = (record["read_at"], record.get("through", 0))
        read_at, through = newest
        if read_at <= floor:
            return cls(floor, floor, 0)
        return cls(floor, read_at, through)


def _record(cursor: str | None) -> dict[str, int]:
    if not cursor:
        return {}
    try:
        record = json.loads(cursor)
    except ValueError:
        return {}
    if not isinstance(record, dict):
        return {}
    return {k: v for k, v in record.items() if isinstance(v, int) and not isinstance(v, bool)}
