"""A child that mirrors one big table through the pipelined first read, to be killed mid-way.

Usage: python -m tests.support.first_read_child MODE DB STORAGE

``MODE`` is ``trigger`` (``register_table("items")``: a columnar snapshot) or
``sidecar`` (``sync_now()`` of a lake following ``items``: a columnar first
sync). Small batches make the read many batches long. ``RHEI_FAULTS`` (a
:mod:`rhei_lake.faults` spec) says where to break it.
"""

from __future__ import annotations

import os
import sys

import rhei_lake
from rhei_lake import faults

BATCH_ROWS = 500


def open_lake(mode: str, db: str, storage: str) -> rhei_lake.Lake:
    options = {"columnar_min_rows": 1, "batch_size": BATCH_ROWS}
    if mode == "trigger":
        return rhei_lake.open(oltp_path=db, storage=storage, **options)
    table = rhei_lake.PolledTable("items", primary_key=["id"], updated_at="updated_at")
    return rhei_lake.open(source=f"sqlite:///{db}", storage=storage, tables=[table], **options)


def main() -> None:
    mode, db, storage = sys.argv[1:4]
    faults.arm_spec(os.environ.get("RHEI_FAULTS"))
    with open_lake(mode, db, storage) as lake:
        if mode == "trigger":
            lake.register_table("items")
        else:
            lake.sync_now()


if __name__ == "__main__":
    main()
