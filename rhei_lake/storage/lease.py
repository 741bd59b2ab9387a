"""A lease on a lake: one holder at a time, with expiry.

The lease lives beside the tables as a sequence of small records,
``_rhei/leases/<name>/<epoch>.json``, each created with put-if-absent. Of two
processes that try to create the same epoch exactly one succeeds, so taking
the lease is atomic on every tier (a hard link locally, ``If-None-Match`` on
S3). The newest record says who holds the lease and until when:

* a holder renews by creating the next epoch for itself, well before expiry;
* anyone may take an expired (or released) lease by creating the next epoch;
* a holder that finds a newer epoch it did not write has lost the lease.

Waiting is fair: a process that waits for the lease joins a queue of tickets
beside the records (:mod:`rhei_lake.storage.lease_queue`), and a free lease
goes to the oldest fresh ticket.

Expiry compares wall clocks of different machines: keep them in sync (NTP) and
the TTL well above their skew (the default is 30 s). A holder that died on this
very machine (:mod:`rhei_lake.storage.process_identity`) is not waited for: a
process restarted after a crash takes the lease over at once.

The lease gives a second writer a clear refusal; correctness never depends on
it. Every commit is conditional (watermarks, put-if-absent segments), so even
two processes that both believe they hold the lease cannot commit an event
twice or lose one. :class:`~rhei_lake.storage.lease_keeper.LeaseKeeper` renews
a held lease in the background; :class:`~rhei_lake.storage.writer_lease.WriterLease`
is the one a syncing lake holds.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass

from rhei_lake.errors import CommitConflictError, LeaseHeldError, LeaseLostError, StorageError
from rhei_lake.storage.blobs import BlobStore
from rhei_lake.storage.clock import SYSTEM_CLOCK, Clock
from rhei_lake.storage.lease_queue import LeaseQueue, Ticket, ticket_named
from rhei_lake.storage.process_identity import ProcessId

log = logging.getLogger("rhei_lake.lease")

DEFAULT_TTL = 30.0
LEASE_DIR = "_rhei/leases"
_KEEP_EPOCHS = 3
_MAX_POLL = 1.0


@dataclass(frozen=True)
class LeaseRecord:
    epoch: int
    owner: str
    holder: str
    expires_at: float
    released: bool = False
    process: ProcessId | None = None

    def to_json(self) -> bytes:
        raw: dict = {
            "owner": self.owner,
            "holder": self.holder,
            "expires_at": self.expires_at,
            "released": self.released,
        }
        if self.process is not None:
            raw.update(self.process.as_dict())
        return json.dumps(raw).encode()

    @classmethod
    def from_json(cls, epoch: int, data: bytes) -> LeaseRecord:
        try:
            raw = json.loads(data)
            return cls(
                epoch,
                str(raw["owner"]),
                str(raw.get("holder", "?")),
                float(raw["expires_at"]),
                bool(raw.get("released", False)),
                ProcessId.from_dict(raw),
            )
        except (ValueError, KeyError, TypeError):
            # An unreadable record cannot be honoured; treat it as expired so the lake is not stuck.
            return cls(epoch, "?", "unreadable lease record", 0.0, True)


class Lease:
    """The lease ``name`` of a lake, as seen by one process (``owner``); ``clock`` says when it expires."""

    def __init__(
        self,
        blobs: BlobStore,
        name: str = "writer",
        *,
        ttl: float = DEFAULT_TTL,
        clock: Clock = SYSTEM_CLOCK,
        holder: str | None = None,
        process: ProcessId | None = None,
    ) -> None:
        self.blobs = blobs
        self.prefix = f"{LEASE_DIR}/{name}/"
        self.ttl = ttl
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self.process = process or ProcessId.current()
        self.holder = holder or f"{self.process.host} pid {self.process.pid}"
        self.epoch: int | None = None
        self.expires_at = 0.0
        self._queue = LeaseQueue(blobs, self.prefix, self.owner, self.process, clock)
        self._lock = threading.Lock()

    def _listing(self) -> tuple[list[int], list[Ticket]]:
        """The record epochs and the queue's tickets, from one listing."""
        epochs, tickets = [], []
        for info in self.blobs.list(self.prefix):
            name = info.key[len(self.prefix) :]
            stem = name.removesuffix(".json")
            if stem.isdigit():
                epochs.append(int(stem))
            elif (ticket := ticket_named(name)) is not None:
                tickets.append(ticket)
        return sorted(epochs), tickets

    def _epochs(self) -> list[int]:
        return self._listing()[0]

    def current(self) -> LeaseRecord | None:
        """The newest lease record, or ``None`` if the lease was never taken."""
        return self._newest(self._epochs())

    def _newest(self, epochs: list[int]) -> LeaseRecord | None:
        for epoch in reversed(epochs):
            data = self.blobs.get(f"{self.prefix}{epoch:020d}.json")
            if data is not None:
                return LeaseRecord.from_json(epoch, data)
        return None

    def _write(self, epoch: int, *, released: bool = False) -> LeaseRecord:
        expires = 0.0 if released else self.clock.time() + self.ttl
        record = LeaseRecord(epoch, self.owner, self.holder, expires, released, self.process)
        self.blobs.put_if_absent(f"{self.prefix}{epoch:020d}.json", record.to_json())
        return record

    def acquire(self) -> LeaseRecord:
        """Take the lease, or raise :class:`LeaseHeldError` naming who holds it (or who waits first)."""
        with self._lock:
            epochs, tickets = self._listing()
            latest = self._newest(epochs)
            now = self.clock.time()
            held = None
            if latest is not None and latest.owner != self.owner and not latest.released and latest.expires_at > now:
                held = latest
            if held is not None and held.process is not None and held.process.is_dead_here(self.process):
                log.info("taking over the lake's lease from %s, which is no longer running", held.holder)
                held = None
            if held is not None:
                raise LeaseHeldError(
                    f"the lake is being written by another process ({held.holder}); its lease expires in "
                    f"{held.expires_at - now:.0f}s unless renewed. Stop that process, or wait for it"
                )
            ahead = self._queue.ahead_of_me(tickets, now)
            if ahead:
                raise LeaseHeldError(
                    f"the lease is free but {ahead} other process(es) waited for it first and take their turn before"
                    " this one"
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
            self._queue.leave()
            return record

    def join_queue(self) -> None:
        """Take (or refresh) this process's place in the queue of waiters; a ticket lapses unless refreshed."""
        self._queue.join()

    def leave_queue(self) -> None:
        """Give up this process's place in the queue (it stopped waiting)."""
        with self._lock:
            self._queue.leave()

    def acquire_within(self, wait: float) -> LeaseRecord:
        """Take the lease, waiting in the queue up to ``wait`` seconds; the last :class:`LeaseHeldError` after.

        Transient storage errors are retried within the same deadline.
        """
        deadline = self.clock.monotonic() + wait
        pause = 0.05
        try:
            while True:
                try:
                    return self.acquire()
                except (LeaseHeldError, StorageError) as exc:
                    transient = isinstance(exc, LeaseHeldError) or exc.transient
                    remaining = deadline - self.clock.monotonic()
                    if not transient or remaining <= 0:
                        raise
                try:
                    self.join_queue()
                except StorageError as exc:  # a missed refresh only costs this waiter its turn
                    log.debug("could not refresh the lease queue ticket: %s", exc)
                self.clock.sleep(min(pause, remaining))
                pause = min(pause * 2, _MAX_POLL)
        finally:
            self.leave_queue()

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
        if self.epoch is None or self.clock.time() >= self.expires_at:
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
