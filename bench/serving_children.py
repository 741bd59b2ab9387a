"""Child processes of the serving benchmark: a writer syncing on a timer, a reader whose memory is measured.

    python -m bench.serving_children writer DB STORAGE LOG SECONDS INTERVAL
    python -m bench.serving_children memory STORAGE TABLE

The writer (HTAP, the table already registered) inserts a few orders and runs
``sync_now()`` every INTERVAL seconds, appending ``<highest id synced> <wall
clock when sync_now returned>`` to LOG. The memory child opens the lake
read-only, makes it build TABLE's cached state with one query and prints, as
JSON, its resident memory before and after, the bytes the state holds and the
Arrow size of the table's rows.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import rhei_lake


def _rss() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def writer(db: str, storage: str, log_path: str, seconds: float, interval: float) -> None:
    with rhei_lake.open(oltp_path=db, storage=storage) as lake, open(log_path, "a", buffering=1) as log:
        next_id = lake.query("SELECT max(id) AS m FROM orders", hint="olap").column(0)[0].as_py() + 1
        print("ready", flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            lake.execute_batch(
                [
                    (
                        "INSERT INTO orders VALUES (?, 'c-new', 'placed', 1.5, 1, '2026-01-01 00:00:00', "
                        "'2026-01-01T00:00:00.000Z')",
                        (next_id + i,),
                    )
                    for i in range(5)
                ]
            )
            next_id += 5
            lake.sync_now()
            log.write(f"{next_id - 1} {time.time()!r}\n")
            time.sleep(max(0.0, interval - (time.monotonic() - started)))


def memory(storage: str, table: str) -> None:
    before = _rss()
    with rhei_lake.open(storage=storage) as lake:
        opened = _rss()
        started = time.perf_counter()
        rows = lake.query(f"SELECT count(*) AS n FROM {table}").column(0)[0].as_py()
        built = time.perf_counter() - started
        after = _rss()
        state = lake._queries._states[table]
        assert state.rows is not None  # the count built `t`
        held = sum(t.nbytes for t in (state.rows, state.unfolded) if t is not None)
        if state.feed is not None and state.feed.tail is not None:
            held += state.feed.tail.nbytes
        print(
            json.dumps(
                {
                    "rows": rows,
                    "arrow_bytes": state.rows.nbytes,
                    "state_bytes": held,
                    "rss_before_open": before["VmRSS"],
                    "rss_opened": opened["VmRSS"],
                    "rss_after": after["VmRSS"],
                    "peak_rss": after["VmHWM"],
                    "build_seconds": built,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6]))
    else:
        memory(sys.argv[2], sys.argv[3])
