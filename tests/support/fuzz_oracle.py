"""SQLite as the fuzzer's oracle: its committed state at recorded instants, and the lake held against it.

The SQLite side records, at every instant it is asked to (after each commit
and each sync), the committed rows of every table with the columns they had
then. Each column has an *incarnation*: a column dropped and added again
under its name is a new column, whose rows read NULL (issue 14, item 6). At an
instant recorded before such a drop the lake may show the old value or NULL
("history before the drop may keep them").

The lake side reads ``t`` (current rows), ``t`` ``as_of`` an instant, and
``t_history``; the checks compare them with the recorded states through a
:class:`~tests.support.fuzz_values.ValueJudge`, so floats compare by their bits.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.catalog import SEQ, VALID_FROM, VALID_TO
from tests.support.fuzz_values import ValueJudge, comparison_mode, datetime_micros, from_micros, show
from tests.support.oracle import _sort_key

NULL = ("null",)


@dataclass(frozen=True)
class TableState:
    """A table's committed rows at one instant, with its columns (name, declared type) and their incarnations."""

    columns: tuple[tuple[str, str], ...]
    incarnations: dict[str, int]
    rows: tuple[tuple, ...]


@dataclass(frozen=True)
class Moment:
    """An instant the lake must answer for: SQLite's committed state then, and where in the program it was."""

    micros: int
    step: int
    label: str
    states: dict[str, TableState]
    blind: frozenset[str] = frozenset()
    """Tables changed behind the lake's back and not synced since: the lake learns their changes of
    this time only at the next sync, and dates them then."""
    txn_states: dict[str, TableState] | None = None
    """While a transaction held uncommitted writes: the tables as it saw them (see
    ``LakeFuzz.remember_txn_view``); ``states`` becomes this once the transaction commits, if the rule
    dating changes says the lake shows its writes at this instant."""


class SqliteRecord:
    """Reads SQLite's committed state (never writes) and records it at instants."""

    def __init__(self, path: str, tables: list[str]) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.tables = list(tables)
        self.moments: list[Moment] = []
        self._incarnation: dict[tuple[str, str], int] = {}
        self.columns: dict[str, tuple[tuple[str, str], ...]] = {}
        self._version: int | None = None
        self.refresh_schema()

    def close(self) -> None:
        self.conn.close()

    def refresh_schema(self) -> None:
        """Re-read every table's columns; a name that reappears after it was gone is a new incarnation."""
        for table in self.tables:
            rows = self.conn.execute("SELECT name, type FROM pragma_table_xinfo(?)", (table,)).fetchall()
            now = tuple((name, declared) for name, declared in rows)
            before = {name for name, _ in self.columns.get(table, ())}
            for name, _ in now:
                if name not in before:
                    self._incarnation[(table, name)] = self._incarnation.get((table, name), 0) + 1
            self.columns[table] = now

    def incarnation(self, table: str, column: str) -> int:
        return self._incarnation.get((table, column), 0)

    def data_version(self) -> int:
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def user_digest(self) -> int:
        """A digest of the application's tables (schema and rows), not the lake's own ``_rhei`` tables.

        Unlike ``PRAGMA data_version`` it does not move when the lake's background work (pruning
        its CDC log) commits: what says whether a refused statement changed the database.
        """
        objects = self.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "AND name NOT LIKE '\\_rhei%' ESCAPE '\\' ORDER BY name"
        ).fetchall()
        rows = [
            (name, sql, sorted(map(repr, self.conn.execute(f"SELECT * FROM {quote_ident(name)}"))))
            for name, sql in objects
        ]
        return hash(repr(rows))

    def changed(self) -> bool:
        """Whether another connection committed since the last recorded instant."""
        return self.data_version() != self._version

    def state(self, table: str, *, conn: sqlite3.Connection | None = None) -> TableState:
        """``table``'s rows as ``conn`` sees them (default: committed, as this recorder's own connection)."""
        columns = self.columns[table]
        names = ", ".join(quote_ident(n) for n, _ in columns)
        rows = (conn or self.conn).execute(f"SELECT {names} FROM {quote_ident(table)}").fetchall()
        return TableState(columns, {n: self.incarnation(table, n) for n, _ in columns}, tuple(rows))

    def record(self, step: int, label: str, *, blind: frozenset[str] = frozenset()) -> Moment:
        """SQLite's committed state now, at an instant no statement shares.

        Events carry SQLite's clock truncated to the millisecond, so a statement
        before the instant is stamped at or before it, and one run after the
        next millisecond boundary strictly after it.
        """
        self._version = self.data_version()
        micros = time.time_ns() // 1000
        states = {table: self.state(table) for table in self.tables}
        moment = Moment(micros, step, label, states, blind)
        self.moments.append(moment)
        while time.time_ns() // 1000 < (micros // 1000 + 1) * 1000 + 50:
            time.sleep(0.0003)
        return moment


# -- the lake side -----------------------------------------------------------------


@dataclass(frozen=True)
class LakeColumn:
    name: str
    declared: str
    mode: str


def lake_columns(lake: rhei_lake.Lake, table: str) -> list[LakeColumn]:
    """The lake's columns of ``table``; a value is judged by the type SQLite stored it under (the table's own
    declaration, also when ``types=`` mirrors the column as another type)."""
    spec = lake.table_spec(table)
    return [LakeColumn(c.name, c.source_type or c.declared_type, comparison_mode(c.arrow_type)) for c in spec.columns]


def _select(columns: list[LakeColumn]) -> str:
    return ", ".join(quote_ident(c.name) for c in columns)


def lake_rows(lake: rhei_lake.Lake, table: str, columns: list[LakeColumn], *, as_of: int | None = None) -> list[tuple]:
    """``table``'s rows (now, or ``as_of`` an instant in micros), values in ``columns`` order."""
    when = from_micros(as_of) if as_of is not None else None
    result = lake.query(f"SELECT {_select(columns)} FROM {quote_ident(table)}", as_of=when, hint="olap")
    return [tuple(r.values()) for r in result.to_pylist()]


@dataclass(frozen=True)
class Version:
    row: tuple
    valid_from: int
    valid_to: int | None
    seq: int


def lake_versions(lake: rhei_lake.Lake, table: str, columns: list[LakeColumn]) -> list[Version]:
    """``table_history``: every version, instants in micros, in ``_rhei_seq`` order."""
    sql = (
        f"SELECT {_select(columns)}, {VALID_FROM}, {VALID_TO}, {SEQ} "
        f"FROM {quote_ident(table + '_history')} ORDER BY {SEQ}"
    )
    versions = []
    for values in lake.query(sql, hint="olap").to_pylist():
        items = list(values.values())
        *row, valid_from, valid_to, seq = items
        end = None if valid_to is None else datetime_micros(valid_to)
        versions.append(Version(tuple(row), datetime_micros(valid_from), end, seq))
    return versions


# -- comparing -----------------------------------------------------------------------


class Lenient(frozenset):
    """A cell that may hold any of several tokens (a re-added column at an instant before its drop)."""


class Comparator:
    """Compares recorded SQLite states with lake rows, value by value through a judge."""

    def __init__(self, judge: ValueJudge) -> None:
        self.judge = judge

    def expected(self, record: SqliteRecord, table: str, state: TableState, columns: list[LakeColumn]) -> list[tuple]:
        index = {name: i for i, (name, _) in enumerate(state.columns)}
        out = []
        for row in state.rows:
            cells = []
            for col in columns:
                i = index.get(col.name)
                if i is None:  # added after this instant: NULL then
                    cells.append(NULL)
                    continue
                token = self.judge.sqlite_token(row[i], col.mode)
                if state.incarnations.get(col.name) != record.incarnation(table, col.name):
                    token = Lenient({token, NULL})  # an older column of that name
                cells.append(token)
            out.append(tuple(cells))
        return out

    def actual(self, rows: list[tuple], columns: list[LakeColumn]) -> list[tuple]:
        return [tuple(self.judge.lake_token(v, c.declared) for v, c in zip(row, columns)) for row in rows]

    @staticmethod
    def difference(expected: list[tuple], actual: list[tuple]) -> tuple[list[int], list[int]]:
        """Indexes of expected rows the lake lacks, and of lake rows nothing expected matches."""
        pending = Counter(actual)
        missing, loose = [], []
        for i, row in enumerate(expected):
            if any(isinstance(c, Lenient) for c in row):
                loose.append(i)
            elif pending[row] > 0:
                pending[row] -= 1
            else:
                missing.append(i)
        for i in loose:
            match = next((a for a in pending if pending[a] > 0 and _fits(expected[i], a)), None)
            if match is None:
                missing.append(i)
            else:
                pending[match] -= 1
        unexpected = []
        left = Counter({k: v for k, v in pending.items() if v > 0})
        for j, row in enumerate(actual):
            if left[row] > 0:
                left[row] -= 1
                unexpected.append(j)
        return missing, unexpected


def _fits(expected: tuple, actual: tuple) -> bool:
    return all((a in e) if isinstance(e, Lenient) else a == e for e, a in zip(expected, actual))


def describe_difference(
    what: str,
    columns: list[LakeColumn],
    sqlite_rows: list[tuple],
    state_columns: tuple[tuple[str, str], ...],
    lake_raw: list[tuple],
    missing: list[int],
    unexpected: list[int],
) -> str:
    names = [c.name for c in columns]
    index = {name: i for i, (name, _) in enumerate(state_columns)}

    def sqlite_row(row: tuple) -> str:
        return "(" + ", ".join(f"{n}={show(row[index[n]]) if n in index else 'absent'}" for n in names) + ")"

    def lake_row(row: tuple) -> str:
        return "(" + ", ".join(f"{n}={show(v)}" for n, v in zip(names, row)) + ")"

    lines = [f"{what}: SQLite has {len(sqlite_rows)} rows, the lake {len(lake_raw)}"]
    for i in sorted(missing, key=lambda i: _sort_key(tuple(map(repr, sqlite_rows[i]))))[:6]:
        lines.append(f"  only in SQLite: {sqlite_row(sqlite_rows[i])}")
    for j in unexpected[:6]:
        lines.append(f"  only in lake:   {lake_row(lake_raw[j])}")
    return "\n".join(lines)


def alive_at(versions: list[Version], micros: int) -> list[Version]:
    return [v for v in versions if v.valid_from <= micros and (v.valid_to is None or v.valid_to > micros)]


def chain_errors(versions: list[Version], key_index: list[int], tokens: list[tuple]) -> list[str]:
    """Per key (by the lake's key values): versions in order, never overlapping, at most the last one open."""
    errors = []
    by_key: dict[tuple, list[tuple[Version, tuple]]] = {}
    for version, token in zip(versions, tokens):
        by_key.setdefault(tuple(token[i] for i in key_index), []).append((version, token))
    for key, chain in by_key.items():
        for (before, _), (after, _) in zip(chain, chain[1:]):
            if before.valid_to is None:
                errors.append(f"key {key}: version seq {before.seq} is still open but seq {after.seq} follows it")
            elif before.valid_to > after.valid_from:
                errors.append(
                    f"key {key}: version seq {before.seq} ends at {before.valid_to}, after seq {after.seq} "
                    f"begins at {after.valid_from}"
                )
        for version, _ in chain:
            if version.valid_to is not None and version.valid_to < version.valid_from:
                errors.append(f"key {key}: version seq {version.seq} ends before it begins")
    return errors
