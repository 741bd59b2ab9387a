"""A child process of the crash matrix: does one kind of work on a lake until it is killed (or done).

Usage: python -m tests.support.crash_child SCENARIO DB STORAGE SEED [--final | --until-killed]

Scenarios:

``sync``      random writes to the workload tables, ``sync_now()`` after each burst, a flush now and then
``register``  register the tables ``snap_*`` the parent created (a snapshot each), then write and sync
``schema``    writes to ``evolving`` with ``add_column`` / ``drop_column`` between syncs
``compact``   like ``sync``, with ``compact(vacuum_retention=0)`` every few rounds, folding in small batches
``restore``   ``restore_sqlite()`` of the lake, again and again, into the file named by RHEI_RESTORE_TARGET

This is the edge, so it reads the environment: storage options (``AWS_*``) as a
user would set them, and ``RHEI_FAULTS``, a :mod:`rhei_lake.faults` spec. It prints
``ready`` once the lake is open, so the parent can time random kills from there.
With ``--final`` it only finishes pending work (sync, flush) and exits 0; with
``--until-killed`` it repeats its work with no end, so a kill timed at random
always lands on a working child however fast the machine is.
"""

from __future__ import annotations

import os
import itertools
import random
import sqlite3
import sys
from collections.abc import Iterable

import rhei_lake
from rhei_lake import faults
from tests.support.workload import SCHEMA, Workload

EVOLVING = "evolving"
ROUNDS = 400


def rounds() -> Iterable[int]:
    """The rounds of work: ``ROUNDS`` of them, or endless under ``--until-killed``."""
    return itertools.count() if "--until-killed" in sys.argv else range(ROUNDS)


def open_lake(db: str, storage: str) -> rhei_lake.Lake:
    return rhei_lake.open(oltp_path=db, storage=storage, tail_flush_segments=3, prune_interval=0)


def snapshot_tables(db: str) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'snap_%' ORDER BY name")
        return [r[0] for r in rows]
    finally:
        conn.close()


def run_sync(lake: rhei_lake.Lake, seed: int) -> None:
    workload = Workload(seed)
    for round_ in rounds():
        lake.execute_batch([workload.statement() for _ in range(workload.rng.randint(1, 8))])
        lake.sync_now()
        if round_ % 7 == 6:
            lake.flush()


COMPACT_EVERY = 6
FOLD_BATCH = 40  # events per fold commit: a fold spans several commits, so kills land between them


def small_fold_batches() -> None:
    """Make every compaction fold ``FOLD_BATCH`` events per commit (the default folds far more at once)."""
    import dataclasses

    from rhei_lake.compaction import job

    original = job.CompactionOptions.from_config.__func__

    def from_config(cls, config, **kwargs):
        return dataclasses.replace(original(cls, config, **kwargs), fold_batch_events=FOLD_BATCH)

    job.CompactionOptions.from_config = classmethod(from_config)


def run_compact(lake: rhei_lake.Lake, seed: int) -> None:
    workload = Workload(seed)
    for round_ in rounds():
        lake.execute_batch([workload.statement() for _ in range(workload.rng.randint(1, 8))])
        lake.sync_now()
        if round_ % COMPACT_EVERY == COMPACT_EVERY - 1:
            lake.compact(vacuum_retention=0)


def run_register(lake: rhei_lake.Lake, db: str, seed: int) -> None:
    for table in snapshot_tables(db):
        lake.register_table(table)
    rng = random.Random(seed)
    tables = snapshot_tables(db)
    for _ in rounds():
        table = rng.choice(tables)
        key = rng.randint(1, 400)
        if rng.random() < 0.5:
            lake.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, f"v{rng.random()}"))
        else:
            lake.execute(f"DELETE FROM {table} WHERE id = ?", (key,))
        lake.sync_now()


def run_schema(lake: rhei_lake.Lake, seed: int) -> None:
    rng = random.Random(seed)
    for round_ in rounds():
        extra = [c for c in lake.table_spec(EVOLVING).column_names if c.startswith("x")]
        statements = []
        for _ in range(rng.randint(1, 5)):
            key = rng.randint(1, 50)
            cols = ["id", "v", *extra]
            values = [key, f"v{rng.randint(0, 999)}", *[rng.choice([None, rng.randint(0, 99)]) for _ in extra]]
            verb = "INSERT OR REPLACE" if rng.random() < 0.8 else "DELETE"
            if verb == "DELETE":
                statements.append((f"DELETE FROM {EVOLVING} WHERE id = ?", (key,)))
            else:
                marks = ", ".join("?" * len(cols))
                statements.append((f"{verb} INTO {EVOLVING} ({', '.join(cols)}) VALUES ({marks})", tuple(values)))
        lake.execute_batch(statements)
        lake.sync_now()
        if round_ % 3 == 2:
            if len(extra) < 3 and (not extra or rng.random() < 0.6):
                name = f"x{seed}_{round_}"
                lake.add_column(EVOLVING, name, "INTEGER")
            elif extra:
                lake.drop_column(EVOLVING, rng.choice(extra))


def run_restore(storage: str, target: str) -> None:
    with rhei_lake.open(storage=storage) as lake:
        print("ready", flush=True)
        for _ in rounds():
            lake.restore_sqlite(target, overwrite=True)


def main() -> None:
    scenario, db, storage, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    final = "--final" in sys.argv
    faults.arm_spec(os.environ.get("RHEI_FAULTS"))
    if scenario == "restore":
        run_restore(storage, os.environ["RHEI_RESTORE_TARGET"])
        return
    lake = open_lake(db, storage)
    if scenario == "compact":
        small_fold_batches()
    tables = list(SCHEMA) if scenario in ("sync", "compact") else [EVOLVING] if scenario == "schema" else []
    for table in tables:
        lake.register_table(table)
    print("ready", flush=True)
    if final:
        if scenario == "register":
            for table in snapshot_tables(db):
                lake.register_table(table)
        lake.sync_now()
        lake.flush()
        if scenario == "compact":
            lake.compact(vacuum_retention=0)
        lake.close()
        return
    if scenario == "sync":
        run_sync(lake, seed)
    elif scenario == "compact":
        run_compact(lake, seed)
    elif scenario == "register":
        run_register(lake, db, seed)
    elif scenario == "schema":
        run_schema(lake, seed)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    lake.close()


if __name__ == "__main__":
    main()
