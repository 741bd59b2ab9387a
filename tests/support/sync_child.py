"""A child process that writes random changes and syncs them until it is killed (or done).

Usage: python -m tests.support.sync_child DB STORAGE SEED STATEMENTS [--final]

Storage options come from the environment (AWS_*), as a user would set them.
With --final it only syncs what is pending, flushes and exits.
"""

from __future__ import annotations

import sys

import rhei_lake
from tests.support.workload import SCHEMA, Workload


def main() -> None:
    db, storage, seed, statements = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    final = "--final" in sys.argv
    lake = rhei_lake.open(oltp_path=db, storage=storage, tail_flush_segments=3, prune_interval=0)
    for table in SCHEMA:
        lake.register_table(table)
    if final:
        lake.sync_now()
        lake.flush()
        lake.close()
        return
    workload = Workload(seed)
    for _ in range(statements):
        for _ in range(workload.rng.randint(1, 8)):
            lake.execute(*workload.statement())
        lake.sync_now()
    lake.close()


if __name__ == "__main__":
    main()
