"""The differential fuzzer: random programs against a lake and plain sqlite3 connections, SQLite the oracle.

A program (one hypothesis example) creates the tables of its operation
families (:mod:`tests.support.fuzz_tables`) with a few rows, opens a lake on
a local path, registers them, and then runs steps: bursts of statements from
the lake's connection (``Lake.execute`` / ``execute_batch``) and from plain
``sqlite3`` connections with different settings, transaction control,
syncs, flushes, compactions, schema changes, reopens and crash-restarts.

SQLite's committed state is recorded at an instant after every commit and
every sync (:class:`~tests.support.fuzz_oracle.SqliteRecord`). After every
sync the lake must answer exactly as SQLite did, for every table written
since the last check:

* ``t`` (``SELECT *``) equals SQLite's table now;
* ``t_history``: per key, versions in order that never overlap; the open
  versions are SQLite's rows now; at every recorded instant the versions alive
  then are SQLite's rows then (the chain is the sequence of states SQLite's
  row had, or finer);
* for one of those tables in turn (every table at the end of the program):
  ``t`` ``as_of`` the newest recorded instant and an older one equals SQLite's
  rows then (more instants at the end).

Queries are what a program spends its time on (each costs more with every
mirrored table), hence the rotation.

Either the lake is exact or it stops with a clear error at the moment: a
statement the lake refuses must leave SQLite unchanged, and a sync may stop
with a terminal error only if it names a table whose schema was changed
behind the lake's back (or whose keys it cannot represent); the program ends
there. Anything else is a failure, reported with the whole program.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from hypothesis import note
from hypothesis.errors import HypothesisException, InvalidArgument
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.errors import RheiError, SchemaChangedError
from tests.support.fuzz_child import LAKE_OPTIONS, STOPPED_EXIT, encode_work
from tests.support.fuzz_oracle import (
    Comparator,
    LakeColumn,
    Moment,
    SqliteRecord,
    TableState,
    alive_at,
    chain_errors,
    describe_difference,
    lake_columns,
    lake_rows,
    lake_versions,
)
from tests.support.fuzz_tables import Column, TableDef, initial_rows, kinds_for, statement, tables_for
from tests.support.fuzz_values import ValueJudge, datetime_micros

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 120.0
CRASH_POINTS = (
    "sync.after_read_before_commit",
    "changelog.before_commit",
    "changelog.after_commit",
    "sync.after_commit_before_prune",
    "cdc.before_prune_commit",
    "flush.before_commit",
    "flush.after_commit_before_discard",
    "blob.after_data_before_commit",
    "delta.before_commit",
    "fold.before_commit",
    "fold.after_commit",
    "compact.after_fold",
    "compact.before_vacuum",
)
CRASH_POINTS_OF = {
    "sync": CRASH_POINTS[:5] + ("blob.after_data_before_commit", "delta.before_commit"),
    "flush": ("flush.before_commit", "flush.after_commit_before_discard", "delta.before_commit"),
    "compact": CRASH_POINTS[5:],
}
"""The points a child's kind of work reaches (a point it never reaches would not kill it)."""
ADDED_TYPES = ("TEXT", "INTEGER", "REAL", "BLOB")
FOREIGN_ADDED = ("TEXT", "INTEGER", "REAL", "INTEGER DEFAULT 7", "TEXT DEFAULT 'd'")


@dataclass
class FuzzStats:
    """What the fuzzer ran, over every program of a test (shrinking included)."""

    programs: int = 0
    steps: int = 0
    statements: int = 0
    statements_refused: int = 0
    syncs: int = 0
    lake_checks: int = 0
    instants_checked: int = 0
    as_of_reads: int = 0
    compactions: int = 0
    flushes: int = 0
    reopens: int = 0
    crashes: int = 0
    kills: int = 0
    schema_changes: int = 0
    stops: int = 0
    txn_instants: int = 0
    """Instants recorded while a transaction held writes that committed later and the lake shows at them."""
    registrations_refused: int = 0
    registrations_followed: int = 0
    """Refused registrations' ways on followed (``lake.register_table(...)`` as written) that mirrored the table."""
    registrations_opened: int = 0
    """Refused registrations an open finished (a reopen or a crash-restart, their rows fixed meanwhile)."""

    def as_figures(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Conn:
    """A connection writing to the database: the lake's own (``sqlite is None``) or a plain sqlite3 one."""

    name: str
    recursive: bool
    foreign_keys: bool
    sqlite: sqlite3.Connection | None = None

    @property
    def label(self) -> str:
        if self.sqlite is None:
            return "lake"
        return (
            f"{self.name}[recursive_triggers={'on' if self.recursive else 'off'}, "
            f"foreign_keys={'on' if self.foreign_keys else 'off'}]"
        )


FOREIGN = (("app", False, False), ("app_fk", False, True), ("app_rt", True, True))
"""Plain sqlite3 connections of every program: (name, recursive_triggers, foreign_keys)."""


@dataclass
class Txn:
    conn: Conn
    began: bool
    savepoints: list[str] = field(default_factory=list)
    wrote: bool = False
    marks: dict[str, tuple[int, dict[str, TableState] | None]] = field(default_factory=dict)
    """Per savepoint: how many moments were recorded when it was set, and the tables as the transaction
    saw them then (``None``: it had written nothing yet)."""


def register_calls(message: str) -> list[str]:
    """The ``lake.register_table(...)`` calls a message names, as written."""
    found = []
    start = message.find("lake.register_table(")
    while start >= 0:
        depth = 0
        for end in range(start + len("lake.register_table"), len(message)):
            depth += {"(": 1, ")": -1}.get(message[end], 0)
            if depth == 0:
                found.append(message[start : end + 1])
                break
        start = message.find("lake.register_table(", start + 1)
    return found


class FuzzFailure(AssertionError):
    """The lake disagreed with SQLite (or broke a promise); the message holds the program."""


def step(method):
    """A rule's body: a failure marks the program broken (the end of the program then checks nothing more)."""

    @functools.wraps(method)
    def run_step(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except HypothesisException:
            raise
        except Exception:
            self.broken = True
            raise

    return run_step


class LakeFuzz(RuleBasedStateMachine):
    """One program per example. Subclasses set ``families`` (see :func:`machine_for`)."""

    families: ClassVar[frozenset[str]] = frozenset({"dml"})
    base_dir: ClassVar[Path | None] = None
    stats: ClassVar[FuzzStats] = FuzzStats()
    final_as_of: ClassVar[int] = 4
    """How many recorded instants the end of each program reads ``as_of`` (besides those after each sync)."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.broken = False
        self.stopped: str | None = None
        self.listing: list[str] = []
        self.step_no = 0
        self.txn: Txn | None = None
        self.pending: list[int] = []
        """Indexes of the moments recorded while the open transaction held uncommitted writes."""
        self.waiting: dict[str, str] = {}
        """Tables whose registration the lake refused, with the refusal's message (its way on)."""
        self.may_stop: set[str] = set()
        self.blind: set[str] = set()
        self.dropped: dict[str, str] = {}
        self.added = 0
        self.as_of_turn = 0
        self.dirty: set[str] = set()
        self.workdir: Path | None = None
        self.lake: rhei_lake.Lake | None = None
        self.conns: list[Conn] = []
        self.record: SqliteRecord | None = None
        self.judge = ValueJudge()
        self.compare = Comparator(self.judge)

    # -- program text ------------------------------------------------------------
    def say(self, line: str) -> None:
        self.listing.append(f"[{self.step_no:02d}] {line}")
        try:
            note(self.listing[-1])
        except InvalidArgument:  # driven by hand, outside a hypothesis test
            pass

    def fail(self, message: str) -> None:
        self.broken = True
        program = "\n".join(self.listing)
        raise FuzzFailure(f"{message}\n\nfamilies: {','.join(sorted(self.families))}\nprogram:\n{program}")

    # -- setup ---------------------------------------------------------------------
    @initialize(data=st.data())
    @step
    def setup(self, data: st.DataObject) -> None:
        # Each program takes the tables of one or two of its families (every query of the lake costs
        # more with every table it mirrors): across programs every family's tables come up.
        available = tables_for(self.families)
        groups = sorted({t.families[0] for t in available} - {"dml"})
        chosen = (
            data.draw(st.sets(st.sampled_from(groups), min_size=1, max_size=2), label="table groups")
            if groups
            else set()
        )
        tables = [t for t in available if t.families[0] in chosen | {"dml"}]
        self.start(
            tables, lambda table, columns: data.draw(initial_rows(table, columns), label=f"rows of {table.name}")
        )

    def start(
        self, tables: list[TableDef], rows_for: Callable[[TableDef, list[Column]], list[tuple[str, tuple]]]
    ) -> None:
        """Create ``tables`` with the rows ``rows_for(table, columns)`` inserts, open the lake, register them."""
        type(self).stats.programs += 1
        self.workdir = Path(tempfile.mkdtemp(prefix="fuzz-", dir=self.base_dir))
        self.db = str(self.workdir / "app.db")
        self.storage = str(self.workdir / "lake")
        self.tables: list[TableDef] = list(tables)
        self.table_defs = {t.name: t for t in self.tables}
        setup = sqlite3.connect(self.db, isolation_level=None)
        setup.execute("PRAGMA journal_mode = WAL")
        for table in self.tables:
            setup.execute(table.ddl)
            self.say(table.ddl)
        self.record = SqliteRecord(self.db, [t.name for t in self.tables])
        for table in self.tables:
            for sql, params in rows_for(table, self.columns(table.name)):
                try:
                    setup.execute(sql, params)
                    self.say(f"setup: {sql} {params!r}")
                except sqlite3.Error as exc:
                    self.say(f"setup: {sql} {params!r} -> SQLite refused: {exc}")
        setup.close()
        # Values the documented types refuse (keys in a second spelling, item 5; NUMERIC beyond float64).
        self.may_stop.update(t.name for t in self.tables if t.may_refuse)
        self.lake = self.open_lake()
        self.mirrored: list[str] = []
        self.since: dict[str, int] = {}
        """Per mirrored table, the first recorded instant the lake answers for (0: registered at the start)."""
        for table in self.tables:
            try:
                self.lake.register_table(table.name)
                self.mirrored.append(table.name)
            except RheiError as exc:
                self.say(f"register_table({table.name!r}) refused: {type(exc).__name__}: {exc}")
                if not table.may_refuse:
                    self.fail(f"register_table({table.name!r}) raised {type(exc).__name__}: {exc}")
                type(self).stats.registrations_refused += 1
                self.waiting[table.name] = str(exc)
        self.say(f"lake registers {self.mirrored}")
        for name, recursive, foreign_keys in FOREIGN:
            conn = sqlite3.connect(self.db, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute(f"PRAGMA recursive_triggers = {'ON' if recursive else 'OFF'}")
            conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            self.conns.append(Conn(name, recursive, foreign_keys, conn))
        self.conns.insert(0, Conn("lake", True, True))
        self.ready = True
        self.record.record(self.step_no, "after registration")

    def open_lake(self) -> rhei_lake.Lake:
        return rhei_lake.open(oltp_path=self.db, storage=self.storage, **LAKE_OPTIONS)

    def columns(self, table: str) -> list[Column]:
        assert self.record is not None
        return [Column(name, declared) for name, declared in self.record.columns[table]]

    @property
    def live(self) -> bool:
        return self.ready and self.stopped is None and not self.broken

    # -- running statements ---------------------------------------------------------
    def lake_in_transaction(self) -> bool:
        assert self.lake is not None
        return bool(self.lake._oltp is not None and self.lake._oltp.in_transaction)  # noqa: SLF001

    def in_transaction(self, conn: Conn) -> bool:
        return self.lake_in_transaction() if conn.sqlite is None else conn.sqlite.in_transaction

    def run(self, conn: Conn, sql: str, params: tuple = (), *, write: bool = True) -> bool:
        """Run one statement on ``conn``; False if SQLite (or the lake) refused it."""
        assert self.lake is not None and self.record is not None
        type(self).stats.statements += 1
        shown = f"{conn.label}: {sql}" + (f"  {params!r}" if params else "")
        before = self.record.user_digest() if self.txn is None else None
        try:
            if conn.sqlite is None:
                self.lake.execute(sql, params)
            else:
                conn.sqlite.execute(sql, params).fetchall()
        except RheiError as exc:
            return self.refused(conn, shown, exc, before)
        except sqlite3.Error as exc:
            if conn.sqlite is None:
                self.fail(f"Lake.execute raised a native {type(exc).__name__} instead of a RheiError: {exc}\n{shown}")
            low = str(exc).lower()
            if "locked" in low or "within a transaction" in low or "no transaction" in low:
                self.fail(f"the fuzzer's transaction model is wrong: {exc}\n{shown}")
            return self.refused(conn, shown, exc, before)
        except Exception as exc:  # noqa: BLE001
            self.fail(f"{conn.label} raised {type(exc).__name__}: {exc}\n{shown}")
        self.say(shown)
        if write and self.txn is not None:
            self.txn.wrote = True
        return True

    def refused(self, conn: Conn, shown: str, exc: Exception, before: int | None) -> bool:
        assert self.record is not None
        type(self).stats.statements_refused += 1
        self.say(f"{shown}  -> refused: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        if before is not None and self.record.user_digest() != before:
            self.fail(f"a refused statement changed the database\n{shown}")
        if self.txn is not None and self.txn.conn is conn and not self.in_transaction(conn):
            self.say(f"{conn.label}: SQLite rolled the transaction back")
            self.txn = None
            self.txn_ended(committed=False)
        return False

    def run_batch(self, statements: list[tuple[str, tuple]]) -> bool:
        assert self.lake is not None and self.record is not None
        type(self).stats.statements += len(statements)
        shown = "lake execute_batch:\n" + "\n".join(f"         {sql}  {params!r}" for sql, params in statements)
        before = self.record.user_digest() if self.txn is None else None
        try:
            self.lake.execute_batch(statements)
        except RheiError as exc:
            return self.refused(self.conns[0], shown, exc, before)
        except Exception as exc:  # noqa: BLE001
            self.fail(f"Lake.execute_batch raised {type(exc).__name__} instead of a RheiError: {exc}\n{shown}")
        self.say(shown)
        if self.txn is not None:
            self.txn.wrote = True
        return True

    def draw_statement(self, data: st.DataObject, conn: Conn) -> tuple[str, tuple]:
        table = data.draw(st.sampled_from(self.tables), label="table")
        kinds = kinds_for(table, self.families, recursive=conn.recursive)
        self.dirty.add(table.name)
        if "fk" in table.families:  # cascades reach the other tables
            self.dirty.update(t.name for t in self.tables if "fk" in t.families)
        return data.draw(statement(table, self.columns(table.name), kinds), label="statement")

    def touch_all(self) -> None:
        self.dirty.update(t.name for t in self.tables)

    def writers(self) -> list[Conn]:
        return [self.txn.conn] if self.txn is not None else self.conns

    # -- rules -------------------------------------------------------------------------
    @precondition(lambda self: self.live)
    @rule(data=st.data())
    @step
    def execute(self, data: st.DataObject) -> None:
        """A burst of statements from one connection (a batch, if it is the lake's).

        (Rules are tried in name order when hypothesis starts from the simplest program, so the
        statements' rule comes first: that program then writes rather than only syncing.)"""
        self.step_no += 1
        conn = data.draw(st.sampled_from(self.writers()), label="connection")
        count = data.draw(st.integers(1, 4), label="statements")
        statements = [self.draw_statement(data, conn) for _ in range(count)]
        if conn.sqlite is None and count > 1 and data.draw(st.booleans(), label="as one batch"):
            self.run_batch(statements)
        else:
            for sql, params in statements:
                self.run(conn, sql, params)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    @step
    def execute_more(self, data: st.DataObject) -> None:
        """The same as :meth:`execute`: rules are drawn uniformly, and writes are cheap beside syncs."""
        self.execute(data)

    @precondition(lambda self: self.live and "txn" in self.families)
    @rule(data=st.data())
    @step
    def transaction(self, data: st.DataObject) -> None:
        """BEGIN / SAVEPOINT on a connection, or the next move of the open transaction."""
        self.step_no += 1
        txn = self.txn
        if txn is None:
            conn = data.draw(st.sampled_from(self.conns), label="connection")
            verb = data.draw(st.sampled_from(("BEGIN", "BEGIN IMMEDIATE", "SAVEPOINT s1")), label="begin")
            if self.run(conn, verb, write=False):
                self.txn = Txn(
                    conn, began=verb.startswith("BEGIN"), savepoints=[] if verb.startswith("BEGIN") else ["s1"]
                )
                if not self.txn.began:
                    self.txn_savepoint("s1")
            return
        moves = ["COMMIT", "ROLLBACK", "SAVEPOINT"]
        if txn.savepoints:
            moves += ["RELEASE", "ROLLBACK TO"]
        move = data.draw(st.sampled_from(moves), label="move")
        if move == "SAVEPOINT":
            name = f"s{len(txn.savepoints) + 1}"
            if self.run(txn.conn, f"SAVEPOINT {name}", write=False):
                txn.savepoints.append(name)
                self.txn_savepoint(name)
        elif move in ("RELEASE", "ROLLBACK TO"):
            name = data.draw(st.sampled_from(txn.savepoints), label="savepoint")
            if self.run(txn.conn, f"{move} {name}", write=False):
                if move == "ROLLBACK TO":
                    self.txn_rolled_back_to(name)
                else:
                    del txn.savepoints[txn.savepoints.index(name) :]
                    if not txn.savepoints and not txn.began:
                        self.txn = None
                        self.txn_ended(committed=True)
        elif self.run(txn.conn, move, write=False):
            self.txn = None
            self.txn_ended(committed=move == "COMMIT")
        if self.txn is not None and not self.in_transaction(self.txn.conn):
            self.fail(f"{self.txn.conn.label} left its transaction unexpectedly")
        if self.txn is None and self.in_transaction(txn.conn):
            self.fail(f"{txn.conn.label} is still in a transaction the fuzzer believes ended")
        if self.txn is None and self.pending:  # ended without a move of ours: SQLite rolled it back
            self.txn_ended(committed=False)

    @precondition(lambda self: self.ready and not self.broken)
    @rule(twice=st.booleans())
    @step
    def sync(self, twice: bool) -> None:
        """Sync and check (``twice``: a second sync with nothing new must change nothing). After the lake
        stopped, the one rule left: hypothesis needs a rule it can run."""
        if self.stopped is not None:
            return
        self.step_no += 1
        self.sync_and_check()
        if twice and self.live:
            self.sync_and_check()

    @precondition(lambda self: self.live and bool(self.maintenance()))
    @rule(data=st.data())
    @step
    def maintain(self, data: st.DataObject) -> None:
        """One of flush, compact, schema change, reopen, crash-restart (one rule: each is costly)."""
        operation = data.draw(st.sampled_from(self.maintenance()), label="maintenance")
        getattr(self, operation)(data)

    def maintenance(self) -> list[str]:
        operations = [op for op in ("flush", "compact") if op in self.families]
        if self.txn is None:
            if self.migrations():
                operations += ["migrate", "migrate"]  # the schema changes a program can make are few
            operations += [op for op in ("reopen", "crash") if op in self.families]
            if self.waiting:
                operations.append("register_again")
        return operations

    def register_again(self, data: st.DataObject) -> None:
        """Follow a refused registration's way on, a ``lake.register_table(...)`` call its message names,
        as written: the table is mirrored from then on, or refused again (its rows still do not fit)."""
        self.step_no += 1
        assert self.lake is not None and self.record is not None
        table = data.draw(st.sampled_from(sorted(self.waiting)), label="waiting table")
        named = register_calls(self.waiting[table])
        if not named:
            self.fail(f"the refusal of {table!r} names no lake.register_table(...) call: {self.waiting[table]}")
        call = data.draw(st.sampled_from(named), label="way on")
        try:
            eval(call, {"lake": self.lake})  # noqa: S307 - the library's own message, followed as written
        except rhei_lake.TypeMismatchError as exc:
            self.say(f"{call} -> refused again: {str(exc)[:200]}")
            if exc.table != table:
                self.fail(f"{call} was refused for another table: {exc}")
            self.waiting[table] = str(exc)
            return
        except RheiError as exc:
            self.fail(f"{call}, the way on the lake named, raised {type(exc).__name__}: {exc}")
        self.say(call)
        type(self).stats.registrations_followed += 1
        self.record.record(self.step_no, call, blind=frozenset(self.blind))  # a registration syncs no other table
        self.adopt(table, len(self.record.moments) - 1)

    def flush(self, data: st.DataObject) -> None:
        self.step_no += 1
        assert self.lake is not None
        type(self).stats.flushes += 1
        self.touch_all()
        self.say("lake.flush()")
        self.lake_call("lake.flush()", self.lake.flush)

    def compact(self, data: st.DataObject) -> None:
        vacuum = data.draw(st.booleans(), label="vacuum")
        self.step_no += 1
        assert self.lake is not None
        type(self).stats.compactions += 1
        self.touch_all()
        self.say(f"lake.compact({'vacuum_retention=0' if vacuum else ''})")
        self.lake_call("lake.compact()", lambda: self.lake.compact(vacuum_retention=0 if vacuum else None))

    def reopen(self, data: st.DataObject) -> None:
        self.step_no += 1
        assert self.lake is not None
        type(self).stats.reopens += 1
        self.touch_all()
        self.lake.close()
        self.lake = None
        self.say("lake.close(); rhei_lake.open(...)")
        self.lake_call("rhei_lake.open(...)", self.reopen_lake)

    def reopen_lake(self) -> None:
        self.lake = self.open_lake()
        self.adopt_registered()

    def adopt_registered(self) -> None:
        """Tables whose refused registration the open just finished (it takes a waiting table's snapshot
        once more, which succeeds once its rows fit): mirrored from now on, and their refusals' ways on
        no longer apply (``types=`` is refused for a mirrored table)."""
        assert self.lake is not None and self.record is not None
        listed = self.lake.tables()
        for table in [t for t in sorted(self.waiting) if t in listed]:
            self.say(f"the open took {table!r}'s snapshot: the lake mirrors it now")
            type(self).stats.registrations_opened += 1
            self.record.record(self.step_no, self.listing[-1], blind=frozenset(self.blind))
            self.adopt(table, len(self.record.moments) - 1)

    def crash(self, data: st.DataObject) -> None:
        """Hand the lake to a child process that writes, syncs, flushes or compacts and is killed at a point."""
        self.step_no += 1
        assert self.lake is not None
        type(self).stats.crashes += 1
        self.touch_all()
        lake_conn = self.conns[0]
        # Events first, so the points of a sync that commits something are reached.
        work: list[tuple] = [
            (
                "batch",
                [self.draw_statement(data, lake_conn) for _ in range(data.draw(st.integers(1, 3), label="statements"))],
            )
        ]
        for _ in range(data.draw(st.integers(0, 3), label="child steps")):
            what = data.draw(st.sampled_from(("batch", "sync", "flush", "compact")), label="child step")
            if what == "batch":
                count = data.draw(st.integers(1, 3), label="statements")
                work.append(("batch", [self.draw_statement(data, lake_conn) for _ in range(count)]))
            else:
                work.append((what,))
        work.append(("sync",))
        kinds = [step_[0] for step_ in work]
        reached = [p for kind in ("sync", "flush", "compact") if kind in kinds for p in CRASH_POINTS_OF[kind]]
        point = data.draw(st.sampled_from(sorted(set(reached), key=CRASH_POINTS.index)), label="kill point")
        owner = next(kind for kind in ("sync", "flush", "compact") if point in CRASH_POINTS_OF[kind])
        hit = data.draw(st.integers(1, max(1, kinds.count(owner))), label="hit")
        spec = f"{point}=kill@{hit}"
        type(self).stats.statements += sum(len(step[1]) for step in work if step[0] == "batch")
        self.lake.close()
        self.lake = None
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RHEI_FAULTS": spec}
        child = subprocess.run(
            [sys.executable, "-m", "tests.support.fuzz_child", self.db, self.storage],
            input=encode_work(work).encode(),
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=CHILD_TIMEOUT,
        )
        shown = "; ".join(
            "execute_batch(" + "; ".join(f"{sql} {params!r}" for sql, params in step[1]) + ")"
            if step[0] == "batch"
            else f"{step[0]}()"
            for step in work
        )
        killed = child.returncode == -signal.SIGKILL
        type(self).stats.kills += int(killed)
        self.say(f"crash child ({spec}): {shown} -> {'killed' if killed else f'exit {child.returncode}'}")
        if child.returncode == STOPPED_EXIT:
            self.stop_or_fail("the crash child", child.stderr.decode().strip().splitlines()[-1])
            return
        if child.returncode not in (0, -signal.SIGKILL):
            self.fail(f"the crash child failed on its own (exit {child.returncode}):\n{child.stderr.decode()[-3000:]}")
        self.say("rhei_lake.open(...) after the crash")
        self.lake_call("rhei_lake.open(...)", self.reopen_lake)

    def migrate(self, data: st.DataObject) -> None:
        """A schema change of ``mig``: through the API, from a connection, or a table rebuild."""
        self.step_no += 1
        kind = data.draw(st.sampled_from(self.migrations()), label="migration")
        type(self).stats.schema_changes += 1
        self.touch_all()
        getattr(self, f"migrate_{kind}")(data)
        assert self.record is not None
        self.record.refresh_schema()

    def migrations(self) -> list[str]:
        if "mig" not in self.table_defs:
            return []
        columns = [c.name for c in self.columns("mig") if c.name != "id"]
        kinds = []
        if {"add_column", "drop_column", "readd_column"} & self.families:
            kinds.append("add")
        if {"drop_column", "readd_column"} & self.families and len(columns) > 1:
            kinds.append("drop")
        if "readd_column" in self.families and self.dropped:
            kinds.append("readd")
        if "foreign_add_column" in self.families:
            kinds.append("foreign_add")
        if "rebuild" in self.families:
            kinds.append("rebuild")
        return kinds

    def schema_call(self, what: str, call) -> bool | None:
        """Run a lake schema change: True if made, False if refused, None if it stopped the program.

        A change made behind the lake's back that it cannot follow (two rebuilds
        without a sync between them look like a rename), or a captured event
        whose value the lake refuses, stops the lake's schema calls as it stops
        the next sync: the same terminal stop, not a refusal.
        """
        assert self.record is not None
        before = self.record.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'mig'").fetchone()
        try:
            call()
        except RheiError as exc:
            after = self.record.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'mig'").fetchone()
            if after != before:
                self.fail(f"{what} was refused but changed the table: {before} -> {after}")
            stops_sync = isinstance(exc, rhei_lake.TypeMismatchError) and exc.seq is not None
            if (isinstance(exc, SchemaChangedError) and "mig" in self.may_stop) or stops_sync:
                # A captured event that stops the sync stops the change too (it commits every event first).
                self.stop_or_fail(what, f"{type(exc).__name__}: {exc}", transient=exc.transient)
                return None
            self.say(f"{what} -> refused: {type(exc).__name__}: {exc}")
            return False
        self.say(what)
        return True

    def migrate_add(self, data: st.DataObject) -> None:
        assert self.lake is not None
        self.added += 1
        name, declared = f"x{self.added}", data.draw(st.sampled_from(ADDED_TYPES), label="type")
        if (
            self.schema_call(
                f"lake.add_column('mig', {name!r}, {declared!r})", lambda: self.lake.add_column("mig", name, declared)
            )
            is False
        ):
            self.fail("add_column of a new column was refused")

    def migrate_drop(self, data: st.DataObject) -> None:
        assert self.lake is not None
        candidates = [c for c in self.columns("mig") if c.name != "id"]
        column = data.draw(st.sampled_from(candidates), label="column")
        done = self.schema_call(
            f"lake.drop_column('mig', {column.name!r})", lambda: self.lake.drop_column("mig", column.name)
        )
        if done:
            self.dropped[column.name] = column.declared
        elif done is False:
            self.fail("drop_column was refused")

    def migrate_readd(self, data: st.DataObject) -> None:
        assert self.lake is not None
        name = data.draw(st.sampled_from(sorted(self.dropped)), label="column")
        same = data.draw(st.integers(0, 3), label="same type") > 0
        declared = self.dropped[name] if same else data.draw(st.sampled_from(ADDED_TYPES), label="type")
        done = self.schema_call(
            f"lake.add_column('mig', {name!r}, {declared!r})", lambda: self.lake.add_column("mig", name, declared)
        )
        if done:
            del self.dropped[name]
        elif done is False and same:
            self.fail("adding a dropped column back with its type was refused")

    def migrate_foreign_add(self, data: st.DataObject) -> None:
        self.added += 1
        conn = data.draw(st.sampled_from(self.conns[1:]), label="connection")
        declared = data.draw(st.sampled_from(FOREIGN_ADDED), label="type")
        self.may_stop.add("mig")
        if self.run(conn, f"ALTER TABLE mig ADD COLUMN y{self.added} {declared}", write=False):
            self.blind.add("mig")

    def migrate_rebuild(self, data: st.DataObject) -> None:
        """Create the new table, copy, drop the old one, rename: through execute_batch or a connection."""
        keep = [c for c in self.columns("mig") if c.name != "id"]
        change = data.draw(st.sampled_from(("same", "add", "drop")), label="rebuild change")
        if change == "drop" and len(keep) > 1:
            keep.remove(data.draw(st.sampled_from(keep), label="dropped column"))
        body = ", ".join(["id INTEGER PRIMARY KEY", *(f"{quote_ident(c.name)} {c.declared}" for c in keep)])
        if change == "add":
            self.added += 1
            body += f", z{self.added} TEXT"
        copied = ", ".join(["id", *(quote_ident(c.name) for c in keep)])
        statements = [
            (f"CREATE TABLE _mig_new ({body})", ()),
            (f"INSERT INTO _mig_new ({copied}) SELECT {copied} FROM mig", ()),
            ("DROP TABLE mig", ()),
            ("ALTER TABLE _mig_new RENAME TO mig", ()),
        ]
        self.may_stop.add("mig")
        conn = data.draw(st.sampled_from(self.conns), label="connection")
        if conn.sqlite is None:
            self.run_batch(statements)
            return
        self.run(conn, "BEGIN IMMEDIATE", write=False)
        if all(self.run(conn, sql, params) for sql, params in statements):
            self.run(conn, "COMMIT", write=False)
            self.blind.add("mig")
        else:
            self.run(conn, "ROLLBACK", write=False)

    # -- after every step ------------------------------------------------------------------
    @invariant()
    @step
    def observe(self) -> None:
        """Record an instant after every commit (none while a transaction holds uncommitted writes)."""
        type(self).stats.steps += 1
        if not self.live or self.record is None:
            return
        if self.txn is not None and self.txn.wrote and "open_txn_sync" not in self.families:
            return
        if self.record.changed():
            self.record.record(self.step_no, self.listing[-1] if self.listing else "start", blind=frozenset(self.blind))
            self.remember_txn_view()

    # -- instants while a transaction holds uncommitted writes (open_txn_sync) ----------------
    def txn_view(self) -> dict[str, TableState] | None:
        """The tables as the open transaction sees them (its own writes included), if it has written."""
        if self.txn is None or not self.txn.wrote or self.record is None:
            return None
        conn = self.txn.conn.sqlite if self.txn.conn.sqlite is not None else self.lake._oltp  # noqa: SLF001
        return {table: self.record.state(table, conn=conn) for table in self.record.tables}

    def remember_txn_view(self) -> None:
        """The moment just recorded, while the transaction holds writes: SQLite's committed state then, or,
        should the transaction commit with no sync after the moment, the state its own connection saw (the
        lake dates a change at its statement, but no earlier than just after the last sync's read of the log:
        README, "History and time travel")."""
        view = self.txn_view()
        if view is None:
            return
        index = len(self.record.moments) - 1
        moment = self.record.moments[index]
        self.record.moments[index] = replace(moment, txn_states=view)
        self.pending.append(index)

    def txn_savepoint(self, name: str) -> None:
        assert self.txn is not None and self.record is not None
        self.txn.marks[name] = (len(self.record.moments), self.txn_view())

    def txn_rolled_back_to(self, name: str) -> None:
        """Writes after savepoint ``name`` are gone: the moments since saw what the transaction saw then."""
        assert self.txn is not None and self.record is not None
        count, view = self.txn.marks[name]
        for index in self.pending:
            if index >= count:
                self.record.moments[index] = replace(self.record.moments[index], txn_states=view)

    def txn_ended(self, committed: bool) -> None:
        """Resolve the moments recorded while the transaction held writes (see :meth:`remember_txn_view`)."""
        assert self.record is not None
        horizon = None
        if committed and self.pending and self.lake is not None:
            through = self.lake.sync_status().synced_through
            horizon = datetime_micros(through) if through is not None else 0
        for index in self.pending:
            moment = self.record.moments[index]
            shows_writes = (
                committed and moment.txn_states is not None and horizon is not None and horizon < moment.micros
            )
            if shows_writes:
                type(self).stats.txn_instants += 1
                label = f"{moment.label} [the transaction's writes by then, committed later]"
                self.record.moments[index] = replace(moment, states=moment.txn_states, label=label)
        self.pending.clear()

    # -- syncing and checking ----------------------------------------------------------------
    def sync_and_check(self, *, final: bool = False) -> None:
        assert self.lake is not None and self.record is not None
        type(self).stats.syncs += 1
        if not self.lake_call("lake.sync_now()", self.lake.sync_now):
            return
        self.blind.clear()
        self.say("lake.sync_now()" + ("  [end of program]" if final else ""))
        if self.txn is None or not self.txn.wrote or "open_txn_sync" in self.families:
            self.record.record(self.step_no, self.listing[-1])
            self.remember_txn_view()
        adopted = [t for t in self.lake.tables() if t in self.table_defs and t not in self.mirrored]
        for table in adopted:  # its refused registration succeeded since (a reopen took it): its history starts now
            self.say(f"the lake mirrors {table!r} now")
            self.adopt(table, len(self.record.moments) - 1)
        for table in self.waiting:
            self.check_waiting(table)
        self.check(final=final)

    def adopt(self, table: str, since: int) -> None:
        self.mirrored.append(table)
        self.since[table] = since
        self.dirty.add(table)
        self.waiting.pop(table, None)

    def check_waiting(self, table: str) -> None:
        """A table whose registration was refused: not listed, named by the status, and every query on it
        refused with an error naming it and a way on (never an empty table beside SQLite's rows)."""
        assert self.lake is not None
        if table in self.lake.tables():
            self.fail(f"the lake lists {table!r}, whose registration was refused")
        status = self.lake.sync_status()
        if table not in status.waiting:
            self.fail(f"sync_status().waiting does not name {table!r}, whose registration was refused")
        for relation in (table, f"{table}_history", f"{table}_changes"):
            try:
                rows = self.lake.query(f"SELECT * FROM {quote_ident(relation)}", hint="olap")
            except rhei_lake.TableNotReadyError as exc:
                if exc.table != table or "lake.register_table(" not in str(exc):
                    self.fail(f"a query of {relation!r} was refused without naming the table and a way on: {exc}")
                self.waiting[table] = str(exc.reason) if exc.reason is not None else self.waiting[table]
            except RheiError as exc:
                self.fail(f"a query of {relation!r} raised {type(exc).__name__} rather than TableNotReadyError: {exc}")
            else:
                self.fail(
                    f"the lake answered a query of {relation!r} ({rows.num_rows} rows), whose registration was refused"
                )

    def stop_or_fail(self, what: str, error: str, *, transient: bool = False) -> None:
        """``what`` raised ``error``: a terminal stop naming a table changed behind the lake's back (or
        holding values the lake may refuse) ends the program; a transient error while a transaction holds
        SQLite's write lock is let be; anything else is a failure."""
        if transient and self.txn is not None:
            # Work that needs SQLite's write lock (a snapshot taken again) waited for a transaction
            # holding it: retrying later is what a transient error asks for.
            self.say(f"{what} -> transient, while {self.txn.conn.label} holds a transaction: {error}")
            return
        named = [t for t in self.may_stop if t in error]
        if transient or not named:
            self.fail(f"{what} raised {error}")
        type(self).stats.stops += 1
        self.say(f"{what} -> stopped: {error}")
        self.stopped = error

    def lake_call(self, what: str, call) -> bool:
        """Run ``call`` (a lake operation); False if it stopped the program (see :meth:`stop_or_fail`)."""
        try:
            call()
        except RheiError as exc:
            self.stop_or_fail(what, f"{type(exc).__name__}: {exc}", transient=exc.transient)
            return False
        return True

    def check(self, *, final: bool) -> None:
        """Every table touched since the last check: ``t`` now and its history at every recorded instant;
        one of them (every table at the end): ``t`` ``as_of`` the newest instant and an older one."""
        assert self.lake is not None and self.record is not None
        type(self).stats.lake_checks += 1
        problems: list[str] = []
        moments = self.record.moments
        self.as_of_turn += 1
        tables = [t for t in self.mirrored if final or t in self.dirty]
        if not tables and self.mirrored:
            tables = [self.mirrored[self.as_of_turn % len(self.mirrored)]]
        reading = tables[self.as_of_turn % len(tables)] if tables else None
        sampled = {len(moments) - 1, self.as_of_turn % len(moments)}
        if final:
            step = max(1, len(moments) // max(1, self.final_as_of))
            sampled |= set(range(0, len(moments), step))
        for table in tables:
            problems += self.check_table(table, moments, sorted(sampled) if final or table == reading else None)
        self.dirty.clear()
        if problems:
            self.fail("the lake disagrees with SQLite after " + self.listing[-1].strip() + ":\n" + "\n".join(problems))

    def check_table(self, table: str, moments: list[Moment], as_of: list[int] | None) -> list[str]:
        """``t`` now, ``table_history`` against every recorded instant, and ``t`` ``as_of`` the instants
        numbered in ``as_of``."""
        assert self.lake is not None and self.record is not None
        columns = lake_columns(self.lake, table)
        lake_names = [c.name for c in columns]
        sqlite_names = [n for n, _ in self.record.columns[table]]
        if sorted(lake_names) != sorted(sqlite_names):
            return [f"{table}: the lake has columns {lake_names}, SQLite {sqlite_names}"]
        problems = []
        versions = lake_versions(self.lake, table, columns)
        tokens = self.compare.actual([v.row for v in versions], columns)
        keys = [lake_names.index(k) for k in self.lake.table_spec(table).primary_key]
        problems += [f"{table}_history: {e}" for e in chain_errors(versions, keys, tokens)[:5]]
        open_now = [v.row for v in versions if v.valid_to is None]
        problems += self.compare_rows(
            f"{table}_history open versions", table, self.record.state(table), columns, open_now
        )
        for index, moment in enumerate(moments):
            if not self.checkable(table, moment):
                continue
            type(self).stats.instants_checked += 1
            alive = alive_at(versions, moment.micros)
            what = f"{table}_history alive at instant #{index} (after {moment.label.strip()[:120]})"
            found = self.compare_rows(what, table, moment.states[table], columns, [v.row for v in alive])
            if found:
                problems += found
                break
        problems += self.compare_rows(
            f"{table} now", table, self.record.state(table), columns, lake_rows(self.lake, table, columns)
        )
        for index in as_of or ():
            moment = moments[index]
            if not self.checkable(table, moment):
                continue
            type(self).stats.as_of_reads += 1
            rows = lake_rows(self.lake, table, columns, as_of=moment.micros)
            what = f"{table} as_of instant #{index} (after {moment.label.strip()[:120]})"
            problems += self.compare_rows(what, table, moment.states[table], columns, rows)
        return problems

    def checkable(self, table: str, moment: Moment) -> bool:
        """Whether the lake answers for ``table`` at ``moment`` (see :attr:`Moment.blind`)."""
        if table not in moment.states or moment.micros < self.record.moments[self.since.get(table, 0)].micros:
            return False
        return table not in moment.blind or "outside_schema_instants" in self.families

    def compare_rows(
        self, what: str, table: str, state: TableState, columns: list[LakeColumn], rows: list[tuple]
    ) -> list[str]:
        assert self.record is not None
        expected = self.compare.expected(self.record, table, state, columns)
        missing, unexpected = self.compare.difference(expected, self.compare.actual(rows, columns))
        if not missing and not unexpected:
            return []
        return [describe_difference(what, columns, list(state.rows), state.columns, rows, missing, unexpected)]

    # -- the end -----------------------------------------------------------------------------
    def teardown(self) -> None:
        try:
            if self.live and self.lake is not None:
                if self.txn is not None:
                    self.step_no += 1
                    self.run(self.txn.conn, "ROLLBACK", write=False)
                    self.txn = None
                    self.txn_ended(committed=False)
                    if self.record is not None and self.record.changed():
                        self.record.record(self.step_no, "rollback at the end", blind=frozenset(self.blind))
                self.step_no += 1
                self.sync_and_check(final=True)
        finally:
            self.close_all()

    def close_all(self) -> None:
        for conn in self.conns:
            if conn.sqlite is not None:
                conn.sqlite.close()
        if self.lake is not None:
            try:
                self.lake.close()
            except Exception:  # noqa: BLE001
                pass
        if self.record is not None:
            self.record.close()
        self.judge.close()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def machine_for(families: frozenset[str], base_dir: Path, *, final_as_of: int = 4) -> type[LakeFuzz]:
    """A state machine class running ``families`` (``dml`` is always on), working under ``base_dir``."""
    chosen = frozenset(families) | {"dml"}
    if "open_txn_sync" in chosen:
        chosen |= {"txn"}
    if "outside_schema_instants" in chosen:
        chosen |= {"foreign_add_column", "rebuild"}
    return type(
        "LakeFuzz_" + "_".join(sorted(chosen)),
        (LakeFuzz,),
        {
            "families": chosen,
            "base_dir": base_dir,
            "stats": FuzzStats(),
            "final_as_of": final_as_of,
        },
    )


@dataclass(frozen=True)
class Program:
    """A fixed program (a shrunk failure, written out): tables and their first rows, then steps.

    Steps: ``("sql", connection, sql, params)`` (connection: ``lake`` or one of
    :data:`FOREIGN`), ``("batch", [(sql, params), ...])`` (``Lake.execute_batch``),
    ``("sync",)``, ``("flush",)``, ``("compact",)``, ``("reopen",)``,
    ``("register_again", table, text)`` (the refusal's ``lake.register_table(...)`` call containing ``text``),
    ``("add_column", column, type)`` and ``("drop_column", column)`` (of ``mig``).
    DDL in ``sql``/``batch`` steps is a schema change behind the lake's back.
    """

    families: frozenset[str]
    tables: tuple[str, ...]
    rows: dict[str, list[tuple]] = field(default_factory=dict)
    steps: tuple[tuple, ...] = ()


def replay(program: Program, base_dir: Path) -> FuzzStats:
    """Run ``program`` through the fuzzer's machine, checking as a fuzzed program is checked; raises
    :class:`FuzzFailure` where the lake disagrees with SQLite."""
    from tests.support.fuzz_tables import TABLES

    machine = machine_for(program.families, base_dir)()
    by_name = {t.name: t for t in TABLES}

    def rows_for(table: TableDef, columns: list[Column]) -> list[tuple[str, tuple]]:
        names = ", ".join(quote_ident(c.name) for c in columns)
        marks = ", ".join("?" for _ in columns)
        return [
            (f"INSERT INTO {quote_ident(table.name)} ({names}) VALUES ({marks})", row)
            for row in program.rows.get(table.name, [])
        ]

    try:
        machine.start([by_name[t] for t in program.tables], rows_for)
        machine.observe()
        conns = {c.name: c for c in machine.conns}
        for step_ in program.steps:
            if machine.stopped is not None:
                break
            machine.step_no += 1
            kind = step_[0]
            if kind in ("sql", "batch"):
                statements = [(step_[2], tuple(step_[3]))] if kind == "sql" else [(s, tuple(p)) for s, p in step_[1]]
                schema = any(s.lstrip().upper().startswith(("ALTER", "CREATE", "DROP")) for s, _ in statements)
                if schema:
                    changed = {t for t in program.tables if any(t in s for s, _ in statements)}
                    machine.may_stop.update(changed)
                    if kind == "sql" and step_[1] != "lake":  # behind the lake's back: learnt at the next sync
                        machine.blind.update(changed)
                if kind == "sql":
                    conn = conns[step_[1]]
                    verb = statements[0][0].split()[0].upper()
                    if machine.run(conn, *statements[0], write=verb not in ("BEGIN", "COMMIT", "ROLLBACK")):
                        if verb == "BEGIN":
                            machine.txn = Txn(conn, began=True)
                        elif verb in ("COMMIT", "ROLLBACK"):
                            machine.txn = None
                            machine.txn_ended(committed=verb == "COMMIT")
                else:
                    machine.run_batch(statements)
                if schema:
                    machine.record.refresh_schema()
            elif kind == "sync":
                machine.sync_and_check()
            elif kind == "register_again":  # ("register_again", table, text the call followed contains)
                if step_[1] in machine.waiting:  # (a waiting table only: the fuzzer draws the step then)
                    call = next(c for c in register_calls(machine.waiting[step_[1]]) if step_[2] in c)
                    machine.register_again(_Fixed({"waiting table": step_[1], "way on": call}))
            elif kind in ("flush", "compact", "reopen"):
                getattr(machine, kind)(_Fixed({"vacuum": False}))
            elif kind == "add_column":
                machine.schema_call(
                    f"lake.add_column('mig', {step_[1]!r}, {step_[2]!r})",
                    lambda: machine.lake.add_column("mig", step_[1], step_[2]),
                )
                machine.record.refresh_schema()
                machine.touch_all()
            elif kind == "drop_column":
                machine.schema_call(
                    f"lake.drop_column('mig', {step_[1]!r})", lambda: machine.lake.drop_column("mig", step_[1])
                )
                machine.record.refresh_schema()
                machine.touch_all()
            else:
                raise ValueError(f"unknown step {step_!r}")
            machine.observe()
        machine.teardown()
    finally:
        machine.close_all()
    return machine.stats


class _Fixed:
    """Stands for hypothesis' ``data`` where a replayed step draws: answers by label."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers

    def draw(self, strategy, label: str | None = None):
        return self.answers[label]
