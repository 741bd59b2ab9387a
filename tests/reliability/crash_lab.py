"""The crash matrix's parent side: run a child on a lake, kill it, check nothing was lost or doubled.

Every sequence number SQLite hands out is recorded by an audit trigger on the
CDC log, in the same transaction as the event itself, so after any crash the
parent knows exactly which events exist. After every kill it checks, on the
lake as a fresh reader sees it:

* no table's change feed holds an event twice;
* each table's change feed is a prefix of its expected events (its snapshot,
  then its audited events in order): nothing skipped, nothing invented;
* every event that has left the CDC log (pruned) is in the lake: nothing lost.

After the last kill a child that is left alone finishes the work, and then the
change feeds must equal the expected events exactly and every table must equal
SQLite (the oracle), value for value.
"""

from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.catalog import OP, OP_DELETE, SEQ, TS, VALID_FROM, VALID_TO
from tests.reliability import summary
from tests.support.oracle import assert_same_state
from tests.support.workload import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
HISTORY_SCENARIOS = ("sync", "compact")
"""Scenarios whose tables' history is checked against their change feed after every kill."""
CHILD_TIMEOUT = 120.0


@dataclass(frozen=True)
class Kill:
    """How to end one child: at a fault point (``spec``), or ``after`` seconds of work (random timing)."""

    spec: str | None = None
    after: float | None = None
    before_ready: bool = False

    @property
    def label(self) -> str:
        if self.spec:
            return self.spec.split("=")[0] + ("~window" if "~" in self.spec else "")
        return "random-before-ready" if self.before_ready else "random"


@dataclass
class Outcome:
    kill: Kill
    killed: bool
    returncode: int
    stderr: str


@dataclass
class CrashLab:
    """One SQLite database, one lake, one scenario; children come and go."""

    workdir: Path
    url: str
    options: dict[str, str]
    scenario: str
    seed: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = self.workdir / "app.db"
        self.rng = random.Random(self.seed)
        self.env = {**os.environ, **self.options, "PYTHONPATH": str(ROOT)}
        self.env.pop("RHEI_FAULTS", None)
        self._prepare()

    # -- setup -------------------------------------------------------------
    def _prepare(self) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None)
        for ddl in SCHEMA.values():
            conn.execute(ddl)
        conn.execute("CREATE TABLE evolving (id INTEGER PRIMARY KEY, v TEXT)")
        conn.close()
        with rhei_lake.open(oltp_path=str(self.db), storage="memory://"):
            pass  # installs the CDC log, so the audit trigger can watch it
        conn = sqlite3.connect(self.db, isolation_level=None)
        conn.execute("CREATE TABLE audit (seq INTEGER PRIMARY KEY, tbl TEXT)")
        conn.execute(
            "CREATE TRIGGER audit_log AFTER INSERT ON _rhei_cdc_log WHEN NEW.op != 'S' "
            "BEGIN INSERT INTO audit VALUES (NEW.seq, NEW.tbl); END"
        )
        conn.close()

    def add_snapshot_table(self, rows: int) -> str:
        """A new table with ``rows`` rows for the ``register`` scenario to snapshot."""
        conn = sqlite3.connect(self.db, isolation_level=None)
        count = conn.execute("SELECT count(*) FROM sqlite_master WHERE name LIKE 'snap_%'").fetchone()[0]
        name = f"snap_{count:03d}"
        conn.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany(f"INSERT INTO {name} VALUES (?, ?)", [(i, f"r{i}") for i in range(1, rows + 1)])
        conn.close()
        return name

    # -- children ----------------------------------------------------------
    def _spawn(self, *extra: str, faults: str | None = None) -> subprocess.Popen:
        env = dict(self.env)
        if faults:
            env["RHEI_FAULTS"] = faults
        self.seed += 1
        args = [
            sys.executable,
            "-m",
            "tests.support.crash_child",
            self.scenario,
            str(self.db),
            self.url,
            str(self.seed),
            *extra,
        ]
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, kill: Kill) -> Outcome:
        """One child, ended as ``kill`` says; a child that fails on its own is a test failure."""
        # A randomly timed kill needs a child still at work when it fires, however fast the machine.
        child = self._spawn(*(["--until-killed"] if kill.after is not None else []), faults=kill.spec)
        try:
            if kill.after is not None:
                if not kill.before_ready:
                    _wait_ready(child)
                time.sleep(kill.after)
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
            child.wait(timeout=CHILD_TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        stderr = child.stderr.read().decode(errors="replace")
        child.stdout.close()
        child.stderr.close()
        outcome = Outcome(kill, child.returncode == -signal.SIGKILL, child.returncode, stderr)
        if child.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"child ({kill.label}) failed with code {child.returncode}:\n{stderr}")
        self.outcomes.append(outcome)
        return outcome

    def finish(self) -> None:
        """A child left alone to finish everything pending."""
        child = self._spawn("--final")
        _, err = child.communicate(timeout=CHILD_TIMEOUT)
        assert child.returncode == 0, err.decode(errors="replace")

    # -- checks ------------------------------------------------------------
    def expected_events(self, conn: sqlite3.Connection) -> dict[str, list[int]]:
        """Per registered table: its snapshot's sequence numbers, then its audited events."""
        audited: dict[str, list[int]] = {}
        for seq, table in conn.execute("SELECT seq, tbl FROM audit ORDER BY seq"):
            audited.setdefault(table, []).append(seq)
        expected = {}
        for name, _state, snap_from, snap_to in conn.execute(
            "SELECT name, state, snapshot_from, snapshot_to FROM _rhei_tables"
        ):
            events = [s for s in audited.get(name, []) if s > snap_to]
            expected[name] = [*range(snap_from + 1, snap_to), *events]
        return expected

    def check(self, *, final: bool = False) -> dict[str, int]:
        """The invariants of the module notes; returns each table's number of committed events."""
        conn = sqlite3.connect(self.db, isolation_level=None)
        try:
            expected = self.expected_events(conn)
            in_log = {row[0] for row in conn.execute("SELECT seq FROM _rhei_cdc_log")}
            ready = {row[0] for row in conn.execute("SELECT name FROM _rhei_tables WHERE state = 'ready'")}
            snap = dict(conn.execute("SELECT name, snapshot_to FROM _rhei_tables").fetchall())
            committed = {}
            with rhei_lake.open(storage=self.url, storage_options=self.options) as lake:
                present = set(lake.tables())
                for table, events in expected.items():
                    seqs = _seqs(lake, table) if table in present else []
                    committed[table] = len(seqs)
                    assert len(seqs) == len(set(seqs)), f"{table}: an event was committed twice"
                    assert seqs == events[: len(seqs)], (
                        f"{table}: the change feed is not a prefix of the events SQLite produced "
                        f"(first difference at {_first_difference(seqs, events)})"
                    )
                    kept = set(seqs)
                    # Snapshot rows never pass through the log: they are lost only if the table is
                    # ready (its snapshot recorded as committed) and they are not in the lake.
                    lost = [
                        e for e in events if e not in in_log and e not in kept and (table in ready or e > snap[table])
                    ]
                    assert not lost, f"{table}: events {lost[:5]} left the CDC log but are not in the lake"
                    if self.scenario in HISTORY_SCENARIOS and table in present:
                        assert_history_follows_changes(lake, table)
                    if final:
                        assert seqs == events, f"{table}: {len(events) - len(seqs)} events missing after recovery"
                        assert_same_state(lake, conn, table)
            return committed
        finally:
            conn.close()


def expected_history(lake: rhei_lake.Lake, table: str) -> list[tuple]:
    """The versions the change feed implies: each insert or update opens one (its row image, from
    its ``_rhei_ts``), closed at the ``_rhei_ts`` of the key's next event; a delete opens none."""
    spec = lake.table_spec(table)
    changes = lake.query(f"SELECT * FROM {quote_ident(table + '_changes')} ORDER BY _rhei_seq").to_pylist()
    versions: list[list] = []
    open_at: dict[tuple, int] = {}
    for event in changes:
        key = tuple(event[k] for k in spec.primary_key)
        if key in open_at:
            versions[open_at.pop(key)][-2] = event[TS]
        if event[OP] != OP_DELETE:
            versions.append([*(event[c] for c in spec.column_names), event[TS], None, event[SEQ]])
            open_at[key] = len(versions) - 1
    return [tuple(v) for v in versions]


def lake_history(lake: rhei_lake.Lake, table: str) -> list[tuple]:
    """``t_history`` as (user columns..., valid_from, valid_to, seq), in ``_rhei_seq`` order."""
    spec = lake.table_spec(table)
    cols = ", ".join(quote_ident(c) for c in (*spec.column_names, VALID_FROM, VALID_TO, SEQ))
    rows = lake.query(f"SELECT {cols} FROM {quote_ident(table + '_history')} ORDER BY _rhei_seq")
    return [tuple(r.values()) for r in rows.to_pylist()]


def assert_history_follows_changes(lake: rhei_lake.Lake, table: str) -> None:
    """History exact: ``t_history`` holds exactly the versions its change feed implies (floats by repr, so
    NaN equals NaN and -0.0 differs from 0.0)."""
    actual, expected = lake_history(lake, table), expected_history(lake, table)
    if repr(actual) != repr(expected):
        seqs = [v[-1] for v in actual]
        doubled = sorted({s for s in seqs if seqs.count(s) > 1})[:5]
        first = next((i for i, (a, e) in enumerate(zip(actual, expected)) if repr(a) != repr(e)), None)
        raise AssertionError(
            f"{table}: history is not what its change feed implies: {len(actual)} versions, expected "
            f"{len(expected)}; doubled seqs {doubled}; first difference at {first}: "
            f"{actual[first] if first is not None else None!r} != {expected[first] if first is not None else None!r}"
        )


def _seqs(lake: rhei_lake.Lake, table: str) -> list[int]:
    sql = f"SELECT _rhei_seq FROM {quote_ident(table + '_changes')} ORDER BY _rhei_seq"
    return lake.query(sql).column(0).to_pylist()


def _first_difference(actual: list[int], expected: list[int]) -> str:
    for i, (a, e) in enumerate(zip(actual, expected)):
        if a != e:
            return f"position {i}: lake {a}, expected {e}"
    return f"position {min(len(actual), len(expected))}: lake has {len(actual)}, expected {len(expected)}"


def _wait_ready(child: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"ready" not in buffer:
        if child.poll() is not None:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the child did not open its lake in time")
        readable, _, _ = select.select([child.stdout], [], [], min(remaining, 0.5))
        if readable:
            chunk = os.read(child.stdout.fileno(), 4096)
            if not chunk:
                return
            buffer += chunk


def record(lab: CrashLab) -> None:
    """Add a finished lab's kills to the run's reliability summary."""
    for outcome in lab.outcomes:
        if outcome.killed:
            summary.count("kill_points_survived")
            summary.count(f"kills.{lab.scenario}.{outcome.kill.label}")
