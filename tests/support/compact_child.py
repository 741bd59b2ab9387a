"""A child process that compacts a lake it knows only by URL, to be killed at random moments.

Usage: python -m tests.support.compact_child STORAGE [VACUUM_RETENTION]

Storage options come from the environment (AWS_*), as a user would set them.
Prints ``ready`` once the lake is open and ``done SECONDS`` after compacting.
"""

from __future__ import annotations

import sys
import time

import rhei_lake


def main() -> None:
    storage = sys.argv[1]
    retention = sys.argv[2] if len(sys.argv) > 2 else None
    lake = rhei_lake.open(storage=storage)
    print("ready", flush=True)
    started = time.perf_counter()
    lake.compact(vacuum_retention=retention)
    print(f"done {time.perf_counter() - started:.3f}", flush=True)
    lake.close()


if __name__ == "__main__":
    main()
