"""Keeping a held lease alive: a daemon thread renews it every third of its TTL.

A renewal that fails on the store is retried at the next round (the TTL
leaves two more); a renewal that finds the lease taken over stops the keeper
and leaves the :class:`~rhei_lake.errors.LeaseLostError` in :attr:`LeaseKeeper.error`
for the holder to raise before its next commit.
"""

from __future__ import annotations

import logging
import threading

from rhei_lake.errors import LeaseLostError, StorageError
from rhei_lake.storage.clock import Clock
from rhei_lake.storage.lease import Lease

log = logging.getLogger("rhei_lake.lease")


class LeaseKeeper:
    """Renews a held lease in a daemon thread every ``ttl / 3`` seconds of ``clock`` (the lease's own by default)."""

    def __init__(self, lease: Lease, *, clock: Clock | None = None) -> None:
        self.lease = lease
        self.clock = clock if clock is not None else lease.clock
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rhei-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        interval = max(self.lease.ttl / 3, 0.05)
        while not self.clock.wait(self._stop, interval):
            try:
                self.lease.renew()
            except LeaseLostError as exc:
                self.error = exc
                log.error("%s", exc)
                return
            except StorageError as exc:  # transient: try again next round, the TTL leaves time
                log.warning("renewing the lake's lease failed (will retry): %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
