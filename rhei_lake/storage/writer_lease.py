"""The writer lease of a syncing lake: one process syncs a lake at a time.

:class:`WriterLease` is what :class:`rhei_lake.Lake` holds from ``open()`` to
``close()`` (the ``writer`` :class:`~rhei_lake.storage.lease.Lease`): taken at
open, waiting up to ``lease_wait`` seconds for another holder; renewed by a
:class:`~rhei_lake.storage.lease_keeper.LeaseKeeper`; checked before every
commit; released at close so the next process takes it at once.
"""

from __future__ import annotations

from rhei_lake.errors import LeaseHeldError, LeaseLostError
from rhei_lake.storage.blobs import BlobStore
from rhei_lake.storage.clock import SYSTEM_CLOCK, Clock
from rhei_lake.storage.lease import DEFAULT_TTL, Lease
from rhei_lake.storage.lease_keeper import LeaseKeeper


class WriterLease:
    """The lease a syncing lake holds from ``open()`` to ``close()``: taken, kept renewed, checked, released."""

    def __init__(
        self, blobs: BlobStore, *, ttl: float = DEFAULT_TTL, wait: float = 0.0, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.lease = Lease(blobs, ttl=ttl, clock=clock)
        self.wait = wait
        self._keeper: LeaseKeeper | None = None

    def acquire(self) -> None:
        """Take the lease, waiting up to ``wait`` seconds for another holder; :class:`LeaseHeldError` after."""
        try:
            self.lease.acquire_within(self.wait)
        except LeaseHeldError as exc:
            if self.wait > 0:
                raise LeaseHeldError(f"{exc} (waited {self.wait:g}s)") from None
            raise
        self._keeper = LeaseKeeper(self.lease)
        self._keeper.start()

    def ensure(self) -> None:
        """Before a commit: :class:`LeaseLostError` if another process took the lease over.

        A lease that lapsed while this process stalled (a long pause, the store
        unreachable for a while) is renewed if nobody took it meanwhile.
        """
        keeper = self._keeper
        if keeper is not None and keeper.error is not None:
            raise LeaseLostError(str(keeper.error))
        try:
            self.lease.check()
        except LeaseLostError:
            if self.lease.epoch is None:
                raise
            self.lease.renew()  # LeaseLostError if it was taken over

    def release(self) -> None:
        """Stop renewing and give the lease up, so another process can take it at once."""
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        self.lease.release()
