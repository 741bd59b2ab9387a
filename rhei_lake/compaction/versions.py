"""From change events to row versions, in SQL: the one definition the fold and the views share.

``events`` below is a relation with a table's change schema (user columns +
``_rhei_seq``, ``_rhei_op``, ``_rhei_ts``): a quoted name or a parenthesised
query. docs/design.md, "Reading": every ``I``/``U`` event opens a version that the
next event of its key closes; a ``D`` opens none.
"""

from __future__ import annotations

from rhei_lake._shared.identifiers import quote_ident as q
from rhei_lake.catalog import OP, OP_DELETE, SEQ, TS, VALID_FROM, VALID_TO, TableSpec

CLOSED_AT = "_rhei_closed_at"


def user_columns(spec: TableSpec, alias: str | None = None) -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{q(c)}" for c in spec.column_names)


def key_columns(spec: TableSpec, alias: str | None = None) -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{q(k)}" for k in spec.primary_key)


def key_match(spec: TableSpec, left: str, right: str) -> str:
    """``left.k = right.k`` for every primary-key column."""
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in spec.primary_key)


def versions_sql(spec: TableSpec, events: str) -> str:
    """The versions the events open: user columns, ``_rhei_valid_from``, ``_rhei_valid_to``, ``_rhei_seq``.

    A version's ``_rhei_valid_to`` is the time of the next event of its key, or
    NULL when the events hold none (it is still open).
    """
    return (
        f"SELECT {user_columns(spec)}, {q(TS)} AS {q(VALID_FROM)}, {q(VALID_TO)}, {q(SEQ)} FROM ("
        f"SELECT *, LEAD({q(TS)}) OVER (PARTITION BY {key_columns(spec)} ORDER BY {q(SEQ)}) AS {q(VALID_TO)} "
        f"FROM {events}) WHERE {q(OP)} <> '{OP_DELETE}'"
    )


def first_events_sql(spec: TableSpec, events: str) -> str:
    """Per key in the events, the time of its first event: when its earlier open version closes."""
    keys = key_columns(spec)
    return f"SELECT {keys}, first_value({q(TS)} ORDER BY {q(SEQ)}) AS {q(CLOSED_AT)} FROM {events} GROUP BY {keys}"


def latest_events_sql(spec: TableSpec, events: str) -> str:
    """Per key in the events, its last event (all change-schema columns)."""
    cols = ", ".join(q(c) for c in spec.changes_schema.names)
    return (
        f"SELECT {cols} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {key_columns(spec)} "
        f"ORDER BY {q(SEQ)} DESC) AS __rhei_rank FROM {events}) WHERE __rhei_rank = 1"
    )
