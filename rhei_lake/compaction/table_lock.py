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

from rhei_lake.errors import LeaseHeldError, LeaseLostError
from rhei_lake.storage.blobs import BlobStore
from rhei_lake.storage.clock import SYSTEM_CLOCK, Clock
from rhei_lake.storage.lake_storage import encode_table_dir
from rhei_lake.storage.lease import Lease
from rhei_lake.storage.lease_keeper import LeaseKeeper

LOCK_TTL = 20.0
"""Seconds a compaction's table lease lasts unless renewed (renewed every third of it)."""

DEFAULT_WAIT = 900.0
"""Seconds a compaction waits for another compaction of the same table before giving up."""


class HeldTable:
    """A table's compaction lease while it is held: :meth:`check` before each bin-pack."""

    def __init__(self, table: str, lease: Lease, keeper: LeaseKeeper) -> None:
        self.table = table
        self._lease = lease
        self._keeper = keeper

    def check(self) -> None:
        """:class:`LeaseLostError` if another compaction took the table over (this one stalled past the TTL).

        Two bin-packings of one table must not overlap (see the module
        docstring), so a compaction that lost its lease stops before its next
        bin-pack; what it committed so far is whole.
        """
        lost = self._keeper.error
        if lost is None:
            try:
                self._lease.check()
                return
            except LeaseLostError:
                try:
                    self._lease.renew()  # lapsed while this process stalled: fine unless someone took it
                    return
                except LeaseLostError as exc:
                    lost = exc
        raise LeaseLostError(
            f"table {self.table!r}: this compaction lost the table's lease ({lost}); it stopped before "
            "bin-packing, and what it committed is whole. Compact again"
        )


@contextmanager
def compaction_lock(
    blobs: BlobStore, table: str, *, wait: float = DEFAULT_WAIT, ttl: float = LOCK_TTL, clock: Clock = SYSTEM_CLOCK
) -> Iterator[HeldTable]:
    """Hold ``table``'s compaction lease for the ``with`` block, waiting up to ``wait`` seconds (of ``clock``) for it."""
    lease = Lease(blobs, f"compact-{encode_table_dir(table)}", ttl=ttl, clock=clock)
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
        yield HeldTable(table, lease, keeper)
    finally:
        keeper.stop()
        lease.release()
