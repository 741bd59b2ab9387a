"""A reader process: queries a lake read-only, again and again, while another process writes to it.

Usage: python -m tests.support.reader_child STORAGE RENDEZVOUS_DIR BATCH_ROWS

The writer commits rows in batches of BATCH_ROWS that share a ``batch`` value,
one batch per commit. A reader may see any committed snapshot, never part of
one: every batch it sees must be whole, and batches never disappear.

The reader and the writer meet through files in RENDEZVOUS_DIR rather than a
shared wall-clock window (a loaded machine may take seconds to start a
process): the reader writes ``ready-<pid>`` once it has the lake open, and
reads until the writer creates ``stop``, then once more. Prints
``ok <queries> <newest batch seen>`` or ``torn <detail>`` and exits.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import rhei_lake

GIVE_UP_AFTER = 180.0  # seconds; only if the writer died without creating ``stop``


def _open_when_ready(storage: str, deadline: float) -> rhei_lake.Lake | None:
    while time.monotonic() < deadline:
        try:
            lake = rhei_lake.open(storage=storage)
        except rhei_lake.RheiError:
            time.sleep(0.05)
            continue
        if "feed" in lake.tables():
            return lake
        lake.close()
        time.sleep(0.05)
    return None


def _check(lake: rhei_lake.Lake, batch_rows: int, newest: int) -> tuple[str | None, int]:
    counts = lake.query("SELECT batch, count(*) AS n FROM feed GROUP BY batch").to_pylist()
    seen = {row["batch"]: row["n"] for row in counts}
    torn = {b: n for b, n in seen.items() if n != batch_rows}
    if torn:
        return f"torn {torn}", newest
    if seen and max(seen) < newest:
        return f"went back from batch {newest} to {max(seen)}", newest
    if seen and sorted(seen) != list(range(min(seen), max(seen) + 1)):
        return f"gap in batches {sorted(seen)[:10]}", newest
    return None, max(seen, default=newest)


def main() -> None:
    storage, rendezvous, batch_rows = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    deadline = time.monotonic() + GIVE_UP_AFTER
    lake = _open_when_ready(storage, deadline)
    if lake is None:
        print("never saw the table feed", flush=True)
        return
    (rendezvous / f"ready-{os.getpid()}").touch()
    queries, newest = 0, -1
    with lake:
        while True:
            stopping = (rendezvous / "stop").exists() or time.monotonic() > deadline
            problem, newest = _check(lake, batch_rows, newest)
            if problem:
                print(problem, flush=True)
                return
            queries += 1
            if stopping:
                break
    print(f"ok {queries} {newest}", flush=True)


if __name__ == "__main__":
    main()
