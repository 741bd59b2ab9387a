"""What the CDC triggers must know about a SQLite table beyond its spec.

* Each column's affinity, from its declared type by SQLite's rules (a spec may
  override the declared type for the lake; SQLite still stores by the original).
  It decides how exact a comparison of two stored values must be.
* Its primary key's collations, and its other unique indexes: the rows an
  ``INSERT OR REPLACE`` / ``UPDATE OR REPLACE`` may delete without firing a
  delete trigger. Expression terms and partial-index conditions are read back
  from the index's ``CREATE INDEX`` text.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from rhei_lake.capture.types import sqlite_affinity
from rhei_lake.errors import SchemaError

BINARY = "BINARY"


@dataclass(frozen=True)
class IndexTerm:
    """One term of a unique index: a column or an expression over the table's columns."""

    sql: str
    """The term as SQL with bare column names (a quoted column name for column terms)."""
    collation: str
    column: str | None = None
    """The column, for a column term."""


@dataclass(frozen=True)
class UniqueIndex:
    """A unique index other than the primary key: no two rows agree on all its terms."""

    name: str
    terms: tuple[IndexTerm, ...]
    where: str | None
    """The condition of a partial index: only rows satisfying it must be unique."""
    columns: tuple[str, ...]
    """The table's columns the index depends on (terms and condition), in table order."""


@dataclass(frozen=True)
class TableShape:
    """Affinities, primary key index and other unique indexes of one table, read from SQLite."""

    affinities: Mapping[str, str]
    """Each column's affinity, by :func:`fold`-ed name."""
    unique: tuple[UniqueIndex, ...]
    """Every unique index but the primary key's."""
    primary: UniqueIndex | None = None
    """The primary key's own index (none for an INTEGER PRIMARY KEY, which is the rowid)."""
    rowid_key: str | None = None
    """The INTEGER PRIMARY KEY column, an alias of the rowid, which only holds integers."""

    def affinity(self, column: str) -> str:
        if self.rowid_key is not None and fold(column) == fold(self.rowid_key):
            return "ROWID"
        return self.affinities.get(fold(column), "BLOB")

    def key_collation(self, column: str) -> str | None:
        """The collation of key ``column`` in the key's index; ``None`` for the rowid, which has none."""
        if self.primary is None:
            return None
        return next((t.collation for t in self.primary.terms if fold(t.column or "") == fold(column)), None)


def fold(name: str) -> str:
    """A name as SQLite compares names: ASCII letters case-insensitively, everything else exactly."""
    return "".join(c.lower() if c < "\x80" else c for c in name)


def read_shape(conn: sqlite3.Connection, table: str) -> TableShape:
    """The shape of ``table`` as SQLite declares it now."""
    columns = conn.execute("SELECT name, type, pk FROM pragma_table_xinfo(?)", (table,)).fetchall()
    if not columns:
        raise SchemaError(f"table {table!r} does not exist in the SQLite database")
    names = [c[0] for c in columns]
    affinities = {fold(name): sqlite_affinity(declared) for name, declared, _ in columns}
    key = [name for name, _, pk in columns if pk]
    primary = None
    unique = []
    indexes = conn.execute('SELECT name, "unique", origin, partial FROM pragma_index_list(?)', (table,)).fetchall()
    for name, is_unique, origin, partial in indexes:
        if not is_unique:
            continue
        keyed = conn.execute(
            "SELECT cid, name, coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", (name,)
        ).fetchall()
        if origin == "pk":
            terms = tuple(IndexTerm(_quote(col), coll or BINARY, col) for _, col, coll in keyed)
            primary = UniqueIndex(name, terms, None, tuple(col for _, col, _ in keyed))
            continue
        index = _unique_index(conn, table, name, keyed, bool(partial), names)
        if index is not None:
            unique.append(index)
    # A key without an index of its own is the rowid (WITHOUT ROWID tables always have one).
    rowid_key = key[0] if len(key) == 1 and primary is None else None
    return TableShape(affinities, tuple(unique), primary, rowid_key)


def _unique_index(
    conn: sqlite3.Connection, table: str, name: str, keyed: list[tuple], partial: bool, columns: list[str]
) -> UniqueIndex | None:
    if any(cid == -1 for cid, _, _ in keyed):
        return None  # covers the rowid, which is unique by itself
    expressions = any(cid == -2 for cid, _, _ in keyed)
    texts: list[str] = []
    where = None
    if expressions or partial:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)).fetchone()
        texts, where = split_create_index(sql or "")
        if len(texts) != len(keyed) or (partial and where is None):
            raise SchemaError(
                f"table {table!r}: cannot read the terms of unique index {name!r} from {sql!r}; "
                "rhei_lake needs them to capture the rows INSERT OR REPLACE deletes through it"
            )
    terms = []
    used: set[str] = set()
    for i, (cid, col, coll) in enumerate(keyed):
        if cid >= 0:
            terms.append(IndexTerm(_quote(col), coll or BINARY, col))
            used.add(fold(col))
        else:
            terms.append(IndexTerm(texts[i], coll or BINARY))
            used |= _referenced(texts[i], columns)
    if where is not None:
        used |= _referenced(where, columns)
    return UniqueIndex(name, tuple(terms), where, tuple(c for c in columns if fold(c) in used))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- reading CREATE INDEX text -------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))
  | (?P<blob>[xX]'[^']*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<ident>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*)
  | (?P<op>->>|->|\|\||<=|>=|==|!=|<>|<<|>>|.)
    """,
    re.VERBOSE | re.DOTALL,
)


def _tokens(sql: str) -> Iterator[tuple[str, str]]:
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "op"
        if kind != "space":
            yield kind, match.group()


def split_create_index(sql: str) -> tuple[list[str], str | None]:
    """The indexed terms (without ASC/DESC) and the WHERE condition of a CREATE INDEX statement."""
    tokens = list(_tokens(sql))
    start = next((i for i, (kind, text) in enumerate(tokens) if kind == "op" and text == "("), None)
    if start is None:
        return [], None
    terms: list[list[tuple[str, str]]] = [[]]
    depth = 0
    end = None
    for i in range(start + 1, len(tokens)):
        kind, text = tokens[i]
        if kind == "op" and text == "(":
            depth += 1
        elif kind == "op" and text == ")":
            if depth == 0:
                end = i
                break
            depth -= 1
        elif kind == "op" and text == "," and depth == 0:
            terms.append([])
            continue
        terms[-1].append(tokens[i])
    if end is None:
        return [], None
    texts = []
    for term in terms:
        if term and term[-1][0] == "word" and term[-1][1].upper() in ("ASC", "DESC"):
            term = term[:-1]
        texts.append(" ".join(text for _, text in term))
    rest = tokens[end + 1 :]
    where = None
    if rest and rest[0][0] == "word" and rest[0][1].upper() == "WHERE":
        where = " ".join(text for _, text in rest[1:]).rstrip(";").strip() or None
    return texts, where


def _referenced(sql: str, columns: list[str]) -> set[str]:
    """Lower-cased names of ``columns`` that appear in ``sql`` as identifiers (an over-approximation)."""
    known = {fold(c) for c in columns}
    found = set()
    tokens = list(_tokens(sql))
    for i, (kind, text) in enumerate(tokens):
        if kind == "word":
            name = text
            if i + 1 < len(tokens) and tokens[i + 1] == ("op", "("):
                continue  # a function name
        elif kind == "ident":
            name = text[1:-1]
            if text[0] in '"`':
                name = name.replace(text[0] * 2, text[0])
        else:
            continue
        if fold(name) in known:
            found.add(fold(name))
    return found
