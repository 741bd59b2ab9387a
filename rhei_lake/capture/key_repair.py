"""Keys that must stay distinct: judging a correction of a captured key before it lands (issue 14, item 5).

A primary-key value SQLite stores in a spelling the lake refuses (``'2026-01-01T10:00:00'``
for a ``DATETIME`` key) stops the sync at its event, and ``Lake.repair_event`` corrects
the event. A correction of a key column decides which lake row the event writes, so it
must never make two SQLite rows one lake row. It is judged against everything that
decides that, and refused when:

* **the chain breaks**: following the lake's row at the corrected key through the
  events not yet synced (the corrected one, and every other event of the table whose
  key reads as the same lake value in any spelling), an insert would meet a live row,
  or an update or delete a missing one: two rows would share the key;
* **the end disagrees with SQLite**: after those events the lake holds a row at the
  key exactly when SQLite holds one with that key in its canonical spelling. A row
  still stored under another spelling would let the application insert the canonical
  one beside it, and no later event could tell the two apart.

The same judgement picks the words of the error that stops the sync: the way on it
names is one that this check accepts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rhei_lake.capture import cdc_log
from rhei_lake.capture.events import FREE_KEY, key_collision
from rhei_lake.capture.sqlite_schema import column_of, quote_ident
from rhei_lake.capture.types import (
    ValueMismatch,
    canonical_stored,
    column_affinity,
    key_misfit,
    same_stored,
    to_arrow,
)
from rhei_lake.catalog import TableSpec
from rhei_lake.errors import TypeMismatchError

LakeKeys = Callable[[str, list[tuple]], set[tuple]]
"""``lake_keys(table, keys)``: which of ``keys`` (lake values in primary-key order) the lake's current rows of
``table`` hold."""

__all__ = ["FREE_KEY", "LakeKeys", "collision_problem", "explain_key_error", "repair_problem", "touches_key"]

UNKNOWN = None
"""The key of an event whose stored key the lake refuses: unknown until it is corrected."""


def lake_key(spec: TableSpec, values: Sequence[Any]) -> tuple | None:
    """The lake value of the key of a row image (values in ``spec`` order), as the sync reads it: ``None`` if a
    key value does not convert, or is not in its canonical spelling (the event will stop the sync)."""
    key = []
    for name in spec.primary_key:
        column = spec.column(name)
        value = values[spec.column_names.index(name)]
        if value is None:
            return None
        try:
            array = to_arrow([value], column.arrow_type)
        except ValueMismatch:
            return None
        if key_misfit([value], array, column.arrow_type, column_affinity(spec, column)) is not None:
            return None
        key.append(array[0].as_py())
    return tuple(key)


def _canonical(spec: TableSpec, key: tuple) -> list[Any]:
    """What SQLite stores for ``key``'s columns when the key is written in its canonical spelling."""
    return [
        canonical_stored(value, spec.column(name).arrow_type, column_affinity(spec, spec.column(name)))
        for name, value in zip(spec.primary_key, key)
    ]


def _holds(conn: sqlite3.Connection, spec: TableSpec, stored: Sequence[Any]) -> bool:
    """Whether SQLite's table holds a row whose key columns store exactly ``stored`` (same class, same bytes)."""
    names = ", ".join(column_of(spec.name, k) for k in spec.primary_key)
    where = " AND ".join(f"{column_of(spec.name, k)} = ?" for k in spec.primary_key)
    rows = conn.execute(f"SELECT {names} FROM {quote_ident(spec.name)} WHERE {where}", tuple(stored)).fetchall()
    return any(all(same_stored(a, b) for a, b in zip(row, stored)) for row in rows)


def _describe(spec: TableSpec, key: tuple) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in zip(spec.primary_key, _canonical(spec, key)))


def repair_problem(
    conn: sqlite3.Connection,
    spec: TableSpec,
    seq: int,
    patched: Sequence[Any],
    *,
    synced: int,
    slots: int,
    lake_keys: LakeKeys,
) -> str | None:
    """Why giving event ``seq`` the row image ``patched`` would make two SQLite rows one lake row, or ``None``.

    Every key the table's events after ``synced`` (its synced watermark: the lake's
    rows hold every event up to it) write is followed from the lake's rows through
    those events, the corrected one with its new image. An event whose key the lake
    refuses is not corrected yet, so its key is unknown: after it a key's state is
    unknown until an insert or delete of it sets it again, and the correction of that
    event is judged the same way once it is made. Run inside a transaction on
    ``conn``, so the log and the table are read as one state.
    """
    events = []
    for row in cdc_log.table_events(conn, spec.name, synced, slots):
        image = patched if row[0] == seq else row[4 : 4 + len(spec.columns)]
        events.append((row[0], row[2], lake_key(spec, image)))
    target = lake_key(spec, patched)
    if target is None:
        return None  # not a key the lake takes: converting the event refuses it
    keys = list(dict.fromkeys([target, *(key for _, _, key in events if key is not UNKNOWN)]))
    held_by_lake = lake_keys(spec.name, keys)
    for key in keys:
        problem = _chain_problem(conn, spec, key, key in held_by_lake, events, seq)
        if problem is not None:
            return problem
    return None


def _chain_problem(
    conn: sqlite3.Connection, spec: TableSpec, key: tuple, alive: bool | None, events: list[tuple], seq: int
) -> str | None:
    """``key``'s row from the lake (``alive``: the lake holds it) through ``events``: inserts only when absent,
    updates and deletes only when present, and at the end present exactly when SQLite holds the key in its
    canonical spelling (``alive`` is ``None`` while an uncorrected event leaves it unknown)."""
    shown = _describe(spec, key)
    for event_seq, op, event_key in events:
        if event_key is UNKNOWN:
            alive = None
            continue
        if event_key != key:
            continue
        what = "the corrected event" if event_seq == seq else f"event {event_seq}"
        if op == "I" and alive:
            return f"{what} would insert the row ({shown}) while the lake holds another row with that key"
        if op in ("U", "D") and alive is False:
            verb = "update" if op == "U" else "delete"
            return f"{what} would {verb} the row ({shown}) while the lake holds no row with that key"
        alive = op != "D"
    if alive is None:
        return None
    held = _holds(conn, spec, _canonical(spec, key))
    if alive and not held:
        return (
            f"after the captured events the lake would hold a row ({shown}), but SQLite holds no row with that key "
            "in its canonical spelling: the row still has another spelling, which leaves room for a second row"
        )
    if held and not alive:
        return f"after the captured events the lake would hold no row ({shown}), but SQLite holds one"
    return None


def collision_problem(conn: sqlite3.Connection, spec: TableSpec, error: TypeMismatchError) -> bool:
    """Whether a key refused for its spelling has a twin: SQLite holds the row at the refused spelling and
    another row at the canonical one (so storing the key canonically fails on SQLite's UNIQUE)."""
    original = [error.primary_key[k] for k in spec.primary_key] if error.primary_key else None
    if original is None or error.canonical is None:
        return False
    canonical = [error.canonical if k == error.column else v for k, v in zip(spec.primary_key, original)]
    return _holds(conn, spec, original) and _holds(conn, spec, canonical)


def explain_key_error(
    conn: sqlite3.Connection,
    spec: TableSpec,
    error: TypeMismatchError,
    *,
    database: str,
    synced: int,
    slots: int,
    lake_keys: LakeKeys,
) -> TypeMismatchError:
    """``error`` (a key refused for its spelling), or the same stop worded as a collision when the way on it
    names (store the key canonically, correct the event to it) cannot succeed."""
    if error.canonical is None or not error.primary_key:
        return error
    twin = collision_problem(conn, spec, error)
    if not twin and error.seq is not None and not _holds(conn, spec, [error.primary_key[k] for k in spec.primary_key]):
        # The row no longer holds the refused spelling: would a correction to the canonical key hold?
        row = cdc_log.read_event(conn, error.seq, slots)
        if row is not None:
            patched = list(row[4 : 4 + len(spec.columns)])
            patched[spec.column_names.index(error.column)] = error.canonical
            problem = repair_problem(conn, spec, error.seq, patched, synced=synced, slots=slots, lake_keys=lake_keys)
            twin = problem is not None
    if not twin:
        return error
    return key_collision(spec, error, database=database)


def touches_key(spec: TableSpec, values: Mapping[str, Any]) -> bool:
    """Whether a correction sets a primary-key column."""
    return any(name in spec.primary_key for name in values)
