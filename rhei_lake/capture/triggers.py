"""The CDC triggers: every change of a table is appended to ``_rhei_cdc_log``.

Row images go into the log's untyped value columns ``c0..cN`` (column ``i`` of
the table into ``c<i>``). A column without a declared type stores every value
exactly as SQLite holds it, so a REAL keeps all 64 bits (``json_object`` would
print 15 significant digits and lose most doubles).

* INSERT → ``I`` with the new image.
* UPDATE that keeps the primary key → ``U`` with the new image; an UPDATE that
  changes nothing is not an event.
* UPDATE that changes the primary key → ``D`` of the old image, then ``I``.
* DELETE → ``D`` with the last image.

Old and new values are compared byte for byte whatever the column's collation
(``NOCASE``, ``RTRIM`` or one the application registers): ``COLLATE BINARY``,
plus the storage class where the column's affinity lets ``1`` and ``1.0`` both
be stored. ``0.0`` and ``-0.0`` compare equal in SQL and nothing in core SQLite
tells them apart, so where a column can hold a negative zero (no affinity) an
update that leaves a real zero is logged as changed: a redundant ``U``, never a
lost one.

Rows deleted by ``REPLACE`` conflict resolution fire no delete trigger unless
the *writing* connection has ``PRAGMA recursive_triggers`` on. So a table with
unique indexes besides its primary key gets guard triggers that do not depend
on it: BEFORE INSERT/UPDATE copies the rows the new image conflicts with into
``_rhei_cdc_pending`` (only when there are such rows), and AFTER INSERT/UPDATE
logs a ``D`` for each of them that is gone, unless a ``D`` of it was logged
since (the delete trigger fired after all), then empties the table's entries.
A conflict that deleted nothing (``INSERT OR IGNORE``, an upsert, a failed
statement) leaves entries of rows that still exist, which log nothing and are
cleared by the next guarded write or by pruning. One gap: an application's own
BEFORE INSERT/UPDATE trigger that writes the same table flushes the outer row's
entries before that row's REPLACE deletes them, so those D are missed unless
the writer has recursive_triggers on. A row replaced by one with the same
primary key needs no ``D``: the ``I`` of that key supersedes it in the lake, as
it does in tables without other unique indexes, which pay nothing.
"""

from __future__ import annotations

import sqlite3

from rhei_lake.capture.sqlite_schema import quote_ident, quote_literal
from rhei_lake.capture.sqlite_shape import TableShape, UniqueIndex, read_shape
from rhei_lake.catalog import TableSpec

LOG_TABLE = "_rhei_cdc_log"
PENDING_TABLE = "_rhei_cdc_pending"
"""Images of rows a statement's REPLACE may delete, kept from BEFORE to AFTER the row's write."""
# The trigger stores SQLite's clock as it comes (a julian day, exact to the millisecond);
# turning it into epoch microseconds is left to the reader: on the write path every
# function call costs (this form makes a captured insert ~17% cheaper than epoch
# microseconds; the argument-less form, which skips parsing 'now', another ~2.5%).
NOW = "julianday()"
TS_MICROS = (
    "(CASE WHEN typeof(ts) = 'real' THEN CAST(ROUND((ts - 2440587.5) * 86400000.0) AS INTEGER) * 1000 ELSE ts END)"
)
"""The log's ``ts`` as UTC epoch microseconds (older logs stored microseconds already)."""
_TRIGGER_KINDS = ("ins", "upd", "rekey", "del", "guard_ins", "guard_upd", "flush_ins", "flush_upd")
_ROW = "_rhei_row"
_EXACT_AFFINITIES = ("TEXT", "REAL", "ROWID")
"""Affinities under which two values equal under BINARY are the same value (one storage class, no -0.0)."""


def trigger_name(table: str, kind: str) -> str:
    return f"_rhei_cdc_{kind}_{table}"


def _slots(spec: TableSpec) -> str:
    return ", ".join(f"c{i}" for i in range(len(spec.columns)))


def _insert(spec: TableSpec, op: str, image: str) -> str:
    values = ", ".join(f"{image}.{quote_ident(c.name)}" for c in spec.columns)
    return (
        f"INSERT INTO {LOG_TABLE} (tbl, op, ts, {_slots(spec)}) "
        f"VALUES ({quote_literal(spec.name)}, '{op}', {NOW}, {values});"
    )


def _differs(old: str, new: str, affinity: str) -> str:
    """SQL true when the stored values ``old`` and ``new`` may differ in any bit (never NULL)."""
    binary = f"{old} IS NOT {new} COLLATE BINARY"
    if affinity in _EXACT_AFFINITIES:
        return binary
    return f"{binary} OR typeof({old}) IS NOT typeof({new}) OR (typeof({new}) = 'real' AND {new} = 0)"


def _same(a: str, b: str, affinity: str) -> str:
    """SQL true when the stored values ``a`` and ``b`` are one value (never NULL); ``0.0`` is ``-0.0`` here."""
    binary = f"{a} IS {b} COLLATE BINARY"
    if affinity in _EXACT_AFFINITIES:
        return binary
    return f"{binary} AND typeof({a}) = typeof({b})"


def _same_key(spec: TableSpec, shape: TableShape, a: str, b: str) -> str:
    """``a`` and ``b`` map a key column name to the SQL of that column in two images."""
    return " AND ".join(f"({_same(a_sql, b_sql, shape.affinity(k))})" for k, a_sql, b_sql in _key_pairs(spec, a, b))


def _key_pairs(spec: TableSpec, a: str, b: str) -> list[tuple[str, str, str]]:
    """(key column, its SQL in image ``a``, in image ``b``); an image is ``NEW``/``OLD``/an alias, or ``P`` (slots)."""

    def ref(image: str, column: str) -> str:
        if image == "P":
            return f"P.c{spec.column_names.index(column)}"
        return f"{image}.{quote_ident(column)}"

    return [(k, ref(a, k), ref(b, k)) for k in spec.primary_key]


def trigger_ddl(spec: TableSpec, shape: TableShape) -> dict[str, str]:
    """The CREATE TRIGGER statements capturing every change of ``spec``'s table, by trigger name.

    In creation order: SQLite fires the triggers of one event newest first, so
    a flush logs the ``D`` of a replaced row before the ``I`` that replaced it.
    """
    table = quote_ident(spec.name)
    name = {kind: trigger_name(spec.name, kind) for kind in _TRIGGER_KINDS}
    same_key = _same_key(spec, shape, "OLD", "NEW")
    others = [c.name for c in spec.columns if c.name not in spec.primary_key]
    changed = (
        " OR ".join(
            f"({_differs(f'OLD.{quote_ident(c)}', f'NEW.{quote_ident(c)}', shape.affinity(c))})" for c in others
        )
        or "0"
    )
    ddl = {
        name["ins"]: f"CREATE TRIGGER {quote_ident(name['ins'])} AFTER INSERT ON {table} "
        f"BEGIN {_insert(spec, 'I', 'NEW')} END",
        name["upd"]: f"CREATE TRIGGER {quote_ident(name['upd'])} AFTER UPDATE ON {table} "
        f"WHEN ({same_key}) AND ({changed}) BEGIN {_insert(spec, 'U', 'NEW')} END",
        name["rekey"]: f"CREATE TRIGGER {quote_ident(name['rekey'])} AFTER UPDATE ON {table} WHEN NOT ({same_key}) "
        f"BEGIN {_insert(spec, 'D', 'OLD')} {_insert(spec, 'I', 'NEW')} END",
        name["del"]: f"CREATE TRIGGER {quote_ident(name['del'])} AFTER DELETE ON {table} "
        f"BEGIN {_insert(spec, 'D', 'OLD')} END",
    }
    guarded = _guarded_indexes(shape)
    if guarded:
        ddl.update(_guard_ddl(spec, shape, guarded, name))
    return ddl


def _guarded_indexes(shape: TableShape) -> tuple[UniqueIndex, ...]:
    """The unique indexes through which REPLACE can delete a row the new row's ``I`` does not supersede.

    Every unique index but the primary key; the primary key too when two keys
    that differ in some bit can conflict in it (a collation other than BINARY,
    or no affinity, where ``1`` and ``1.0`` are one key).
    """
    key = shape.primary
    if key is not None and any(
        term.collation.upper() != "BINARY" or shape.affinity(term.column or "") == "BLOB" for term in key.terms
    ):
        return (*shape.unique, key)
    return shape.unique


def _guard_ddl(
    spec: TableSpec, shape: TableShape, indexes: tuple[UniqueIndex, ...], name: dict[str, str]
) -> dict[str, str]:
    """Triggers that log the rows REPLACE deletes through ``indexes`` without a delete trigger."""
    table = quote_ident(spec.name)
    tbl = quote_literal(spec.name)
    watched = list(dict.fromkeys(c for index in indexes for c in index.columns))
    of = ", ".join(quote_ident(c) for c in watched)
    not_self = f" AND NOT ({_same_key(spec, shape, _ROW, 'OLD')})"
    pending = f"EXISTS (SELECT 1 FROM {PENDING_TABLE} WHERE tbl = {tbl})"

    def guard(kind: str, event: str, exclude: str) -> str:
        conflicts = [f"{_conflict(spec, index)}{exclude}" for index in indexes]
        when = " OR ".join(f"EXISTS (SELECT 1 FROM {table} AS {_ROW} WHERE {c})" for c in conflicts)
        body = " ".join(_record(spec, shape, c) for c in conflicts)
        return f"CREATE TRIGGER {quote_ident(name[kind])} BEFORE {event} ON {table} WHEN {when} BEGIN {body} END"

    def flush(kind: str, event: str, images: tuple[str, ...]) -> str:
        return (
            f"CREATE TRIGGER {quote_ident(name[kind])} AFTER {event} ON {table} WHEN {pending} "
            f"BEGIN {_flush(spec, shape, images)} DELETE FROM {PENDING_TABLE} WHERE tbl = {tbl}; END"
        )

    return {
        name["guard_ins"]: guard("guard_ins", "INSERT", ""),
        name["guard_upd"]: guard("guard_upd", f"UPDATE OF {of}", not_self),
        name["flush_ins"]: flush("flush_ins", "INSERT", ("NEW",)),
        name["flush_upd"]: flush("flush_upd", f"UPDATE OF {of}", ("NEW", "OLD")),
    }


def _conflict(spec: TableSpec, index: UniqueIndex) -> str:
    """SQL over ``_rhei_row`` (a row of the table): true when it agrees with NEW on every term of ``index``.

    Written so SQLite searches ``index`` itself: each term compared under the
    index's collation, expressions and the partial condition as the index has
    them (evaluated for NEW over a one-row subquery that names NEW's columns).
    """
    new_row = "(SELECT " + ", ".join(f"NEW.{quote_ident(c)} AS {quote_ident(c)}" for c in spec.column_names) + ")"
    parts = []
    for term in index.terms:
        collate = f"COLLATE {quote_ident(term.collation)}"
        if term.column is not None:
            parts.append(f"{_ROW}.{quote_ident(term.column)} {collate} = NEW.{quote_ident(term.column)}")
        else:
            parts.append(f"({term.sql}) {collate} = (SELECT ({term.sql}) {collate} FROM {new_row})")
    if index.where is not None:
        parts.append(f"({index.where}) AND (SELECT ({index.where}) FROM {new_row})")
    return " AND ".join(parts)


def _record(spec: TableSpec, shape: TableShape, conflict: str) -> str:
    """Copy the rows matching ``conflict`` (not yet pending) into the pending table."""
    columns = ", ".join(f"{_ROW}.{quote_ident(c)}" for c in spec.column_names)
    return (
        f"INSERT INTO {PENDING_TABLE} (tbl, mark, {_slots(spec)}) "
        f"SELECT {quote_literal(spec.name)}, (SELECT coalesce(max(seq), 0) FROM {LOG_TABLE}), {columns} "
        f"FROM {quote_ident(spec.name)} AS {_ROW} WHERE {conflict} AND NOT EXISTS "
        f"(SELECT 1 FROM {PENDING_TABLE} AS P WHERE P.tbl = {quote_literal(spec.name)} "
        f"AND {_same_key(spec, shape, 'P', _ROW)});"
    )


def _flush(spec: TableSpec, shape: TableShape, images: tuple[str, ...]) -> str:
    """Log a ``D`` for each pending row of the table that is gone and whose deletion was not logged."""
    tbl = quote_literal(spec.name)
    lookup = " AND ".join(
        f"{_ROW}.{quote_ident(k)}{_collate(shape.key_collation(k))} = P.c{spec.column_names.index(k)}"
        for k in spec.primary_key
    )
    logged = " AND ".join(
        f"({_same(f'L.c{spec.column_names.index(k)}', f'P.c{spec.column_names.index(k)}', 'BLOB')})"
        for k in spec.primary_key
    )
    keep = "".join(f" AND NOT ({_same_key(spec, shape, 'P', image)})" for image in images)
    slots = ", ".join(f"P.c{i}" for i in range(len(spec.columns)))
    return (
        f"INSERT INTO {LOG_TABLE} (tbl, op, ts, {_slots(spec)}) SELECT {tbl}, 'D', {NOW}, {slots} "
        f"FROM {PENDING_TABLE} AS P WHERE P.tbl = {tbl}{keep} "
        f"AND NOT EXISTS (SELECT 1 FROM {quote_ident(spec.name)} AS {_ROW} WHERE {lookup} "
        f"AND {_same_key(spec, shape, _ROW, 'P')}) "
        f"AND NOT EXISTS (SELECT 1 FROM {LOG_TABLE} AS L WHERE L.seq > P.mark AND L.tbl = {tbl} "
        f"AND L.op = 'D' AND {logged}) ORDER BY P.rowid;"
    )


def _collate(collation: str | None) -> str:
    return "" if collation is None else f" COLLATE {quote_ident(collation)}"


def install_triggers(conn: sqlite3.Connection, spec: TableSpec) -> None:
    """(Re)create the triggers of ``spec`` for its table as SQLite declares it now (inside the caller's transaction)."""
    drop_triggers(conn, spec.name)
    for ddl in trigger_ddl(spec, read_shape(conn, spec.name)).values():
        conn.execute(ddl)


def triggers_current(conn: sqlite3.Connection, spec: TableSpec) -> bool:
    """Whether the installed triggers of ``spec`` are exactly the ones :func:`install_triggers` would create."""
    names = [trigger_name(spec.name, kind) for kind in _TRIGGER_KINDS]
    marks = ", ".join("?" * len(names))
    installed = dict(
        conn.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})", names)
    )
    return installed == trigger_ddl(spec, read_shape(conn, spec.name))


def drop_triggers(conn: sqlite3.Connection, table: str) -> None:
    for kind in _TRIGGER_KINDS:
        conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(trigger_name(table, kind))}")
