"""OLTP write overhead of the CDC triggers: 100K single-row and 100K batched inserts.

Limit: the same inserts into the same table without triggers. Target: <= 2x.
Both databases use the same connection settings (WAL, synchronous=NORMAL).
Also measured, without a target: batched inserts into a table with a UNIQUE
column, which the guard triggers watch for rows REPLACE deletes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import rhei_lake
from bench.core import Result, Settings, timer

DDL = "CREATE TABLE t (id INTEGER PRIMARY KEY, customer TEXT, total REAL, qty INTEGER, placed_at TEXT)"
UNIQUE_DDL = "CREATE TABLE t (id INTEGER PRIMARY KEY, customer TEXT, total REAL, qty INTEGER, placed_at TEXT UNIQUE)"


def _db(path: Path, captured: bool, ddl: str = DDL) -> sqlite3.Connection:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(ddl)
    if captured:
        with rhei_lake.open(oltp_path=str(path), storage="memory://") as lake:
            lake.register_table("t")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


_Row = tuple[int, str, float, int, str]


def _rows(start: int, count: int, unique: bool = False) -> list[_Row]:
    def placed(i: int) -> str:
        return f"2026-11-23 10:00:00.{i:06d}" if unique else "2026-11-23 10:00:00"

    return [(i, f"customer {i % 997}", i * 0.25, i % 50, placed(i)) for i in range(start, start + count)]


def _time_inserts(conn: sqlite3.Connection, rows: list[_Row], batched: bool) -> float:
    with timer() as elapsed:
        if batched:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", rows)
            conn.execute("COMMIT")
        else:
            for row in rows:
                conn.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", row)
    return elapsed()


def run(settings: Settings) -> list[Result]:
    count = settings.size(20_000, 100_000)
    rounds = settings.size(3, 5)
    results = []
    for batched, unique in ((False, False), (True, False), (True, True)):
        rows = _rows(1, count, unique)
        ddl = UNIQUE_DDL if unique else DDL
        plain = _db(settings.workdir / "plain.db", captured=False, ddl=ddl)
        captured = _db(settings.workdir / "captured.db", captured=True, ddl=ddl)
        best_plain = best_capt = float("inf")
        for _ in range(rounds):  # interleaved, best of each: the machine's noise hits both alike
            for conn, is_captured in ((plain, False), (captured, True)):
                conn.execute("DELETE FROM t")
                if is_captured:
                    conn.execute("DELETE FROM _rhei_cdc_log")
                took = _time_inserts(conn, rows, batched)
                if is_captured:
                    best_capt = min(best_capt, took)
                else:
                    best_plain = min(best_plain, took)
        plain.close()
        captured.close()
        label = ("batched" if batched else "single-row") + (" inserts, UNIQUE column" if unique else " inserts")
        ratio = best_capt / best_plain
        target, met = ("", None) if unique else ("<= 2x the time without triggers", ratio <= 2.0)
        results.append(
            Result(
                "trigger overhead",
                f"{count // 1000}K {label}",
                count / best_capt,
                "rows/s",
                count / best_plain,
                ratio,
                target,
                met,
                False,
                {"ratio_is": "time with triggers / time without", "rounds": rounds},
            )
        )
    return results
