"""The names a mirrored table is queried by, and names that would hide one another.

Every mirrored table ``t`` is three relations: ``t`` (current rows),
``t_history`` (its versions) and ``t_changes`` (its change feed). SQL folds
unquoted names to lower case (and the query engine registers a lower-case alias
for every name that is not), so two relations clash when their names are equal
ignoring case: tables ``x`` and ``x_changes`` both claim ``x_changes``, and so
do ``X`` and ``x_Changes``. Mirroring a table whose names clash with another's
is refused; a lake that holds such tables already (written before the check
existed) answers neither relation under the shared name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rhei_lake.errors import SchemaError

RELATIONS: tuple[tuple[str, str], ...] = (("", "rows"), ("_history", "history"), ("_changes", "change feed"))
"""Each relation of a table: the suffix of its name and what it holds."""


def relation_names(table: str) -> list[tuple[str, str]]:
    """``(name, what)`` of each relation of ``table``."""
    return [(f"{table}{suffix}", what) for suffix, what in RELATIONS]


@dataclass(frozen=True)
class NameClash:
    """One query name (lower case) that relations of two tables claim."""

    name: str
    claims: tuple[tuple[str, str], ...]
    """``(table, what)`` for each relation claiming the name."""

    def describe(self) -> str:
        owners = [
            f"table {table!r}" if what == "rows" else f"the {what} of table {table!r}" for table, what in self.claims
        ]
        return f"{self.name!r} names both {' and '.join(owners)}"


def name_clashes(tables: Iterable[str]) -> list[NameClash]:
    """The query names that relations of more than one of ``tables`` claim (ignoring case)."""
    claims: dict[str, list[tuple[str, str]]] = {}
    for table in tables:
        for name, what in relation_names(table):
            claims.setdefault(name.lower(), []).append((table, what))
    return [NameClash(name, tuple(owners)) for name, owners in sorted(claims.items()) if len(owners) > 1]


def check_new_table(name: str, others: Iterable[str]) -> None:
    """Raise :class:`SchemaError` if mirroring ``name`` beside the tables ``others`` would make names clash."""
    others = [t for t in others if t != name]
    clash = next((c for c in name_clashes([*others, name]) if any(t == name for t, _ in c.claims)), None)
    if clash is None:
        return
    other = next(t for t, _ in clash.claims if t != name)
    raise SchemaError(
        f"table {name!r} cannot be mirrored beside table {other!r}: {clash.describe()} (query names ignore case), "
        f"so one would hide the other. Rename one of them first (ALTER TABLE ... RENAME TO ...)"
    )


def tables_named(sql: str, tables: Iterable[str]) -> list[str]:
    """Which of ``tables`` ``sql`` reads a relation of (``t``, ``t_history`` or ``t_changes``), in ``tables`` order.

    Names are matched as the query engine resolves them: unquoted ignoring case,
    quoted exactly (or as the lower-case alias of a mixed-case name). SQL that
    cannot be parsed names none here; the engine then says which name it misses.
    """
    from sqlglot import exp, parse
    from sqlglot.errors import SqlglotError

    try:
        statements = [s for s in parse(sql) if s is not None]
    except SqlglotError:
        return []
    named: set[str] = set()
    for statement in statements:
        local = {cte.alias_or_name.lower() for cte in statement.find_all(exp.CTE)}  # WITH t AS (...) hides table t
        for node in statement.find_all(exp.Table):
            ident = node.args.get("this")
            if isinstance(ident, exp.Identifier) and ident.this.lower() not in local:
                named.add(ident.this if ident.quoted else ident.this.lower())
    found = []
    for table in tables:
        for name, _ in relation_names(table):
            if name in named or name.lower() in named:
                found.append(table)
                break
    return found
