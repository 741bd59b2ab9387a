"""One database, one lake: the binding a SQLite database keeps to the lake it feeds.

A database's CDC log has one reader. A second lake opened on it would take its
own snapshot and prune events the first one has not committed, so the first
would silently miss them. So the database records the lake it feeds, in
``_rhei_meta``::

    lake           JSON: the lake it feeds (id from _rhei/lake.json, URL, since when;
                   for a memory:// lake also the process and Lake object holding it)
    previous_lake  JSON: the last lake that let go of it, when and how
                   (detached, closed: a memory:// lake closing, abandoned: its process died)
    binding        "1": bound by a rhei_lake that keeps these records

A lake that opens the database checks and records the binding in one
``BEGIN IMMEDIATE`` transaction, before it writes anything there (no snapshot,
no prune, no trigger), so of two lakes opening at once exactly one wins:

* bound to this lake: go on (a lake that moved to another URL keeps its id);
* bound to another lake: refuse, naming both and the way to detach the other,
  unless that lake is a ``memory://`` one whose process (or Lake object) is gone;
* bound to none: take it, unless this lake holds an older copy of the
  database's tables (it was detached since, or another lake fed it since: it
  missed changes), or the database has mirrored tables but no record at all
  (set up by an older rhei_lake) and this lake does not hold them. An older
  database whose own lake reopens it is adopted silently.

A ``memory://`` lake never takes a database that feeds a durable lake, and lets
go of its database when it closes, so a durable lake can take over (with a
fresh snapshot). :func:`detach_database` ends a binding for good.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rhei_lake import faults
from rhei_lake.capture import cdc_log, reconcile_log
from rhei_lake.capture.sqlite_db import BUSY_TIMEOUT_MS, connect, enable_wal, translate_sqlite_error
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.errors import DatabaseBindingError, RheiError, SchemaError
from rhei_lake.storage.identity import LakeIdentity, lake_identity
from rhei_lake.storage.lake_storage import LakeStorage
from rhei_lake.storage.process_identity import ProcessId
from rhei_lake.sync.tables import read_spec

log = logging.getLogger("rhei_lake.binding")

LAKE_KEY = "lake"
PREVIOUS_KEY = "previous_lake"
FORMAT_KEY = "binding"
BINDING_FORMAT = "1"

DETACHED, CLOSED, ABANDONED = "detached", "closed", "abandoned"
_TRIGGER_PATTERN = "!_rhei!_%"
"""Every trigger rhei_lake installs is named ``_rhei_...``, a prefix it reserves."""

_live_holders: dict[str, weakref.ref[DatabaseBinding]] = {}
"""The bindings of this process's memory:// lakes, by holder token: one closed or garbage-collected is gone."""
_live_lock = threading.Lock()


@dataclass(frozen=True)
class BoundLake:
    """A lake as a database records it: the one it feeds, or the last one that let go of it."""

    lake_id: str
    url: str
    volatile: bool
    since: str
    process: dict[str, Any] | None = None
    holder: str | None = None
    until: str | None = None
    how: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BoundLake:
        raw = json.loads(text)
        return cls(**{k: raw.get(k) for k in cls.__dataclass_fields__ if k in raw})

    def describe(self) -> str:
        if not self.volatile:
            return f"the lake at {self.url} (id {self.lake_id[:12]})"
        owner = ProcessId.from_dict(self.process or {})
        if owner is None:
            return f"the {self.url} lake (id {self.lake_id[:12]})"
        if _same_process(owner):
            return f"the {self.url} lake of this process"
        return f"the {self.url} lake of process {owner.pid} on {owner.host}"

    def alive(self) -> bool:
        """For a memory:// lake: whether the Lake holding it may still run (a durable lake always counts)."""
        if not self.volatile:
            return True
        owner = ProcessId.from_dict(self.process or {})
        if owner is None:
            return False
        if _same_process(owner):
            with _live_lock:
                ref = _live_holders.get(self.holder or "")
            return ref is not None and ref() is not None
        return not owner.is_dead_here(ProcessId.current())


def _same_process(owner: ProcessId) -> bool:
    return owner == ProcessId.current()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _State:
    """What a database records about lakes, read inside the binding transaction."""

    installed: bool
    source_id: str | None
    current: BoundLake | None
    previous: BoundLake | None
    aware: bool
    registered: list[str]


def _read_state(conn: sqlite3.Connection) -> _State:
    source_id = cdc_log.installed_source_id(conn)
    if source_id is None:
        return _State(False, None, None, None, False, [])
    meta = dict(conn.execute(f"SELECT key, value FROM {cdc_log.META_TABLE}").fetchall())
    registered = [r[0] for r in conn.execute(f"SELECT name FROM {cdc_log.REGISTRY_TABLE} ORDER BY name")]
    current = _record(meta.get(LAKE_KEY))
    previous = _record(meta.get(PREVIOUS_KEY))
    return _State(True, source_id, current, previous, FORMAT_KEY in meta, registered)


def _record(text: str | None) -> BoundLake | None:
    if text is None:
        return None
    try:
        return BoundLake.from_json(text)
    except (ValueError, TypeError):
        return None


def _write(conn: sqlite3.Connection, key: str, value: str | None) -> None:
    if value is None:
        conn.execute(f"DELETE FROM {cdc_log.META_TABLE} WHERE key = ?", (key,))
    else:
        conn.execute(f"INSERT OR REPLACE INTO {cdc_log.META_TABLE} (key, value) VALUES (?, ?)", (key, value))


class _NeedHeld(Exception):
    """The decision depends on which tables the lake holds (read outside the transaction)."""


class DatabaseBinding:
    """A lake's hold on the SQLite database it captures from, from :meth:`bind` to :meth:`release`."""

    def __init__(self, path: str, lake: BoundLake, conn: sqlite3.Connection) -> None:
        self.path = path
        self.lake = lake
        self._conn = conn
        self._lock = threading.Lock()
        self._released = False
        self._seen: str | None = None  # the record last found to name this lake

    @classmethod
    def bind(cls, path: str, storage: LakeStorage) -> DatabaseBinding:
        """Check that the database at ``path`` may feed the lake at ``storage`` and record that it does.

        Raises :class:`DatabaseBindingError` (nothing written) when it feeds
        another lake or no longer this one.
        """
        identity = lake_identity(storage)
        me = _claimant(identity)
        conn = connect(path)
        try:
            _switch_to_wal(conn, path)
            held: set[str] | None = None
            for _ in range(2):
                try:
                    _bind(conn, path, me, held)
                    break
                except _NeedHeld:
                    held = _held_source_ids(storage)
        except BaseException:
            conn.close()
            raise
        binding = cls(path, me, conn)
        if me.volatile:
            with _live_lock:
                _live_holders[me.holder or ""] = weakref.ref(binding)
        return binding

    def ensure(self) -> None:
        """Raise :class:`DatabaseBindingError` if the database no longer records this lake (it was detached)."""
        with self._lock:
            try:
                row = self._conn.execute(
                    f"SELECT value FROM {cdc_log.META_TABLE} WHERE key = ?", (LAKE_KEY,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc
        text = row[0] if row else None
        if text is not None and text == self._seen:
            return
        current = _record(text)
        if current is not None and current.lake_id == self.lake.lake_id and current.holder == self.lake.holder:
            self._seen = text
            return
        now = f"feeds {current.describe()}" if current is not None else "feeds no lake"
        raise DatabaseBindingError(
            f"{self.path} was detached from this lake ({self.lake.url}) while it ran and now {now}; "
            "this lake stops here: changes made since its last sync are not in it"
        )

    def release(self) -> None:
        """Let go: a memory:// lake frees its database for the next lake; a durable one keeps it."""
        with self._lock:
            if self._released:
                return
            self._released = True
            try:
                if self.lake.volatile:
                    _let_go(self._conn, self.path, self.lake, CLOSED)
            except RheiError as exc:
                log.warning("%s: could not record that %s let go of it: %s", self.path, self.lake.url, exc)
            finally:
                with _live_lock:
                    _live_holders.pop(self.lake.holder or "", None)
                self._conn.close()


def _switch_to_wal(conn: sqlite3.Connection, path: str) -> None:
    """WAL before anything else (the trigger source needs it), retried while another opener holds a lock.

    Leaving rollback journaling takes an exclusive lock and SQLite does not wait
    for it: a lake opening a new database beside another one would fail at once.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            enable_wal(conn, path)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise translate_sqlite_error(exc, path) from exc
            time.sleep(0.01)


def _claimant(identity: LakeIdentity) -> BoundLake:
    if identity.volatile:
        return BoundLake(
            identity.lake_id, identity.url, True, _now(), process=ProcessId.current().as_dict(), holder=uuid.uuid4().hex
        )
    return BoundLake(identity.lake_id, identity.url, False, _now())


def _held_source_ids(storage: LakeStorage) -> set[str]:
    """The source ids of the tables the lake holds (of the databases it was fed by)."""
    held = set()
    for name in storage.list_tables():
        try:
            source_id = read_spec(storage, name).source_id
        except SchemaError:  # a Delta table rhei_lake did not write: no evidence of any database
            continue
        if source_id:
            held.add(source_id)
    return held


def _bind(conn: sqlite3.Connection, path: str, me: BoundLake, held: set[str] | None) -> None:
    with _immediate(conn, path):
        state = _read_state(conn)
        record = _decide(state, path, me, held)
        faults.point("binding.after_check")
        if record is None:
            return
        if not state.installed:
            cdc_log.install_log(conn)
        _write(conn, LAKE_KEY, record.to_json())
        _write(conn, FORMAT_KEY, BINDING_FORMAT)
        if state.current is not None and state.current.lake_id != me.lake_id:
            _write(conn, PREVIOUS_KEY, replace(state.current, until=_now(), how=ABANDONED).to_json())


@contextmanager
def _immediate(conn: sqlite3.Connection, path: str) -> Iterator[None]:
    """One ``BEGIN IMMEDIATE`` transaction: committed if the block returns, rolled back if it raises."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path) from exc


def _decide(state: _State, path: str, me: BoundLake, held: set[str] | None) -> BoundLake | None:
    """The record to write for ``me`` (``None``: nothing to write), or raise why ``me`` may not bind."""
    current = state.current
    if current is not None and current.lake_id == me.lake_id:
        if current.holder != me.holder and current.alive():  # memory://NAME open twice (its lease stops that first)
            raise DatabaseBindingError(_bound_elsewhere(path, current, me, holds_copy=False))
        if current.url == me.url and current.holder == me.holder:
            return None
        return replace(current, url=me.url, process=me.process, holder=me.holder)  # moved, or taken over
    if not state.installed:
        return me
    if held is None:
        raise _NeedHeld
    if current is not None and (not current.volatile or current.alive()):
        raise DatabaseBindingError(_bound_elsewhere(path, current, me, holds_copy=state.source_id in held))
    if state.source_id in held:
        previous = state.previous
        old_format = not state.aware and previous is None and current is None
        reopened = previous is not None and previous.lake_id == me.lake_id and previous.how == CLOSED
        if old_format or reopened:
            if old_format:
                log.info("%s: recording that it feeds the lake at %s (it predates the record)", path, me.url)
            return me
        last = replace(current, until=_now(), how=ABANDONED) if current is not None else previous
        raise DatabaseBindingError(_missed_changes(path, last, me))
    if not state.aware and state.registered:
        raise DatabaseBindingError(
            f"{path} mirrors {_tables(state.registered)} but records no lake (it was set up by an older "
            f"rhei_lake), and this lake ({me.url}) holds none of them: open the lake it feeds once, which records "
            f"it, or {_detach_hint(path)} to start over in this lake, which then takes a fresh snapshot"
        )
    return me


def _bound_elsewhere(path: str, current: BoundLake, me: BoundLake, *, holds_copy: bool) -> str:
    if current.volatile:
        return (
            f"{path} feeds {current.describe()} (since {current.since}), not this lake ({me.url}): a database "
            "feeds one lake; close that lake first (a memory:// lake lets go of its database when it closes)"
        )
    text = f"{path} feeds {current.describe()} since {current.since}, not this lake ({me.url}"
    if current.url == me.url:
        text += f", id {me.lake_id[:12]}: the lake at that URL was recreated, its _rhei/lake.json is new"
    text += "): a database feeds one lake. "
    if me.volatile:
        return text + (
            f"A memory:// lake never takes a database from a durable lake: open that lake (storage={current.url!r}, "
            f"rh --storage {current.url}), or {_detach_hint(path)} first"
        )
    if holds_copy:
        return text + (
            f"Open that lake instead. This lake holds an older copy of {path}'s tables and cannot follow it again "
            f"(it missed changes since); it stays readable (rhei_lake.open(storage={me.url!r}), "
            f"rh query --storage {me.url})"
        )
    return text + f"Open that lake instead, or {_detach_hint(path)}; this lake then takes a fresh snapshot"


def _missed_changes(path: str, last: BoundLake | None, me: BoundLake) -> str:
    if last is not None and last.lake_id == me.lake_id and last.how == DETACHED:
        what = f"{path} was detached from this lake ({me.url}) at {last.until}"
    elif last is not None:
        how = {DETACHED: "detached from it", CLOSED: "closed", ABANDONED: "gone"}.get(last.how or "", "gone")
        what = f"{path} has fed {last.describe()} ({how} at {last.until}) since this lake ({me.url}) followed it"
    else:
        what = f"{path} records no lake, but this lake ({me.url}) holds an older copy of its tables"
    return (
        f"{what}: the lake keeps what it synced until then but cannot follow the database again, which changed "
        f"since. Mirror {path} into a new storage location; this lake stays readable "
        f"(rhei_lake.open(storage={me.url!r}), rh query --storage {me.url})"
    )


def _detach_hint(path: str) -> str:
    return f"detach the database from it with `rh detach --db {path}` (rhei_lake.detach_database({path!r}))"


def _tables(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"{len(names)} table{'s' if len(names) != 1 else ''} ({shown})"


def _let_go(conn: sqlite3.Connection, path: str, lake: BoundLake, how: str) -> None:
    with _immediate(conn, path):
        row = conn.execute(f"SELECT value FROM {cdc_log.META_TABLE} WHERE key = ?", (LAKE_KEY,)).fetchone()
        current = _record(row[0]) if row else None
        if current is not None and current.lake_id == lake.lake_id and current.holder == lake.holder:
            _write(conn, PREVIOUS_KEY, replace(current, until=_now(), how=how).to_json())
            _write(conn, LAKE_KEY, None)


# -- reading and detaching, without a lake ------------------------------------


def bound_lake(path: str | os.PathLike[str]) -> BoundLake | None:
    """The lake the SQLite database at ``path`` feeds, or ``None`` (reads only; the file must exist).

    Not a ``mode=ro`` connection: closing as the database's last connection, it
    removes the WAL files it found absent, where a read-only one leaves them behind.
    """
    where = os.fspath(path)
    conn = connect(where, create=False)
    try:
        state = _read_state(conn)
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, where) from exc
    finally:
        conn.close()
    return state.current


@dataclass(frozen=True)
class DetachReport:
    """What :func:`detach_database` did."""

    database: str
    lake: BoundLake | None
    """The lake the database fed (``None``: it recorded none)."""
    tables: list[str]
    """The tables whose capture stopped; the next lake opened on the database takes a fresh snapshot of each."""
    events_dropped: int
    """Change events in the CDC log past what the lake recorded as synced (it records when it prunes the log,
    so after a crash some of them may be in the lake)."""

    def __str__(self) -> str:
        if self.lake is None and not self.tables:
            return f"{self.database} feeds no lake: nothing to detach"
        whom = f" from {self.lake.describe()}" if self.lake is not None else ""
        captured = f"capture of {_tables(self.tables)} stopped" if self.tables else "no table was captured"
        return (
            f"detached {self.database}{whom}: {captured}, {self.events_dropped} event(s) not yet synced dropped; "
            "the next lake opened on it takes a fresh snapshot"
        )


def detach_database(path: str | os.PathLike[str]) -> DetachReport:
    """Detach the SQLite database at ``path`` from the lake it feeds, so another lake can take it.

    In one transaction: drops rhei_lake's capture triggers, empties the CDC
    log (keeping its sequence numbers rising), marks every registered table for
    a fresh snapshot and forgets the lake. The next lake opened on the database
    (``rhei_lake.open(oltp_path=..., storage=...)``) takes it, with a fresh
    snapshot of each table. The detached lake stays readable, but never follows
    this database again: opening it on the database raises
    :class:`~rhei_lake.errors.DatabaseBindingError`. Close the lake first: one
    still running stops at its next sync. A ``memory://`` lake still open is
    refused (close it instead). Works without a lake; the file must exist.
    """
    where = os.fspath(path)
    conn = connect(where, create=False)
    try:
        with _immediate(conn, where):
            return _detach(conn, where)
    finally:
        conn.close()


def _detach(conn: sqlite3.Connection, path: str) -> DetachReport:
    state = _read_state(conn)
    if not state.installed:
        return DetachReport(path, None, [], 0)
    current = state.current
    if current is not None and current.volatile and current.alive():
        raise DatabaseBindingError(
            f"{path} feeds {current.describe()}, which is still open: close that lake instead "
            "(a memory:// lake lets go of its database when it closes)"
        )
    triggers = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ? ESCAPE '!'", (_TRIGGER_PATTERN,)
    ).fetchall()
    if current is None and not triggers:  # detached already, or never captured anything
        return DetachReport(path, None, [], 0)
    for (name,) in triggers:
        conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(name)}")
    (dropped,) = conn.execute(
        f"SELECT count(*) FROM {cdc_log.LOG_TABLE} l JOIN {cdc_log.REGISTRY_TABLE} r ON l.tbl = r.name "
        "WHERE l.seq > r.synced_seq AND l.op != ?",
        (cdc_log.OP_SNAPSHOT_MARKER,),
    ).fetchone()
    # The newest row stays: sequence numbers keep rising, so no later event reuses one a lake has seen.
    conn.execute(f"DELETE FROM {cdc_log.LOG_TABLE} WHERE seq < (SELECT max(seq) FROM {cdc_log.LOG_TABLE})")
    for table in state.registered:
        reconcile_log.discard_table(conn, table)  # derived for the old lake; the fresh snapshot supersedes them
    conn.execute(f"UPDATE {cdc_log.REGISTRY_TABLE} SET state = ?, synced_seq = 0", (cdc_log.STATE_SNAPSHOT,))
    last = current or state.previous  # a memory:// lake that closed must not resume either: no triggers since
    if last is not None:
        _write(conn, PREVIOUS_KEY, replace(last, until=_now(), how=DETACHED).to_json())
    _write(conn, LAKE_KEY, None)
    _write(conn, FORMAT_KEY, BINDING_FORMAT)
    return DetachReport(path, current, state.registered, dropped)
