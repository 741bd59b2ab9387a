"""A reader process: queries a lake read-only, again and again, while another process writes to it.

Usage: python -m tests.support.reader_child STORAGE SECONDS BATCH_ROWS

The writer commits rows in batches of BATCH_ROWS that share a ``batch`` value,
one batch per commit. A reader may see any committed snapshot, never part of
one: every batch it sees must be whole, and batches never disappear. Prints
``ok <queries> <newest batch seen>`` or ``torn <detail>`` and exits.
"""

from __future__ import annotations

import sys
import time

import rhei_lake


def main() -> None:
    storage, seconds, batch_rows = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    deadline = time.monotonic() + seconds
    lake = None
    while lake is None:
        try:
            lake = rhei_lake.open(storage=storage)
            if "feed" not in lake.tables():
                lake.close()
                lake = None
                time.sleep(0.05)
        except rhei_lake.RheiError:
            time.sleep(0.05)
        if time.monotonic() > deadline:
            print("ok 0 -1", flush=True)
            return
    queries, newest = 0, -1
    with lake:
        while time.monotonic() < deadline:
            counts = lake.query("SELECT batch, count(*) AS n FROM feed GROUP BY batch").to_pylist()
            seen = {row["batch"]: row["n"] for row in counts}
            torn = {b: n for b, n in seen.items() if n != batch_rows}
            if torn:
                print(f"torn {torn}", flush=True)
                return
            if seen and max(seen) < newest:
                print(f"went back from batch {newest} to {max(seen)}", flush=True)
                return
            if seen and sorted(seen) != list(range(min(seen), max(seen) + 1)):
                print(f"gap in batches {sorted(seen)[:10]}", flush=True)
                return
            newest = max(seen, default=newest)
            queries += 1
    print(f"ok {queries} {newest}", flush=True)


if __name__ == "__main__":
    main()
