"""Which relations a query names, so only the tables it reads are refreshed and registered.

Read from the SQL text once per distinct statement (a dashboard repeats its
statements, so the parse is cached). Over-approximates: CTE names and
qualified names count by their last part, compared case-insensitively; what
cannot be read reports ``None``, meaning "every table".
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

PARTS = ("current", "history", "changes")
"""The relations of a mirrored table ``t``: ``t``, ``t_history``, ``t_changes``."""

_SUFFIXES = {"history": "_history", "changes": "_changes"}
_UNPARSED_COMMANDS = frozenset({"SHOW", "DESCRIBE", "DESC"})


@functools.lru_cache(maxsize=4096)
def referenced_names(sql: str) -> frozenset[str] | None:
    """The lower-cased names of the relations ``sql`` reads, or ``None`` if that cannot be told."""
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import SqlglotError

    dialect = Dialect.get_or_raise(None)
    try:
        tokens = dialect.tokenize(sql)
        if not tokens or tokens[0].text.upper() in _UNPARSED_COMMANDS:
            return None
        if tokens[0].text.upper() == "EXPLAIN":
            tokens = tokens[1:]
            while tokens and tokens[0].text.upper() in ("ANALYZE", "VERBOSE"):
                tokens = tokens[1:]
        statements = [s for s in dialect.parser().parse(tokens, sql) if s is not None]
    except (SqlglotError, ValueError, RecursionError):
        return None
    names: set[str] = set()
    for statement in statements:
        if not isinstance(statement, exp.Query):
            return None
        for table in statement.find_all(exp.Table):
            if not table.name:
                return None  # a table function or something sqlglot cannot name
            names.add(table.name.lower())
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
