"""A sidecar process: sync the ``items`` table once (with progress lines on stdout), then exit.

Usage: python -m tests.support.sidecar_child SOURCE_URL STORAGE BATCH_SIZE

Storage options come from the environment (AWS_*), as a user would set them.
The parent kills it mid-sync and starts a fresh one from the storage URL alone.
"""

from __future__ import annotations

import sys

import rhei_lake


def main() -> None:
    source, storage, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    table = rhei_lake.PolledTable("items", updated_at="updated_at", deleted_at="deleted_at")
    with rhei_lake.open(
        source=source, storage=storage, tables=[table], batch_size=batch, hard_delete_interval=0, tail_flush_segments=4
    ) as lake:

        def progress(_table: str, done: int, total: int) -> None:
            print(f"progress {done} {total}", flush=True)

        report = lake.sync_now(progress=progress)
        lake.flush()
    print(f"done {report.events}", flush=True)


if __name__ == "__main__":
    main()
