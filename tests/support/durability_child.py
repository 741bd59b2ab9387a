"""Write rows, commit them, then die at once: what did the commit promise?

Usage: python -m tests.support.durability_child DB STORAGE ROWS {sync|flush|exit}

Inserts ROWS rows into ``t``, calls ``sync_now()`` (and ``flush()`` for
``flush``), prints ``committed <rows>`` and then SIGKILLs itself before
anything else can run (``exit`` ends normally instead, closing nothing).
Storage options come from ``AWS_*``.
"""

from __future__ import annotations

import os
import signal
import sys

import rhei_lake


def main() -> None:
    db, storage, rows, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    lake = rhei_lake.open(oltp_path=db, storage=storage, prune_interval=0)
    lake.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
    lake.register_table("t")
    start = lake.query("SELECT coalesce(max(id), 0) AS n FROM t", hint="oltp").column(0)[0].as_py()
    lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (i, f"v{i}")) for i in range(start + 1, start + rows + 1)])
    lake.execute(f"UPDATE t SET v = 'updated' WHERE id = {start + 1}")
    lake.sync_now()
    if how == "flush":
        lake.flush()
    print(f"committed {start + rows}", flush=True)
    if how == "exit":
        os._exit(0)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
