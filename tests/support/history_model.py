"""An independent model of SCD2 history, built from SQLite itself after every statement.

It never reads the lake. After each statement it asks an audit table (filled
by a trigger on the CDC log) which keys the statement touched and at what
source time, and reads those keys' rows from SQLite: every touched key's open
version closes at that time, and a new version opens with the row SQLite now
holds (none if the row is gone). This is docs/design.md's definition, evaluated per
statement in Python rather than per event in SQL.

The audit keeps the first two value slots of each event, so the tables used
with this model must have their primary key in their first one or two columns.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from rhei_lake.capture.triggers import TS_MICROS
from rhei_lake.capture.sqlite_schema import quote_ident
from tests.support.oracle import _sort_key

AUDIT_TABLE = "model_audit"


def install_audit(conn: sqlite3.Connection) -> None:
    """Record (seq, table, op, ts, c0, c1) of every change event; call after registering tables."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (seq INTEGER PRIMARY KEY, tbl, op, ts, c0, c1)")
    conn.execute(
        f"CREATE TRIGGER IF NOT EXISTS {AUDIT_TABLE}_log AFTER INSERT ON _rhei_cdc_log WHEN NEW.op != 'S' "
        f"BEGIN INSERT INTO {AUDIT_TABLE} VALUES (NEW.seq, NEW.tbl, NEW.op, NEW.ts, NEW.c0, NEW.c1); END"
    )


@dataclass
class Version:
    row: tuple[Any, ...]
    valid_from: int
    valid_to: int | None = None


@dataclass
class HistoryModel:
    """Versions and recorded states of some tables, as SQLite says they are."""

    conn: sqlite3.Connection
    keys: dict[str, tuple[str, ...]]
    versions: dict[str, list[Version]] = field(default_factory=dict)
    instants: list[tuple[int, dict[str, list[tuple]]]] = field(default_factory=list)
    _open: dict[str, dict[tuple, Version]] = field(default_factory=dict)
    _audited: int = 0

    def __post_init__(self) -> None:
        for table in self.keys:
            self.versions.setdefault(table, [])
            self._open.setdefault(table, {})
        row = self.conn.execute(f"SELECT max(seq) FROM {AUDIT_TABLE}").fetchone()
        self._audited = row[0] or 0

    @classmethod
    def watching(cls, conn: sqlite3.Connection, keys: dict[str, tuple[str, ...]]) -> HistoryModel:
        """Install the audit on ``conn``'s database (its tables registered already) and model ``keys``' tables."""
        install_audit(conn)
        return cls(conn, keys)

    def apply(self) -> None:
        """Take in the statement(s) run since the last call (each must be its own transaction)."""
        events = self.conn.execute(
            f"SELECT seq, tbl, op, {TS_MICROS}, c0, c1 FROM {AUDIT_TABLE} WHERE seq > ? ORDER BY seq", (self._audited,)
        ).fetchall()
        if not events:
            return
        self._audited = events[-1][0]
        stamps = {ts for _seq, _tbl, _op, ts, _c0, _c1 in events}
        assert len(stamps) == 1, "apply() must follow every single statement"
        ts = stamps.pop()
        touched: dict[str, set[tuple]] = {}
        for _seq, tbl, _op, _ts, c0, c1 in events:
            width = len(self.keys[tbl])
            touched.setdefault(tbl, set()).add((c0, c1)[:width])
        for table, keys in touched.items():
            for key in keys:
                self._touch(table, key, ts)

    def _touch(self, table: str, key: tuple, ts: int) -> None:
        cols = self.keys[table]
        where = " AND ".join(f"{quote_ident(c)} = ?" for c in cols)
        row = self.conn.execute(f"SELECT * FROM {quote_ident(table)} WHERE {where}", key).fetchone()
        current = self._open[table].pop(key, None)
        if current is not None:
            current.valid_to = ts
        if row is not None:
            version = Version(tuple(row), ts)
            self.versions[table].append(version)
            self._open[table][key] = version

    def record_instant(self) -> int:
        """Note every table's state now; returns the instant (UTC epoch microseconds).

        SQLite's clock has millisecond resolution, so the instant is kept 2 ms
        clear of the statements on either side.
        """
        time.sleep(0.002)
        instant = time.time_ns() // 1000
        states = {
            table: sorted(self.conn.execute(f"SELECT * FROM {quote_ident(table)}").fetchall(), key=_sort_key)
            for table in self.keys
        }
        self.instants.append((instant, states))
        time.sleep(0.002)
        return instant

    def history(self, table: str) -> list[tuple]:
        """Every version as (row..., valid_from, valid_to), sorted."""
        return sorted((v.row + (v.valid_from, v.valid_to) for v in self.versions[table]), key=_sort_key)

    def alive_at(self, table: str, instant: int) -> list[tuple]:
        """The rows alive at ``instant`` by the model's versions (to cross-check the recorded states)."""
        rows = [
            v.row
            for v in self.versions[table]
            if v.valid_from <= instant and (v.valid_to is None or v.valid_to > instant)
        ]
        return sorted(rows, key=_sort_key)


def lake_history(lake, table: str) -> list[tuple]:
    """The lake's ``table_history`` as (row..., valid_from, valid_to) with instants in microseconds, sorted."""
    from rhei_lake.catalog import VALID_FROM, VALID_TO
    from rhei_lake.timeutil import to_micros

    cols = ", ".join(quote_ident(c) for c in lake.table_spec(table).column_names)
    result = lake.query(f"SELECT {cols}, {VALID_FROM}, {VALID_TO} FROM {quote_ident(table + '_history')}")
    rows = []
    for values in result.to_pylist():
        items = list(values.values())
        valid_to = items[-1]
        rows.append(tuple(items[:-2]) + (to_micros(items[-2]), None if valid_to is None else to_micros(valid_to)))
    return sorted(rows, key=_sort_key)


CLAMP_SLACK_US = 1_000_000
"""How much later than its statement's time the lake may date a change: a change the lake's previous
read of the CDC log did not see is dated just after that read (docs/design.md). A statement racing a
sync in another thread shows it, and so does one run in the same millisecond as the read: SQLite's
clock has millisecond resolution, so its time reads as before the read. Well under a second."""


def assert_same_history(actual: list[tuple], expected: list[tuple], table: str) -> None:
    """The lake's history (``lake_history``) equals the model's, version by version, rows exactly;
    each instant equal to the model's statement time or later by at most :data:`CLAMP_SLACK_US`."""
    assert len(actual) == len(expected), f"{table}: {len(actual)} versions in the lake, {len(expected)} in the model"
    for got, want in zip(actual, expected, strict=True):
        assert got[:-2] == want[:-2], f"{table}: the history table differs from the model: {got} != {want}"
        for lake_ts, model_ts in zip(got[-2:], want[-2:], strict=True):
            if lake_ts is None or model_ts is None:
                assert lake_ts == model_ts, f"{table}: {got} != {want}"
            else:
                assert 0 <= lake_ts - model_ts <= CLAMP_SLACK_US, f"{table}: {got} dated apart from {want}"
