"""Sidecar initial sync speed against reading the same table with ADBC (rows/s and their ratio).

    python bench/sidecar_initial_sync.py [--rows 300000] [--source sqlite|postgresql|both] [--storage DIR]

ADBC (adbc-driver-sqlite / adbc-driver-postgresql, ``pip install -e '.[bench]'``)
reads the table straight into Arrow: the fastest way to read it at all, so the
ratio says how close the sidecar's first sync (read, convert exactly by
declared type, number, commit to Delta) comes to the speed of reading the
source. PostgreSQL runs on a throwaway cluster started like the tests do.
Timings are noisy on a shared machine: compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rhei_lake  # noqa: E402

if TYPE_CHECKING:
    from tests.support.postgres import PostgresServer

DDL = {
    "sqlite": "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, qty INTEGER, "
    "status TEXT, updated_at TEXT NOT NULL)",
    "postgresql": "CREATE TABLE orders (id bigint PRIMARY KEY, customer text, total double precision, qty bigint, "
    "status text, updated_at timestamptz NOT NULL)",
}


def _fill_sqlite(path: str, rows: int) -> str:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(DDL["sqlite"])
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)",
        (
            (
                i,
                f"customer {i % 997}",
                i * 0.37,
                i % 13,
                "paid" if i % 3 else "new",
                f"2026-01-01T00:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d}.{i % 1000:03d}000Z",
            )
            for i in range(rows)
        ),
    )
    conn.execute("COMMIT")
    conn.close()
    return f"sqlite://{path}"


def fill_postgres(server: PostgresServer, rows: int) -> str:
    """A fresh database on ``server`` with ``rows`` orders; its URL."""
    db = server.create_database()
    with server.connect(db) as conn:
        conn.execute(DDL["postgresql"])
        conn.execute(
            "INSERT INTO orders SELECT g, 'customer ' || g %% 997, g * 0.37, g %% 13, "
            "CASE WHEN g %% 3 = 0 THEN 'new' ELSE 'paid' END, "
            "timestamptz '2026-01-01' + (g || ' milliseconds')::interval FROM generate_series(0, %s) g",
            (rows - 1,),
        )
        conn.execute("ANALYZE orders")
    return server.url(db)


def _adbc_read(kind: str, url: str) -> tuple[int, float]:
    started = time.perf_counter()
    if kind == "sqlite":
        import adbc_driver_sqlite.dbapi as adbc_sqlite

        conn = adbc_sqlite.connect(url[len("sqlite://") :])
    else:
        import adbc_driver_postgresql.dbapi as adbc_postgresql

        conn = adbc_postgresql.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM orders")
        table = cur.fetch_arrow_table()
    return table.num_rows, time.perf_counter() - started


def _sidecar_sync(url: str, storage: str, batch_size: int) -> tuple[int, float]:
    started = time.perf_counter()
    table = rhei_lake.PolledTable("orders", updated_at="updated_at")
    with rhei_lake.open(source=url, storage=storage, tables=[table], batch_size=batch_size) as lake:
        report = lake.sync_now()
        lake.flush()
    return report.events, time.perf_counter() - started


def run(kind: str, url: str, storage: str, batch_size: int) -> None:
    rows_a, secs_a = _adbc_read(kind, url)
    rows_s, secs_s = _sidecar_sync(url, storage, batch_size)
    assert rows_a == rows_s, (rows_a, rows_s)
    rate_a, rate_s = rows_a / secs_a, rows_s / secs_s
    print(
        f"{kind:10s} rows={rows_a:>9,d}  adbc read {rate_a:>12,.0f} rows/s  "
        f"sidecar initial sync {rate_s:>12,.0f} rows/s  ratio {rate_s / rate_a:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--source", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--storage", help="lake directory (default: a temporary one)")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="rhei-bench-")
    if args.source in ("sqlite", "both"):
        url = _fill_sqlite(os.path.join(work, "source.db"), args.rows)
        run("sqlite", url, args.storage or os.path.join(work, "lake-sqlite"), args.batch_size)
    if args.source in ("postgresql", "both"):
        from tests.support.postgres import PostgresUnavailable, start_postgres

        try:
            server = start_postgres()
        except PostgresUnavailable as exc:
            print(f"postgresql skipped: {exc}")
            return
        try:
            url = fill_postgres(server, args.rows)
            run(
                "postgresql",
                url,
                os.path.join(work, "lake-pg") if not args.storage else args.storage + "-pg",
                args.batch_size,
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
