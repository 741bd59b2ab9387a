"""Noticing schema changes of mirrored tables made behind rhei_lake's back, and judging them.

An application (another connection, a migration tool, :meth:`~rhei_lake.Lake.execute_batch`)
can change a mirrored table's schema without rhei_lake: ``ALTER TABLE ... ADD
COLUMN``, or a rebuild (create a new table, copy the rows, drop the old one,
rename the new one into place: what Alembic's batch mode and Django do on
SQLite). ``DROP TABLE`` drops the table's triggers with it and fires none of
them, so from then on capture is blind; an added column is not in the triggers'
row images. Neither makes a sound.

SQLite's schema cookie (``PRAGMA schema_version``) moves on every schema change
of the database, so one read per sync tells whether anything changed at all.
When it moved, each mirrored table is compared with its *fingerprint*: the
columns SQLite declared and the triggers rhei_lake installed, recorded (in
``_rhei_schema``) in the transaction that installed them. The comparison says:

* nothing changed for this table;
* **follow**: columns were added, removed (a rebuild without them), reordered
  or re-declared with a type of the same Arrow type or another NOT NULL; or
  only the triggers are gone or stale. The key is the same, so the lake can
  reinstall the triggers, evolve its tables and reconcile the rows written
  while capture was blind (see :mod:`rhei_lake.sync.schema_follow`);
* **refuse**: the table is gone or was renamed away, its key changed, a column
  was renamed (or some were removed while others were added, which a rename
  looks like) or took a type of another kind. Following would mirror it
  wrongly; :class:`~rhei_lake.errors.SchemaChangedError` says what to do.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from typing import Literal

from rhei_lake.capture.sqlite_schema import canonical_table_name
from rhei_lake.capture.triggers import triggers_current
from rhei_lake.capture.types import make_column
from rhei_lake.catalog import Column, TableSpec
from rhei_lake.errors import SchemaChangedError, SchemaError

SCHEMA_TABLE = "_rhei_schema"
_TRIGGER_PREFIX = "\\_rhei\\_%"  # LIKE pattern (escaped): rhei_lake's triggers and nothing else


@dataclass(frozen=True)
class LiveColumn:
    """One column as ``pragma_table_xinfo`` declares it."""

    name: str
    declared: str
    not_null: bool
    pk: int


@dataclass(frozen=True)
class Fingerprint:
    """A mirrored table's schema as it was when rhei_lake last installed its triggers."""

    columns: tuple[LiveColumn, ...]
    triggers: tuple[tuple[str, str], ...]  # (name, sql), sorted by name

    def to_json(self) -> str:
        return json.dumps(
            {"columns": [[c.name, c.declared, c.not_null, c.pk] for c in self.columns], "triggers": self.triggers}
        )

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        data = json.loads(text)
        return cls(
            tuple(LiveColumn(n, d, bool(nn), int(pk)) for n, d, nn, pk in data["columns"]),
            tuple((n, s) for n, s in data["triggers"]),
        )


@dataclass(frozen=True)
class SchemaDrift:
    """How a mirrored table's live schema differs from what the lake mirrors, and what to do about it."""

    table: str
    action: Literal["follow", "refuse"]
    change: str
    spec: TableSpec | None = None  # follow: the spec to continue with (added columns not yet stamped)
    advice: str = ""

    def batch_error(self) -> SchemaChangedError:
        """The error of a batch that would leave the table so (the batch is rolled back)."""
        return SchemaChangedError(
            f"execute_batch: nothing was applied: afterwards table {self.table!r}: {self.change}, which the lake "
            f"cannot follow. A batch that rebuilds a mirrored table must leave a table of that name with the same "
            f"primary key (columns may be added, removed or re-declared with a type of the same kind, not renamed); "
            f"to stop mirroring it, unregister_table({self.table!r}) first.",
            table=self.table,
            change=self.change,
        )

    def error(self) -> SchemaChangedError:
        return SchemaChangedError(
            f"table {self.table!r}: {self.change}. The lake cannot follow this change, so syncing stopped "
            f"before mirroring anything wrongly (everything captured before it is committed). {self.advice}.",
            table=self.table,
            change=self.change,
        )


# -- reading SQLite --------------------------------------------------------
def schema_cookie(conn: sqlite3.Connection) -> int:
    """SQLite's schema cookie: it changes whenever any schema of the database changes."""
    return conn.execute("PRAGMA schema_version").fetchone()[0]


def live_columns(conn: sqlite3.Connection, table: str) -> tuple[LiveColumn, ...]:
    rows = conn.execute('SELECT name, type, "notnull", pk, hidden FROM pragma_table_xinfo(?)', (table,)).fetchall()
    return tuple(
        LiveColumn(name, declared or "", bool(nn), pk) for name, declared, nn, pk, hidden in rows if hidden != 1
    )


def live_triggers(conn: sqlite3.Connection, table: str) -> tuple[tuple[str, str], ...]:
    """rhei_lake's triggers on ``table``: (name, sql) sorted by name."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? COLLATE NOCASE "
        "AND name LIKE ? ESCAPE '\\' ORDER BY name",
        (table, _TRIGGER_PREFIX),
    ).fetchall()
    return tuple((name, sql) for name, sql in rows)


def _tables_holding(conn: sqlite3.Connection, triggers: tuple[tuple[str, str], ...]) -> list[str]:
    names = [name for name, _ in triggers]
    if not names:
        return []
    marks = ", ".join("?" * len(names))
    rows = conn.execute(
        f"SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name IN ({marks})", names
    )
    return [r[0] for r in rows]


# -- fingerprints ------------------------------------------------------------
def fingerprint(conn: sqlite3.Connection, table: str) -> Fingerprint:
    return Fingerprint(live_columns(conn, table), live_triggers(conn, table))


def record(conn: sqlite3.Connection, table: str) -> None:
    """Record ``table``'s schema and triggers as mirrored (inside the caller's write transaction)."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (name TEXT PRIMARY KEY, fingerprint TEXT NOT NULL)")
    conn.execute(
        f"INSERT OR REPLACE INTO {SCHEMA_TABLE} (name, fingerprint) VALUES (?, ?)",
        (table, fingerprint(conn, table).to_json()),
    )


def forget(conn: sqlite3.Connection, table: str) -> None:
    if _has_schema_table(conn):
        conn.execute(f"DELETE FROM {SCHEMA_TABLE} WHERE name = ?", (table,))


def read_fingerprints(conn: sqlite3.Connection) -> dict[str, Fingerprint]:
    if not _has_schema_table(conn):
        return {}
    return {
        name: Fingerprint.from_json(text)
        for name, text in conn.execute(f"SELECT name, fingerprint FROM {SCHEMA_TABLE}")
    }


def _has_schema_table(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SCHEMA_TABLE,)).fetchone()
    return row is not None


def stamp_added_columns(old: TableSpec, new: TableSpec, first_seq: int) -> TableSpec:
    """``new`` with each column ``old`` lacks valid from ``first_seq``: the first event of the new layout."""
    known = set(old.column_names)
    columns = tuple(c if c.name in known else replace(c, valid_from_seq=first_seq) for c in new.columns)
    return new.with_columns(columns)


# -- judging -------------------------------------------------------------------
def judge(conn: sqlite3.Connection, specs: dict[str, TableSpec]) -> list[SchemaDrift]:
    """How each of the mirrored tables ``specs`` differs from what the lake mirrors (only those that do)."""
    known = read_fingerprints(conn)
    drifts = (inspect(conn, spec, known.get(name)) for name, spec in specs.items())
    return [drift for drift in drifts if drift is not None]


def inspect(conn: sqlite3.Connection, spec: TableSpec, known: Fingerprint | None) -> SchemaDrift | None:
    """How ``spec``'s table differs from what the lake mirrors (``None``: it does not).

    ``known`` is the table's fingerprint; without one (a table registered by an
    older rhei_lake) the declared types are taken as they are and the triggers
    are reinstalled once, which costs a reconciliation that finds nothing.
    """
    table = spec.name
    try:
        canonical = canonical_table_name(conn, table)
    except SchemaError:
        return _gone(conn, table, known)
    live = live_columns(conn, canonical)
    key = tuple(c.name for c in sorted((c for c in live if c.pk), key=lambda c: c.pk))
    if key != spec.primary_key:
        return SchemaDrift(
            table,
            "refuse",
            f"its primary key changed from ({', '.join(spec.primary_key)}) to ({', '.join(key) or 'none'})",
            advice=(
                "A table's history is kept per key, so it cannot go on under another one. Restore the key and "
                f"sync again, or stop mirroring it with unregister_table({table!r}) (the lake keeps its history "
                "under the old key)"
            ),
        )
    names = spec.column_names
    live_names = [c.name for c in live]
    removed = [n for n in names if n not in live_names]
    added = [n for n in live_names if n not in names]
    if removed and added:
        return SchemaDrift(
            table,
            "refuse",
            f"columns {removed} are gone and {added} are new",
            advice=(
                "That is what renaming a column looks like, and the change feed cannot tell a rename from a drop "
                "and an add. Undo it and sync again, then change the columns one step at a time (an added column "
                "and a removed column are each followed), copying values in between; or stop mirroring it with "
                f"unregister_table({table!r}) (the lake keeps its history)"
            ),
        )
    declared_then = {c.name: c.declared for c in (known.columns if known is not None else live)}
    columns: list[Column] = []
    changes: list[str] = []
    for column in live:
        if column.name not in names:
            try:
                columns.append(make_column(column.name, column.declared, table=table, not_null=column.not_null))
            except SchemaError as exc:
                # (not the error's own advice: types= is for a table's first registration, not a mirrored one)
                why = "it declares none" if not (column.declared or "").strip() else str(exc)
                return SchemaDrift(
                    table,
                    "refuse",
                    f"column {column.name!r} was added with a declared type the lake cannot map ({why})",
                    advice=(
                        "Declare it with a type such as TEXT, INTEGER or REAL (rebuild the table) and sync again, "
                        f"or stop mirroring it with unregister_table({table!r}) (the lake keeps its history)"
                    ),
                )
            changes.append(f"column {column.name!r} added")
            continue
        mirrored = spec.column(column.name)
        then = declared_then.get(column.name, column.declared)
        if column.declared != then and mirrored.declared_type == then:  # not a type given at registration
            try:
                retyped: Column | None = make_column(
                    column.name, column.declared, table=table, not_null=column.not_null
                )
            except SchemaError:  # no type (or none the lake maps): refused like a change of type, not by its error
                retyped = None  # (whose advice, types= for register_table, a mirrored table refuses)
            if retyped is None or retyped.arrow_type != mirrored.arrow_type:
                return SchemaDrift(
                    table,
                    "refuse",
                    f"column {column.name!r} is now declared {column.declared or 'without a type'}"
                    f"{f' ({retyped.arrow_type})' if retyped is not None else ''}, "
                    f"was {then or 'without a type'} ({mirrored.arrow_type})",
                    advice=(
                        "Its values would change type in the middle of its history. Restore a declared type of "
                        f"the same kind ({mirrored.arrow_type}) and sync again (then add a new column, copy the "
                        "values and drop the old one), or stop mirroring it with "
                        f"unregister_table({table!r}) (the lake keeps its history)"
                    ),
                )
            mirrored = replace(mirrored, declared_type=retyped.declared_type)
            changes.append(f"column {column.name!r} declared {column.declared or 'without a type'}")
        if mirrored.nullable == column.not_null:
            mirrored = replace(mirrored, nullable=not column.not_null)
            changes.append(f"column {column.name!r} {'NOT NULL' if column.not_null else 'nullable'}")
        columns.append(mirrored)
    if removed:
        changes.append(f"columns {removed} removed")
    followed = spec.with_columns(tuple(columns))
    if [c.name for c in columns] != [n for n in names if n in live_names] + added:
        changes.append("columns reordered")
    triggers = live_triggers(conn, canonical)
    if known is None or triggers != known.triggers:
        changes.append(
            "its capture triggers are gone (the table was rebuilt or dropped and created again)"
            if not triggers
            else "its capture triggers are not the ones rhei_lake installed"
        )
    elif not changes and not _triggers_current(conn, followed):
        # Same columns, same triggers as installed, but not the ones rhei_lake installs now: a unique
        # index came or went (REPLACE through a new one was not seen), or an older rhei_lake wrote them.
        changes.append(
            "its capture triggers are outdated (its unique indexes changed, or an older rhei_lake installed them)"
        )
    elif known.columns != live and not changes:
        changes.append("its declaration changed")
    if not changes:
        return None
    return SchemaDrift(table, "follow", "; ".join(changes), spec=followed)


def _triggers_current(conn: sqlite3.Connection, spec: TableSpec) -> bool:
    try:
        return triggers_current(conn, spec)
    except SchemaError:
        return False  # an index it cannot read: following reinstalls the triggers, which says why it cannot


def _gone(conn: sqlite3.Connection, table: str, known: Fingerprint | None) -> SchemaDrift:
    moved = [t for t in _tables_holding(conn, known.triggers if known else ()) if t.lower() != table.lower()]
    if moved:
        return SchemaDrift(
            table,
            "refuse",
            f"it was renamed to {moved[0]!r}",
            advice=(
                f"If a migration is rebuilding it, let it finish and sync again: a rebuild that leaves a table "
                f"named {table!r} with the same primary key is followed. Otherwise rename it back, or "
                f"unregister_table({table!r}) and register_table({moved[0]!r}): a new table for the lake, which "
                f"keeps {table!r}'s history"
            ),
        )
    return SchemaDrift(
        table,
        "refuse",
        "it no longer exists in the SQLite database",
        advice=(
            "If a migration is rebuilding it (create a new table, copy, drop, rename), let it finish, best in one "
            "transaction or one execute_batch(), and sync again: a rebuild that keeps the primary key is followed. "
            f"If it is gone for good, stop mirroring it with unregister_table({table!r}) (the lake keeps its history)"
        ),
    )
