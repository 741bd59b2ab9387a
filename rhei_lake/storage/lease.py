"""A writer lease on a lake: one syncing process at a time, with expiry.

The lease lives beside the tables as a sequence of small records,
``_rhei/leases/<name>/<epoch>.json``, each created with put-if-absent. Of two
processes that try to create the same epoch exactly one succeeds, so taking
the lease is atomic on every tier (a hard link locally, ``If-None-Match`` on
S3). The newest record says who holds the lease and until when:

* a holder renews by creating the next epoch for itself, well before expiry;
* anyone may take an expired (or released) lease by creating the next epoch;
* a holder that finds a newer epoch it did not write has lost the lease.

Expiry compares wall clocks of different machines: keep them in sync (NTP) and
the TTL well above their skew (the default is 30 s).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rhei_lake.errors import CommitConflictError, LeaseHeldError, LeaseLostError, StorageError
from rhei_lake.storage.blobs import BlobStore

log = logging.getLogger("rhei_lake.lease")

DEFAULT_TTL = 30.0
LEASE_DIR = "_rhei/leases"
_KEEP_EPOCHS = 3


@dataclass(frozen=True)
class LeaseRecord:
    epoch: int
    owner: str
    holder: str
    expires_at: float
    released: bool = False

    def to_json(self) -> bytes:
        return json.dumps(
            {"owner": self.owner, "holder": self.holder, "expires_at": self.expires_at, "released": self.released}
        ).encode()

    @classmethod
    def from_json(cls, epoch: int, data: bytes) -> LeaseRecord:
        try:
            raw = json.loads(data)
            return cls(epoch, str(raw["owner"]), str(raw.get("holder", "?")), float(raw["expires_at"]),
                       bool(raw.get("released", False)))
        except (ValueError, KeyError, TypeError):
            # An unreadable record cannot be honoured; treat it as expired so the lake is not stuck.
            return cls(epoch, "?", "unreadable lease record", 0.0, True)


class Lease:
    """The writer lease ``name`` of a lake, as seen by one process (``owner``)."""

    def __init__(
        self,
        blobs: BlobStore,
        name: str = "writer",
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
    ) -> None:
        self.blobs = blobs
        self.prefix = f"{LEASE_DIR}/{name}/"
        self.ttl = ttl
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self.holder = holder or f"{socket.gethostname()} pid {os.getpid()}"
        self.epoch: int | None = None
        self.expires_at = 0.0
        self._lock = threading.Lock()

    def _epochs(self) -> list[int]:
        out = []
        for info in self.blobs.list(self.prefix):
            stem = info.key[len(self.prefix) :].removesuffix(".json")
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def current(self) -> LeaseRecord | None:
        """The newest lease record, or ``None`` if the lease was never taken."""
        for epoch in reversed(self._epochs()):
            data = self.blobs.get(f"{self.prefix}{epoch:020d}.json")
            if data is not None:
                return LeaseRecord.from_json(epoch, data)
        return None

    def _write(self, epoch: int, *, released: bool = False) -> LeaseRecord:
        expires = 0.0 if released else self.clock() + self.ttl
        record = LeaseRecord(epoch, self.owner, self.holder, expires, released)
        self.blobs.put_if_absent(f"{self.prefix}{epoch:020d}.json", record.to_json())
        return record

    def acquire(self) -> LeaseRecord:
        """Take the lease, or raise :class:`LeaseHeldError` naming who holds it."""
        with self._lock:
            latest = self.current()
            now = self.clock()
            if latest is not None and latest.owner != self.owner and not latest.released and latest.expires_at > now:
                raise LeaseHeldError(
                    f"the lake is being written by another process ({latest.holder}); its lease expires in "
                    f"{latest.expires_at - now:.0f}s unless renewed. Stop that process, or wait for it"
                )
            epoch = (latest.epoch if latest else 0) + 1
            try:
                record = self._write(epoch)
            except CommitConflictError:
                winner = self.current()
                raise LeaseHeldError(
                    f"another process ({winner.holder if winner else 'unknown'}) took the lake's lease just now"
                ) from None
            self.epoch, self.expires_at = record.epoch, record.expires_at
            self._prune(record.epoch)
            return record

    def renew(self) -> LeaseRecord:
        """Extend the lease; :class:`LeaseLostError` if another process took it."""
        with self._lock:
            if self.epoch is None:
                raise LeaseLostError("renew() before acquire()")
            latest = self.current()
            if latest is None or latest.owner != self.owner:
                holder = latest.holder if latest else "nobody"
                self.epoch = None
                raise LeaseLostError(f"the lake's lease was taken over by {holder}; stop writing")
            try:
                record = self._write(latest.epoch + 1)
            except CommitConflictError:
                self.epoch = None
                raise LeaseLostError("the lake's lease was taken over while renewing; stop writing") from None
            self.epoch, self.expires_at = record.epoch, record.expires_at
            self._prune(record.epoch)
            return record

    def check(self) -> None:
        """Raise :class:`LeaseLostError` unless this process still holds an unexpired lease."""
        if self.epoch is None or self.clock() >= self.expires_at:
            raise LeaseLostError("this process no longer holds the lake's lease")

    def release(self) -> None:
        """Give the lease up so another process can take it at once."""
        with self._lock:
            if self.epoch is None:
                return
            try:
                latest = self.current()
                if latest is not None and latest.owner == self.owner:
                    self._write(latest.epoch + 1, released=True)
            except (CommitConflictError, StorageError) as exc:
                log.warning("could not release the lake's lease cleanly: %s", exc)
            finally:
                self.epoch = None

    def _prune(self, newest: int) -> None:
        try:
            old = [f"{self.prefix}{e:020d}.json" for e in self._epochs() if e <= newest - _KEEP_EPOCHS]
            self.blobs.delete(old)
        except StorageError as exc:  # garbage only: never fail the caller for it
            log.debug("lease pruning failed: %s", exc)


class LeaseKeeper:
    """Renews a held lease in a daemon thread every ``ttl / 3`` seconds."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rhei-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        interval = max(self.lease.ttl / 3, 0.05)
        while not self._stop.wait(interval):
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
