"""A child process that opens a lake on a database, for races and crashes of the one-database-one-lake binding.

Usage: python -m tests.support.binding_child DB STORAGE GO_FILE HOLD_SECONDS

Prints ``{"ready": true}`` once imported, waits until GO_FILE exists (so several
children open at once, however long their imports took), opens
``rhei_lake.open(oltp_path=DB, storage=STORAGE)`` and prints one JSON line:
``{"bound": true}`` or ``{"bound": false, "error": class, "message": ...}``.
A bound child registers table ``t`` if it exists, holds the lake HOLD_SECONDS
(``-1``: until killed), then closes it. ``RHEI_FAULTS`` arms fault points.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time

import rhei_lake
from rhei_lake import faults


def main() -> None:
    db, storage, go, hold = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    faults.arm_spec(os.environ.get("RHEI_FAULTS"))
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.001)
    try:
        lake = rhei_lake.open(oltp_path=db, storage=storage)
    except rhei_lake.RheiError as exc:
        print(json.dumps({"bound": False, "error": type(exc).__name__, "message": str(exc)}), flush=True)
        return
    with lake:
        has_t = sqlite3.connect(db).execute("SELECT 1 FROM sqlite_master WHERE name = 't'").fetchone()
        if has_t:
            lake.register_table("t")
        print(json.dumps({"bound": True}), flush=True)
        if hold < 0:
            while True:
                time.sleep(1)
        time.sleep(hold)


if __name__ == "__main__":
    main()
