"""A long-running writer, as a service would be: background sync, a write every few milliseconds.

Usage: python -m tests.support.serve_child DB STORAGE STOP_FILE SECONDS [LEASE_TTL [LEASE_WAIT]]

Prints ``open`` once the lake is open (or ``refused <error>`` and exits 3 when
the writer lease is held), then one ``status <loop state> <last error kind>``
line every 0.1 s. Stops after SECONDS, or when STOP_FILE appears,
and closes the lake (a final sync). Storage options come from ``AWS_*``.
"""

from __future__ import annotations

import os
import sys
import time

import rhei_lake
from rhei_lake.errors import LeaseHeldError, RheiError


def main() -> None:
    db, storage, stop_file, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    ttl = float(sys.argv[5]) if len(sys.argv) > 5 else 30.0
    wait = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    try:
        lake = rhei_lake.open(
            oltp_path=db,
            storage=storage,
            sync_interval=0.05,
            sync_max_backoff=0.2,
            lease_ttl=ttl,
            lease_wait=wait,
            prune_interval=0,
        )
    except LeaseHeldError as exc:
        print(f"refused {exc}", flush=True)
        sys.exit(3)
    lake.execute("CREATE TABLE IF NOT EXISTS ticks (id INTEGER PRIMARY KEY, pid INTEGER, at REAL)")
    lake.register_table("ticks")
    print("open", flush=True)
    deadline = time.monotonic() + seconds
    last_report = 0.0
    while time.monotonic() < deadline and not os.path.exists(stop_file):
        lake.execute("INSERT INTO ticks (pid, at) VALUES (?, ?)", (os.getpid(), time.time()))
        if time.monotonic() - last_report > 0.1:
            status = lake.sync_status()
            error = status.loop.last_error.kind if status.loop.last_error else "-"
            print(f"status {status.loop.state} {error}", flush=True)
            last_report = time.monotonic()
        time.sleep(0.005)
    try:
        lake.close()
        print("closed", flush=True)
    except RheiError as exc:
        print(f"closed-with {type(exc).__name__}", flush=True)


if __name__ == "__main__":
    main()
