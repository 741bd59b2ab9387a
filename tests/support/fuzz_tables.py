"""The differential fuzzer's tables, operation families and statements.

Each operation family is a switch: a program only creates the tables and
generates the statements of the families it runs. ``dml`` is always on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from rhei_lake.capture.sqlite_schema import quote_ident
from tests.support.fuzz_values import value_inputs
from tests.support.workload import REGIONS, SCHEMA

FAMILIES: dict[str, str] = {
    "dml": "INSERT / UPDATE / DELETE (single rows and sets, NULL keys of rowid tables) from every connection",
    "txn": "BEGIN [IMMEDIATE] / SAVEPOINT / RELEASE / ROLLBACK TO / COMMIT / ROLLBACK on every connection",
    "keys": "primary-key updates (plain and OR IGNORE), composite keys",
    "values": "odd but legal values of every storage class in every declared type that accepts it",
    "upsert": "INSERT OR IGNORE / ON CONFLICT DO UPDATE / DO NOTHING on the key and on UNIQUE columns",
    "replace": "INSERT OR REPLACE / REPLACE / UPDATE OR REPLACE via connections with recursive_triggers=ON",
    "replace_norecursive": "REPLACE conflicts via connections with recursive_triggers=OFF (item 3)",
    "fk": "ON DELETE / ON UPDATE CASCADE and SET NULL, from connections with foreign_keys on and off",
    "collation": "NOCASE and RTRIM columns and keys: case-only and trailing-blank changes (item 2)",
    "affinity": "JSON / UUID / TIME columns holding what SQLite's NUMERIC affinity stores there (item 7)",
    "numeric_any": "NUMERIC columns holding text and integers beyond 2**53: shown exactly, or refused loudly",
    "datetime_keys": "a DATETIME primary key holding one instant in several spellings (item 5)",
    "add_column": "Lake.add_column",
    "drop_column": "Lake.drop_column of a column never re-added",
    "readd_column": "a column dropped and added again under its name (item 6)",
    "foreign_add_column": "ALTER TABLE ADD COLUMN from an application connection (item 4)",
    "rebuild": "Alembic-style rebuild: create new, copy, drop, rename, via execute_batch or a connection (item 4)",
    "open_txn_sync": "syncs and recorded instants while another connection holds uncommitted writes",
    "outside_schema_instants": "instants between a schema change behind the lake's back and the next sync",
    "flush": "Lake.flush",
    "compact": "Lake.compact (vacuum_retention 0 now and then)",
    "reopen": "close and reopen the lake",
    "crash": "a child process holding the lake is SIGKILLed at a fault point mid-work; the lake reopens",
}
"""Every operation family the fuzzer knows, with what it adds to the programs."""

SCHEMA_FAMILIES = ("add_column", "drop_column", "readd_column", "foreign_add_column", "rebuild")


@dataclass(frozen=True)
class TableDef:
    """A table of the programs: its DDL, key, the families that bring it and pools for its key/unique columns."""

    name: str
    families: tuple[str, ...]
    ddl: str
    key: tuple[str, ...]
    unique: tuple[str, ...] = ()
    pools: dict[str, Callable[[], st.SearchStrategy[Any]]] = field(default_factory=dict)
    affinity: bool = False
    expressions: tuple[str, ...] = ()
    rekeys: bool = False
    """Key changes are what the table is for: generated even without the ``keys`` family."""
    may_refuse: bool = False
    """Its values may be refused (a TypeMismatchError naming it ends the program) instead of mirrored."""


def _ints(hi: int) -> Callable[[], st.SearchStrategy[Any]]:
    return lambda: st.integers(1, hi)


def _rowid_keys() -> st.SearchStrategy[Any]:
    # Mostly a small key space (rows get updated, replaced, re-keyed), sometimes NULL (SQLite picks
    # the rowid) or an extreme.
    small = st.integers(1, 6)
    return st.one_of(small, small, small, st.sampled_from((None, 0, -1, 2**63 - 1)))


def _pool(*values: Any) -> Callable[[], st.SearchStrategy[Any]]:
    return lambda: st.sampled_from(values)


CONFLICTS = ("upsert", "replace", "replace_norecursive")
"""The families whose statements conflict on UNIQUE columns."""

TABLES: tuple[TableDef, ...] = (
    TableDef("items", ("dml",), SCHEMA["items"], ("id",), pools={"id": _rowid_keys}),
    TableDef(
        "pairs", ("dml",), SCHEMA["pairs"], ("region", "code"), pools={"region": _pool(*REGIONS[:3]), "code": _ints(2)}
    ),
    TableDef(
        "wide",
        ("values",),
        "CREATE TABLE wide (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, flag BOOLEAN, "
        "day DATE, at DATETIME, amount DECIMAL(12,3), v VARCHAR(20), d DOUBLE PRECISION)",
        ("id",),
        pools={"id": _ints(4)},
    ),
    TableDef(
        "users",
        CONFLICTS,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, nick TEXT UNIQUE, score INTEGER)",
        ("id",),
        unique=("email", "nick"),
        pools={"id": _ints(4), "email": _pool("a@x", "b@x", "c@x"), "nick": _pool(None, "n1", "n2", "n3")},
    ),
    TableDef(
        "handles",
        CONFLICTS,
        "CREATE TABLE handles (h TEXT NOT NULL PRIMARY KEY, owner INTEGER UNIQUE, note TEXT) WITHOUT ROWID",
        ("h",),
        unique=("owner",),
        pools={"h": _pool("h1", "h2", "h3"), "owner": _pool(None, 1, 2, 3)},
    ),
    TableDef(
        "parent", ("fk",), "CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT)", ("id",), pools={"id": _ints(4)}
    ),
    TableDef(
        "child",
        ("fk",),
        "CREATE TABLE child (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) ON DELETE CASCADE "
        "ON UPDATE CASCADE, note TEXT)",
        ("id",),
        pools={"id": _ints(5), "pid": _pool(None, 1, 2, 3, 4)},
    ),
    TableDef(
        "ward",
        ("fk",),
        "CREATE TABLE ward (id INTEGER PRIMARY KEY, pid INTEGER REFERENCES parent(id) ON DELETE SET NULL "
        "ON UPDATE SET NULL, note TEXT)",
        ("id",),
        pools={"id": _ints(4), "pid": _pool(None, 1, 2, 3, 4)},
    ),
    TableDef(
        "tags",
        ("collation",),
        "CREATE TABLE tags (k TEXT NOT NULL COLLATE NOCASE PRIMARY KEY, label TEXT COLLATE NOCASE, "
        "pad TEXT COLLATE RTRIM, n INTEGER)",
        ("k",),
        pools={
            "k": _pool("a", "A", "b", "B", "ab", "aB"),
            "label": _pool(None, "x", "X", "hello", "Hello", "HELLO"),
            "pad": _pool(None, "p", "p ", "p  ", "q"),
        },
        expressions=(
            "label = upper(label)",
            "label = lower(label)",
            "pad = pad || ' '",
            "pad = rtrim(pad)",
            "k = upper(k)",
            "k = lower(k)",
        ),
        rekeys=True,
    ),
    TableDef(
        "rk",
        ("collation",),
        "CREATE TABLE rk (k TEXT NOT NULL COLLATE RTRIM PRIMARY KEY, v TEXT COLLATE NOCASE) WITHOUT ROWID",
        ("k",),
        pools={"k": _pool("x", "x ", "x  ", "y", "y "), "v": _pool(None, "v", "V", " v", "v ")},
        expressions=("k = k || ' '", "k = rtrim(k)", "v = upper(v)"),
        rekeys=True,
    ),
    TableDef(
        "docs",
        ("affinity",),
        "CREATE TABLE docs (id INTEGER PRIMARY KEY, body JSON, uid UUID, at TIME)",
        ("id",),
        pools={"id": _ints(4)},
        affinity=True,
    ),
    TableDef(
        "nums",
        ("numeric_any",),
        "CREATE TABLE nums (id INTEGER PRIMARY KEY, n NUMERIC, m MONEY)",
        ("id",),
        pools={"id": _ints(4)},
        affinity=True,
        may_refuse=True,
    ),
    TableDef(
        "stamps",
        ("datetime_keys",),
        "CREATE TABLE stamps (at DATETIME NOT NULL PRIMARY KEY, v TEXT)",
        ("at",),
        pools={
            "at": _pool(
                "2026-01-01 10:00:00",
                "2026-01-01T10:00:00",
                "2026-01-01T10:00:00Z",
                "2026-01-01T12:00:00+02:00",
                1767261600,
                "2026-01-02 00:00:00",
            )
        },
        rekeys=True,
        may_refuse=True,
    ),
    TableDef(
        "mig",
        ("migration",),
        "CREATE TABLE mig (id INTEGER PRIMARY KEY, a TEXT, b INTEGER)",
        ("id",),
        pools={"id": _ints(5)},
    ),
)

KINDS: dict[str, tuple[str, int]] = {
    "insert": ("dml", 3),
    "update": ("dml", 5),
    "update_many": ("dml", 1),
    "update_expr": ("dml", 2),
    "delete": ("dml", 1),
    "delete_many": ("dml", 1),
    "rekey": ("keys", 2),
    "insert_ignore": ("upsert", 2),
    "upsert": ("upsert", 2),
    "upsert_nothing": ("upsert", 1),
    "replace": ("replace", 3),
    "update_replace": ("replace", 2),
}
"""Statement kinds: the family that enables each (REPLACE kinds: see :func:`kinds_for`) and its weight
(tables fill up rather than stay empty, so updates find rows)."""


def tables_for(families: frozenset[str]) -> list[TableDef]:
    wanted = set(families) | {"dml"}
    if wanted & set(SCHEMA_FAMILIES):
        wanted.add("migration")
    return [t for t in TABLES if wanted & set(t.families)]


def kinds_for(table: TableDef, families: frozenset[str], *, recursive: bool) -> list[str]:
    """The statement kinds a connection (``recursive``: its recursive_triggers) may send to ``table``,
    each repeated by its weight."""
    kinds = []
    for kind, (family, weight) in KINDS.items():
        if kind == "update_expr" and not table.expressions:
            continue
        if family == "replace":
            ok = ("replace" if recursive else "replace_norecursive") in families
        elif kind == "rekey":
            ok = "keys" in families or table.rekeys
        else:
            ok = family in families or family == "dml"
        if ok:
            kinds += [kind] * weight
    return kinds


@dataclass(frozen=True)
class Column:
    name: str
    declared: str


def column_inputs(table: TableDef, column: Column) -> st.SearchStrategy[Any]:
    pool = table.pools.get(column.name)
    if pool is not None:
        return pool()
    return value_inputs(column.declared or "TEXT", affinity=table.affinity)


@st.composite
def statement(draw, table: TableDef, columns: Sequence[Column], kinds: Sequence[str]) -> tuple[str, tuple]:
    """One DML statement of a kind in ``kinds`` on ``table`` (whose current columns are ``columns``)."""
    kind = draw(st.sampled_from(list(kinds)))
    name = quote_ident(table.name)
    by_name = {c.name: c for c in columns}
    keys = [by_name[k] for k in table.key]
    others = [c for c in columns if c.name not in table.key]

    def value(col: Column) -> Any:
        return draw(column_inputs(table, col))

    def where_key() -> tuple[str, list]:
        return " AND ".join(f"{quote_ident(k.name)} = ?" for k in keys), [value(k) for k in keys]

    def assignments(min_size: int = 1) -> tuple[str, list]:
        chosen = (
            draw(st.lists(st.sampled_from(others), min_size=min_size, max_size=max(min_size, 3), unique=True))
            if others
            else []
        )
        return ", ".join(f"{quote_ident(c.name)} = ?" for c in chosen), [value(c) for c in chosen]

    if kind in ("insert", "insert_ignore", "replace", "upsert", "upsert_nothing"):
        optional = draw(st.lists(st.sampled_from(others), unique=True)) if others and draw(st.booleans()) else others
        cols = [*keys, *[c for c in others if c in optional]]
        names = ", ".join(quote_ident(c.name) for c in cols)
        marks = ", ".join("?" for _ in cols)
        params = [value(c) for c in cols]
        verb = {
            "insert": "INSERT",
            "insert_ignore": "INSERT OR IGNORE",
            "upsert": "INSERT",
            "upsert_nothing": "INSERT",
        }.get(kind) or draw(st.sampled_from(("INSERT OR REPLACE", "REPLACE")))
        sql = f"{verb} INTO {name} ({names}) VALUES ({marks})"
        if kind == "upsert_nothing":
            sql += " ON CONFLICT DO NOTHING"
        elif kind == "upsert":
            targets = [table.key, *[(u,) for u in table.unique]]
            target = draw(st.sampled_from(targets))
            updatable = [c for c in cols if c.name not in target]
            if not updatable:
                sql += f" ON CONFLICT ({', '.join(quote_ident(t) for t in target)}) DO NOTHING"
            else:
                sets = draw(st.lists(st.sampled_from(updatable), min_size=1, unique=True))
                body = ", ".join(f"{quote_ident(c.name)} = excluded.{quote_ident(c.name)}" for c in sets)
                sql += f" ON CONFLICT ({', '.join(quote_ident(t) for t in target)}) DO UPDATE SET {body}"
        return sql, tuple(params)
    if kind == "update":
        sets, set_params = assignments()
        if not sets:
            kind = "delete"
        else:
            where, where_params = where_key()
            return f"UPDATE {name} SET {sets} WHERE {where}", (*set_params, *where_params)
    if kind == "update_many":
        sets, set_params = assignments()
        if sets:
            first = keys[0]
            picks = [value(first) for _ in range(2)]
            if draw(st.booleans()):
                return f"UPDATE {name} SET {sets} WHERE {quote_ident(first.name)} IN (?, ?)", (*set_params, *picks)
            return f"UPDATE {name} SET {sets}", tuple(set_params)
        kind = "delete_many"
    if kind == "update_expr":
        expression = draw(st.sampled_from(table.expressions))
        if draw(st.booleans()):
            where, where_params = where_key()
            return f"UPDATE OR IGNORE {name} SET {expression} WHERE {where}", tuple(where_params)
        return f"UPDATE OR IGNORE {name} SET {expression}", ()
    if kind in ("rekey", "update_replace"):
        targets = list(keys) if kind == "rekey" else [*keys, *[by_name[u] for u in table.unique]]
        target = draw(st.sampled_from(targets))
        verb = (
            "UPDATE OR REPLACE" if kind == "update_replace" else draw(st.sampled_from(("UPDATE", "UPDATE OR IGNORE")))
        )
        where, where_params = where_key()
        return f"{verb} {name} SET {quote_ident(target.name)} = ? WHERE {where}", (value(target), *where_params)
    if kind == "delete":
        where, where_params = where_key()
        return f"DELETE FROM {name} WHERE {where}", tuple(where_params)
    if kind == "delete_many":
        first = keys[0]
        return f"DELETE FROM {name} WHERE {quote_ident(first.name)} IN (?, ?)", (value(first), value(first))
    raise AssertionError(f"unknown statement kind {kind!r}")


@st.composite
def initial_rows(draw, table: TableDef, columns: Sequence[Column]) -> list[tuple[str, tuple]]:
    """INSERT OR IGNORE statements filling ``table`` before the lake registers it (its snapshot)."""
    rows = []
    names = ", ".join(quote_ident(c.name) for c in columns)
    marks = ", ".join("?" for _ in columns)
    for _ in range(draw(st.integers(0, 3))):
        params = tuple(draw(column_inputs(table, c)) for c in columns)
        rows.append((f"INSERT OR IGNORE INTO {quote_ident(table.name)} ({names}) VALUES ({marks})", params))
    return rows
