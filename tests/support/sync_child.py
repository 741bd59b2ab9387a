"""A child process that keeps changing, syncing, flushing and compacting a lake, logging every synced state.

Usage: python -m tests.support.sync_child DB STORAGE LOG SECONDS SEED

Storage options come from the environment (AWS_*). Table ``t`` (id, v, n)
gets random inserts, updates and deletes. Before each sync the child appends
``pending I STATE`` to LOG (STATE: the SQLite rows as JSON, the state sync I
commits) and after it returns ``done I WALLCLOCK``; every few cycles it
flushes or compacts in between. Prints ``ready`` once the table is registered
(state 0 synced) and ``finished N`` at the end. See :class:`StateLog`.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import rhei_lake
from tests.support.oracle import oltp_oracle, sqlite_state

TABLE_SQL = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n REAL)"


def random_changes(conn: sqlite3.Connection, rng: random.Random) -> list[tuple[str, tuple]]:
    out: list[tuple[str, tuple]] = []
    for _ in range(rng.randint(1, 6)):
        key = rng.randint(1, 40)
        kind = rng.random()
        if kind < 0.45:
            out.append(
                ("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", (key, f"v{rng.randint(0, 99)}", rng.uniform(-1e6, 1e6)))
            )
        elif kind < 0.8:
            out.append(("UPDATE t SET v = ?, n = n * 3.1 WHERE id = ?", (f"u{rng.randint(0, 99)}", key)))
        else:
            out.append(("DELETE FROM t WHERE id = ?", (key,)))
    return out


class StateLog:
    """The child's log as the test reads it: states by sync number, and when each sync returned."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[dict[int, list[tuple]], dict[int, float]]:
        pending: dict[int, list[tuple]] = {}
        done: dict[int, float] = {}
        if not self.path.exists():
            return pending, done
        # Whole lines only: the child may be writing the last one (a long state is written in
        # several pieces, and a read can land between them).
        for line in self.path.read_text().split("\n")[:-1]:
            kind, number, rest = line.split(" ", 2)
            if kind == "pending":
                pending[int(number)] = [tuple(row) for row in json.loads(rest)]
            else:
                done[int(number)] = float(rest)
        return pending, done


@dataclass
class Window:
    """The syncs a query may see: from the newest one it must see to the newest that could have committed."""

    first: int
    last: int


def window(log: StateLog, started: float, interval: float, ended_pending: int) -> Window:
    """``started``: wall clock when the query began; syncs done ``interval`` before it must be visible."""
    _pending, done = log.read()
    visible = [number for number, at in done.items() if at <= started - interval]
    return Window(max(visible, default=0), ended_pending)


def main() -> None:
    db, storage, log_path, seconds, seed = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    retention = sys.argv[6] if len(sys.argv) > 6 else None  # changelog_retention: compactions expire events
    rng = random.Random(seed)
    options = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lines must reach the file as written
    with rhei_lake.open(
        oltp_path=db,
        storage=storage,
        storage_options=options,
        tail_flush_segments=4,
        changelog_retention=retention,
    ) as lake:
        lake.execute(TABLE_SQL)
        conn = oltp_oracle(lake)
        log.write(f"pending 0 {json.dumps(sqlite_state(conn, 't'))}\n")
        lake.register_table("t")
        log.write(f"done 0 {time.time()!r}\n")
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        number = 0
        while time.monotonic() < deadline:
            number += 1
            lake.execute_batch(random_changes(conn, rng))
            log.write(f"pending {number} {json.dumps(sqlite_state(conn, 't'))}\n")
            lake.sync_now()
            log.write(f"done {number} {time.time()!r}\n")
            if number % 7 == 0:
                lake.flush()
            if number % 11 == 0:
                lake.compact(vacuum_retention=0)
        print(f"finished {number}", flush=True)
    log.close()


if __name__ == "__main__":
    main()
