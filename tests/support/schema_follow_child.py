"""A child process that opens a lake and syncs once, so the parent can kill it while it follows a schema change.

Usage: python -m tests.support.schema_follow_child DB STORAGE

This is the edge, so it reads ``RHEI_FAULTS`` (a :mod:`rhei_lake.faults` spec).
"""

from __future__ import annotations

import os
import sys

import rhei_lake
from rhei_lake import faults


def main() -> None:
    db, storage = sys.argv[1], sys.argv[2]
    faults.arm_spec(os.environ.get("RHEI_FAULTS"))
    with rhei_lake.open(oltp_path=db, storage=storage, prune_interval=0) as lake:
        lake.sync_now()


if __name__ == "__main__":
    main()
