"""Where SQLite's order of ``updated_at`` values and the order of their instants part ways.

The polling cursor reads rows after ``(updated_at, key)`` in SQLite's own order,
so that an index on ``updated_at`` serves every poll. SQLite orders stored
values without reading them as times: NULL, then numbers, then text by its
bytes. Among text values *spelled alike* (the same characters, except the
digits of the date and time) that is the order of their instants. Between
spellings it is not: ``'2026-01-02 11:00'`` sorts before ``'2026-01-02T10:00'``,
``'…10:00:00Z'`` after ``'…10:00:00.5Z'``, a value with an offset by its local
time, and every number before every text. A row written later in another
spelling than the cursor's can sort *before* the cursor while its instant is
after it: the poll would pass over it.

:func:`unordered_sql` finds those rows without reading the table whole. Take
the text cursor ``c`` a poll starts from, at instant ``I``, and a time ``T >= I``
that every row written since the last poll's snapshot has reached. A row whose
instant is at or after ``T`` but sorts before ``c`` is one of

* NULL (unreadable: reported by the event builder);
* a number of at least ``T`` in the table's epoch unit;
* text that starts with a character below ``'0'`` (a leading blank): no time the
  lake reads, so the next poll reports it instead of the key scan, much later;
* text between the local date ``T - 24h`` and ``c`` that is not spelled like ``c``:
  date/time text (``YYYY-MM-DD`` first) whose instant is at or after ``T`` has a
  local date no earlier than ``T - 24h`` (an offset is less than a day), so it
  sorts at or after that date; text spelled like ``c`` that sorts before ``c`` is
  earlier than ``I`` (or ``c`` itself, a tie the key order settles).

Each is an index range (the last one filtered by ``GLOB`` on the index entries),
so a poll costs the index entries of the rows with an ``updated_at`` within a
day or two before the cursor, not the table (0.2-1 us each). Other text
(an epoch number stored as text, garbage) that sorts below that window is no
time the lake reads: the periodic key scan reports it. A numeric cursor needs
only the NULL range: text sorts after every number, and numbers compare by value.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

_DIGITS = frozenset("0123456789")
_TIME_CHARS = _DIGITS | frozenset(":.")
_GLOB_SPECIAL = frozenset("*?[")
_UNIT_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1}
_LONGEST_OFFSET = timedelta(hours=24)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _literal(ch: str) -> str:
    return f"[{ch}]" if ch in _GLOB_SPECIAL else ch


def _starts_with_date(text: str) -> bool:
    """Whether ``text`` starts with ``YYYY-MM-DD`` (as every date/time text the lake reads does)."""
    digits = (0, 1, 2, 3, 5, 6, 8, 9)
    return len(text) >= 10 and text[4] == text[7] == "-" and all(text[i] in _DIGITS for i in digits)


def spelling_glob(text: str) -> str:
    """A ``GLOB`` pattern matching the values spelled like ``text``.

    The digits of the date and the time may differ; everything else must be the
    same: the separator, the time's layout and the length of its fraction, the
    zone (``Z``, an offset: its digits too). Values spelled alike sort as their
    instants do. The date's and the clock's digits are ``?`` (several times
    cheaper to match than ``[0-9]``): where the pattern's ``-`` and ``:`` stand,
    text the lake reads as a time has a digit in those places. The fraction's are
    ``[0-9]``: a shorter fraction and a zone could fill them (``.1-05:00`` beside
    ``.1234560``). Text that does not start with a date matches only itself.
    """
    if not _starts_with_date(text):
        return "".join(_literal(ch) for ch in text)
    end = 11  # the separator (position 10) is kept as it is
    while end < len(text) and text[end] in _TIME_CHARS:
        end += 1
    fraction = text.find(".", 11, end)
    out = []
    for i, ch in enumerate(text):
        if ch in _DIGITS and (i < 10 or 10 < i < end):
            out.append("[0-9]" if 0 <= fraction < i else "?")
        else:
            out.append(_literal(ch))
    return "".join(out)


def earliest_local_date(instant: int) -> str:
    """``YYYY-MM-DD``: no ISO text for an instant at or after ``instant`` (UTC micros) sorts before it."""
    try:
        day = (_EPOCH + timedelta(microseconds=instant) - _LONGEST_OFFSET).date()
    except OverflowError:
        return ""
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def unordered_sql(
    relation: str, updated_at: str, keys: Sequence[str], cursor_value: Any, instant: int, unit: str
) -> tuple[str, tuple[Any, ...]]:
    """``SELECT updated_at, *keys`` of the rows that may sort before a cursor at ``cursor_value``
    although their instant is at or after ``instant`` (the time reached, never before the
    cursor's own; a superset: the caller reads their instants).

    ``updated_at`` is the quoted column; ``keys`` are the key columns' select expressions.
    """
    columns = ", ".join((updated_at, *keys))

    def select(where: str) -> str:
        return f"SELECT {columns} FROM {relation} WHERE {where}"

    parts = [select(f"{updated_at} IS NULL")]
    params: list[Any] = []
    if isinstance(cursor_value, str):
        # `< ''` keeps the range to numbers; a TEXT column (which stores none) turns it empty.
        parts.append(select(f"{updated_at} >= ? AND {updated_at} < ''"))
        params.append(instant // _UNIT_MICROS[unit])
        # Not `< '0'`: a numeric column would compare with the number 0 (SQLite's affinity rules).
        parts.append(select(f"{updated_at} >= '' AND {updated_at} < '0!'"))
        parts.append(select(f"{updated_at} >= ? AND {updated_at} < ? AND NOT ({updated_at} GLOB ?)"))
        params += [earliest_local_date(instant), cursor_value, spelling_glob(cursor_value)]
    return " UNION ALL ".join(parts), tuple(params)
