"""One compaction of a table at a time, across processes: a lease per table.

Every fold commit is conditional on the folded watermark it read, so in
principle two compactions of one table could run side by side. In practice
delta-rs on S3 was seen to let two concurrent folds of the same events both
commit (a rebased commit checked against a snapshot missing the winner's
actions), doubling versions. Compactions of a table therefore take turns: a
second one waits while the first holds the table's lease (renewed while it
runs, taken over at once if its holder died on this machine, or after the TTL
elsewhere), and waiters are served in turn: a job compacting in a loop cannot
starve another compaction of the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rhei_lake.errors import LeaseHeldError
from rhei_lake.storage.blobs import BlobStore
from rhei_lake.storage.lake_storage import encode_table_dir
from rhei_lake.storage.lease import Lease, LeaseKeeper

LOCK_TTL = 20.0
"""Seconds a compaction's table lease lasts unless renewed (renewed every third of it)."""

DEFAULT_WAIT = 900.0
"""Seconds a compaction waits for another compaction of the same table before giving up."""


@contextmanager
def compaction_lock(
    blobs: BlobStore, table: str, *, wait: float = DEFAULT_WAIT, ttl: float = LOCK_TTL
) -> Iterator[None]:
    """Hold ``table``'s compaction lease for the ``with`` block, waiting up to ``wait`` seconds for it."""
    lease = Lease(blobs, f"compact-{encode_table_dir(table)}", ttl=ttl)
    try:
        lease.acquire_within(wait)
    except LeaseHeldError:
        holder = lease.current()
        raise LeaseHeldError(
            f"table {table!r} is being compacted by another process "
            f"({holder.holder if holder else 'unknown'}) for more than {wait:.0f}s; try again later"
        ) from None
    keeper = LeaseKeeper(lease)
    keeper.start()
    try:
        yield
    finally:
        keeper.stop()
        lease.release()
