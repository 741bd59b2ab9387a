"""Flight SQL benchmark: queries/s over the network (ADBC) vs the same queries in-process.

    python bench/bench_flight_sql.py [--rows 100000] [--clients 1,4,16] [--seconds 2]
        [--relations orders,orders_changes] [--compression zstd] [--json results.json]

Builds a local lake with one table of ``--rows`` orders, serves it read-only on
127.0.0.1, and for each query (full scan, filter, GROUP BY) and each number of
concurrent clients runs the query in a loop for ``--seconds``: once through the
Flight SQL server (one ADBC connection per client thread, every result fetched
whole) and once in-process (``Lake.query`` from as many threads). Absolute
numbers depend on the machine; the ratios measured in one run are the point.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import adbc_driver_flightsql.dbapi as flight_sql

import rhei_lake
from rhei_lake.flight import serve_flight

QUERIES = {
    "full scan": "SELECT * FROM {t}",
    "filter": "SELECT id, customer, total FROM {t} WHERE customer = 'c3' AND total > 500",
    "group by": "SELECT customer, count(*) AS n, sum(total) AS total, avg(total) AS mean FROM {t} GROUP BY customer",
}
# orders: the current rows, merged on read from the change feed (until compaction folds it);
# orders_changes: the change feed itself, a plain scan of one Delta table.
RELATIONS = ("orders", "orders_changes")


def build_lake(root: Path, rows: int) -> str:
    """A lake whose ``orders`` table holds ``rows`` rows, committed and flushed to Delta."""
    db = root / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, day DATE, note TEXT)")
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
            (
                (
                    i,
                    f"c{i % 20}",
                    round((i * 7919) % 100_000 / 100, 2),
                    f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    f"order note {i}",
                )
                for i in range(rows)
            ),
        )
    storage = str(root / "lake")
    with rhei_lake.open(oltp_path=str(db), storage=storage) as lake:
        lake.register_table("orders")
        lake.flush()
    return storage


def run_clients(clients: int, seconds: float, make_runner: Callable[[], Callable[[], int]]) -> tuple[float, int]:
    """Run ``clients`` threads, each repeating its runner for ``seconds``; (queries/s, rows of one result)."""
    runners = [make_runner() for _ in range(clients)]
    counts = [0] * clients
    rows = [0]
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def loop(i: int) -> None:
        start.wait()
        deadline = time.perf_counter() + seconds
        try:
            while time.perf_counter() < deadline:
                rows[0] = runners[i]()
                counts[i] += 1
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return sum(counts) / elapsed, rows[0]


class FlightClients:
    """One ADBC connection and cursor per client thread, closed together."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.opened: list = []

    def runner(self, sql: str) -> Callable[[], Callable[[], int]]:
        def make() -> Callable[[], int]:
            conn = flight_sql.connect(self.location, autocommit=True)
            cursor = conn.cursor()
            self.opened.append((conn, cursor))

            def run() -> int:
                cursor.execute(sql)
                return cursor.fetch_arrow_table().num_rows

            return run

        return make

    def close(self) -> None:
        while self.opened:
            conn, cursor = self.opened.pop()
            cursor.close()
            conn.close()


def measure(lake: rhei_lake.Lake, location: str, sql: str, clients: int, seconds: float) -> tuple[float, float, int]:
    """(Flight SQL q/s, in-process q/s, rows per result) of ``sql`` with ``clients`` concurrent clients."""
    remote_clients = FlightClients(location)
    try:
        remote, rows = run_clients(clients, seconds, remote_clients.runner(sql))
    finally:
        remote_clients.close()
    local, local_rows = run_clients(clients, seconds, lambda: lambda: lake.query(sql).num_rows)
    assert rows == local_rows, (sql, rows, local_rows)
    return remote, local, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    parser.add_argument("--relations", default=",".join(RELATIONS), help="comma-separated: orders, orders_changes")
    parser.add_argument("--compression", default="zstd", choices=("zstd", "lz4", "none"))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory(prefix="rhei-bench-flight-") as tmp:
        started = time.perf_counter()
        storage = build_lake(Path(tmp), args.rows)
        print(
            f"built a {args.rows:,}-row lake in {time.perf_counter() - started:.1f}s; "
            f"{args.seconds:g}s per measurement, compression {args.compression}"
        )
        results = []
        with rhei_lake.open(storage=storage) as lake, serve_flight(lake, compression=args.compression) as server:
            print(
                f"\n{'relation':<15} {'query':<10} {'clients':>7} {'rows':>8} {'flight q/s':>11} "
                f"{'in-process q/s':>15} {'ratio':>6}"
            )
            for relation in args.relations.split(","):
                for name, template in QUERIES.items():
                    for clients in client_counts:
                        remote, local, rows = measure(
                            lake, server.location, template.format(t=relation), clients, args.seconds
                        )
                        print(
                            f"{relation:<15} {name:<10} {clients:>7} {rows:>8,} {remote:>11.1f} {local:>15.1f} "
                            f"{local / remote:>5.1f}x",
                            flush=True,
                        )
                        results.append(
                            {
                                "relation": relation,
                                "query": name,
                                "clients": clients,
                                "rows": rows,
                                "flight_qps": remote,
                                "in_process_qps": local,
                            }
                        )
        print("\nratio: in-process q/s over Flight SQL q/s (the cost of the network path, on this machine)")
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": args.rows, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
