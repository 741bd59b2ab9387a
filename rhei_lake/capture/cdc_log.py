"""The CDC log and registry tables rhei_lake keeps inside the SQLite database it owns.

::

    _rhei_cdc_log(seq INTEGER PRIMARY KEY, tbl, op, ts, c0, c1, ...)   change events
    _rhei_cdc_pending(tbl, mark, c0, c1, ...)                          rows a REPLACE may delete
    _rhei_tables(name, spec, state, snapshot_from, snapshot_to, synced_seq)
    _rhei_meta(key, value)                                            source_id, format, dating

``seq`` is SQLite's rowid, i.e. ``max(seq) + 1``. Pruning never deletes the
newest row, so a sequence number is never handed out twice (AUTOINCREMENT would
guarantee the same but costs ~40% more per captured write).

``_rhei_cdc_pending`` only holds rows while one statement writes one row (see
:mod:`rhei_lake.capture.triggers`); whatever it holds between transactions is
left over from a conflict that deleted nothing, and is cleared when pruning.

A snapshot reserves the sequence numbers ``snapshot_from+1 .. snapshot_to-1``
for the table's existing rows with one marker row (op ``S``) at ``snapshot_to``.
"""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass

from rhei_lake import faults
from rhei_lake.capture.triggers import LOG_TABLE, NOW, PENDING_TABLE, TS_MICROS
from rhei_lake.catalog import TableSpec

REGISTRY_TABLE = "_rhei_tables"
META_TABLE = "_rhei_meta"
LOG_FORMAT = "1"
DATING_KEY = "dating"  # the last read of the log no event carried (rhei_lake.sync.commit_time)
OP_SNAPSHOT_MARKER = "S"

STATE_SNAPSHOT = "snapshot"
STATE_READY = "ready"

_FIXED = ("seq", "tbl", "op", "ts")


@dataclass(frozen=True)
class Registration:
    """A captured table as the registry records it."""

    spec: TableSpec
    state: str
    snapshot_from: int
    snapshot_to: int
    synced_seq: int

    @property
    def ready(self) -> bool:
        return self.state == STATE_READY


def install_log(conn: sqlite3.Connection) -> str:
    """Create the log, registry and meta tables if missing; return the source id."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} (seq INTEGER PRIMARY KEY, tbl, op, ts)")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (name TEXT PRIMARY KEY, spec TEXT NOT NULL, "
        "state TEXT NOT NULL, snapshot_from INTEGER NOT NULL, snapshot_to INTEGER NOT NULL, "
        "synced_seq INTEGER NOT NULL DEFAULT 0)"
    )
    conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    install_pending(conn)
    conn.execute(f"INSERT OR IGNORE INTO {META_TABLE} VALUES ('format', ?)", (LOG_FORMAT,))
    conn.execute(f"INSERT OR IGNORE INTO {META_TABLE} VALUES ('source_id', ?)", (uuid.uuid4().hex,))
    return conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'source_id'").fetchone()[0]


def has_pending_table(conn: sqlite3.Connection) -> bool:
    """Whether the pending table exists (logs written before the guard triggers lack it)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(query, (PENDING_TABLE,)).fetchone() is not None


def install_pending(conn: sqlite3.Connection) -> None:
    """Create the pending table, as wide as the log, if it is missing."""
    if has_pending_table(conn):
        return
    slots = "".join(f", c{i}" for i in range(log_slots(conn)))
    conn.execute(f"CREATE TABLE {PENDING_TABLE} (tbl, mark{slots})")
    conn.execute(f"CREATE INDEX {PENDING_TABLE}_tbl ON {PENDING_TABLE} (tbl)")


def installed_source_id(conn: sqlite3.Connection) -> str | None:
    """The source id if the log, registry and meta tables all exist, else ``None`` (read only)."""
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '_rhei_%'")}
    if not {LOG_TABLE, REGISTRY_TABLE, META_TABLE} <= names:
        return None
    row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'source_id'").fetchone()
    return row[0] if row else None


def log_slots(conn: sqlite3.Connection) -> int:
    """How many value columns (c0..cN-1) the log has."""
    names = [r[1] for r in conn.execute(f"PRAGMA table_info({LOG_TABLE})")]
    return len([n for n in names if n not in _FIXED])


def ensure_slots(conn: sqlite3.Connection, count: int) -> int:
    """Add untyped value columns until the log and the pending table have at least ``count``."""
    have = log_slots(conn)
    for i in range(have, count):
        conn.execute(f"ALTER TABLE {LOG_TABLE} ADD COLUMN c{i}")
        conn.execute(f"ALTER TABLE {PENDING_TABLE} ADD COLUMN c{i}")
    return max(have, count)


def max_seq(conn: sqlite3.Connection) -> int:
    return conn.execute(f"SELECT coalesce(max(seq), 0) FROM {LOG_TABLE}").fetchone()[0]


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute(f"SELECT value FROM {META_TABLE} WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def write_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(f"INSERT OR REPLACE INTO {META_TABLE} (key, value) VALUES (?, ?)", (key, value))


@dataclass(frozen=True)
class SnapshotClock:
    """Where a snapshot's rows go in the log, fixed before they are counted (inside the write transaction
    that reserves them): numbered from ``after + 1``, stamped ``ts_micros`` (``julian`` as the log stores it)."""

    after: int
    julian: float
    ts_micros: int


def snapshot_clock(conn: sqlite3.Connection) -> SnapshotClock:
    """The log's last sequence number and SQLite's clock, now (inside the caller's write transaction)."""
    julian, micros = conn.execute(f"SELECT ts, {TS_MICROS} FROM (SELECT {NOW} AS ts)").fetchone()
    return SnapshotClock(max_seq(conn), julian, micros)


def reserve_snapshot(
    conn: sqlite3.Connection, table: str, rows: int, clock: SnapshotClock | None = None
) -> tuple[int, int, int]:
    """Reserve sequence numbers for ``rows`` existing rows, after ``clock`` (taken now if not given, in the
    same write transaction); returns (from, to, ts_micros)."""
    if clock is None:
        clock = snapshot_clock(conn)
    marker = clock.after + rows + 1
    conn.execute(
        f"INSERT INTO {LOG_TABLE} (seq, tbl, op, ts) VALUES (?, ?, ?, ?)",
        (marker, table, OP_SNAPSHOT_MARKER, clock.julian),
    )
    return clock.after, marker, clock.ts_micros


def read_registry(conn: sqlite3.Connection) -> dict[str, Registration]:
    rows = conn.execute(
        f"SELECT spec, state, snapshot_from, snapshot_to, synced_seq FROM {REGISTRY_TABLE} ORDER BY name"
    ).fetchall()
    out = {}
    for spec_json, state, snap_from, snap_to, synced in rows:
        spec = TableSpec.from_json(spec_json)
        out[spec.name] = Registration(spec, state, snap_from, snap_to, synced)
    return out


def write_registration(conn: sqlite3.Connection, reg: Registration) -> None:
    conn.execute(
        f"INSERT OR REPLACE INTO {REGISTRY_TABLE} (name, spec, state, snapshot_from, snapshot_to, synced_seq) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (reg.spec.name, reg.spec.to_json(), reg.state, reg.snapshot_from, reg.snapshot_to, reg.synced_seq),
    )


def delete_table_events(conn: sqlite3.Connection, table: str) -> None:
    """Remove ``table``'s events (its state is about to be re-snapshotted, or it is no longer mirrored).

    The newest row of the log stays, so that no sequence number is handed out
    twice; when it is one of ``table``'s events it stays as a bare marker, which
    no read decodes: a later process reads again from the oldest table's
    position and must not meet an event of a table no longer registered.
    """
    conn.execute(f"DELETE FROM {LOG_TABLE} WHERE tbl = ? AND seq < (SELECT max(seq) FROM {LOG_TABLE})", (table,))
    conn.execute(
        f"UPDATE {LOG_TABLE} SET op = ? WHERE tbl = ? AND seq = (SELECT max(seq) FROM {LOG_TABLE})",
        (OP_SNAPSHOT_MARKER, table),
    )
    conn.execute(f"DELETE FROM {PENDING_TABLE} WHERE tbl = ?", (table,))


def read_events(conn: sqlite3.Connection, after: int, limit: int, slots: int) -> list[tuple]:
    """Up to ``limit`` log rows with ``seq > after``, in order: (seq, tbl, op, ts, c0..)."""
    cols = ", ".join(("seq", "tbl", "op", TS_MICROS, *[f"c{i}" for i in range(slots)]))
    return conn.execute(f"SELECT {cols} FROM {LOG_TABLE} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)).fetchall()


def prune(conn: sqlite3.Connection, through: int, synced: dict[str, int]) -> int:
    """Delete committed events up to ``through`` (never the newest row); record per-table progress."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cur = conn.execute(
            f"DELETE FROM {LOG_TABLE} WHERE seq <= ? AND seq < (SELECT max(seq) FROM {LOG_TABLE})", (through,)
        )
        for table, seq in synced.items():
            conn.execute(f"UPDATE {REGISTRY_TABLE} SET synced_seq = max(synced_seq, ?) WHERE name = ?", (seq, table))
        # Between transactions every pending row is a leftover (see above); one whose row is
        # deleted later must not meet a log that no longer holds that row's D.
        conn.execute(f"DELETE FROM {PENDING_TABLE}")
        faults.point("cdc.before_prune_commit")
        conn.execute("COMMIT")
        return cur.rowcount
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def pending_count(conn: sqlite3.Connection, after: int, *, table: str | None = None) -> tuple[int, int | None]:
    """How many events wait after ``after`` (of ``table`` only, if given), and the oldest one's timestamp (micros)."""
    where = "" if table is None else " AND tbl = ?"
    params = (after, OP_SNAPSHOT_MARKER) if table is None else (after, OP_SNAPSHOT_MARKER, table)
    count, oldest = conn.execute(
        f"SELECT count(*), min({TS_MICROS}) FROM {LOG_TABLE} WHERE seq > ? AND op != ?{where}", params
    ).fetchone()
    return count, oldest


def read_event(conn: sqlite3.Connection, seq: int, slots: int) -> tuple | None:
    """The log row of event ``seq`` (seq, tbl, op, ts, c0..), or ``None`` if it is not in the log."""
    cols = ", ".join(("seq", "tbl", "op", TS_MICROS, *[f"c{i}" for i in range(slots)]))
    return conn.execute(f"SELECT {cols} FROM {LOG_TABLE} WHERE seq = ?", (seq,)).fetchone()


def set_event_slots(conn: sqlite3.Connection, seq: int, slots: dict[int, object]) -> None:
    """Overwrite value slots of event ``seq`` (inside the caller's transaction)."""
    assignments = ", ".join(f"c{i} = ?" for i in slots)
    conn.execute(f"UPDATE {LOG_TABLE} SET {assignments} WHERE seq = ?", (*slots.values(), seq))


def tables_between(conn: sqlite3.Connection, after: int, through: int) -> list[str]:
    """The tables with events in ``(after, through]``."""
    rows = conn.execute(
        f"SELECT DISTINCT tbl FROM {LOG_TABLE} WHERE seq > ? AND seq <= ? AND op != ?",
        (after, through, OP_SNAPSHOT_MARKER),
    ).fetchall()
    return [r[0] for r in rows]


def table_events(conn: sqlite3.Connection, table: str, after: int, slots: int) -> list[tuple]:
    """Every logged event of ``table`` after sequence ``after``, in order: (seq, tbl, op, ts, c0..); no markers."""
    cols = ", ".join(("seq", "tbl", "op", TS_MICROS, *[f"c{i}" for i in range(slots)]))
    return conn.execute(
        f"SELECT {cols} FROM {LOG_TABLE} WHERE tbl = ? AND seq > ? AND op != ? ORDER BY seq",
        (table, after, OP_SNAPSHOT_MARKER),
    ).fetchall()
