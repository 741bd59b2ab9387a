"""Which relations a query may read, so only those tables are looked at and brought forward.

A scan of the SQL text for identifiers, not a parse (a parse costs ~0.2 ms,
as much as a point lookup on a table held in memory, and queries with literal
keys rarely repeat their text). It over-approximates, which is safe: every
identifier counts (column names, words in strings and comments too), compared
case-insensitively, so a table is at worst brought forward when it need not
be. Statements that list relations without naming them (``SHOW``,
``DESCRIBE``, ``information_schema``) report ``None``, meaning every table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

PARTS = ("current", "history", "changes")
"""The relations of a mirrored table ``t``: ``t``, ``t_history``, ``t_changes``."""

_SUFFIXES = {"history": "_history", "changes": "_changes"}
_IDENTIFIER = re.compile(r'"((?:[^"]|"")*)"|`([^`]*)`|([^\W\d]\w*)')
_EVERY_TABLE = frozenset({"show", "describe", "desc", "information_schema"})


@functools.lru_cache(maxsize=4096)
def referenced_names(sql: str) -> frozenset[str] | None:
    """The lower-cased identifiers in ``sql`` (a superset of the relations it reads), or ``None`` for all."""
    names = set()
    for match in _IDENTIFIER.finditer(sql):
        quoted, backquoted, bare = match.groups()
        names.add((bare if bare is not None else (quoted or backquoted or "").replace('""', '"')).lower())
    if names & _EVERY_TABLE:
        return None
    return frozenset(names)


def referenced_parts(sql: str, tables: Iterable[str]) -> dict[str, set[str]] | None:
    """Per mirrored table ``sql`` may read, the parts it names (see :data:`PARTS`); ``None``: all of every table."""
    names = referenced_names(sql)
    if names is None:
        return None
    return parts_named(names, tables)


def parts_named(names: Iterable[str], tables: Iterable[str]) -> dict[str, set[str]]:
    """Per table of ``tables``, the parts among ``names`` (lower-cased relation names)."""
    wanted = set(names)
    out: dict[str, set[str]] = {}
    for table in tables:
        low = table.lower()
        parts = {"current"} if low in wanted else set()
        parts.update(part for part, suffix in _SUFFIXES.items() if low + suffix in wanted)
        if parts:
            out[table] = parts
    return out


def every_part(tables: Mapping[str, object] | Iterable[str]) -> dict[str, set[str]]:
    return {table: set(PARTS) for table in tables}
