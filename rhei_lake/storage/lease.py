"""A writer lease on a lake: one syncing process at a time, with expiry.

The lease lives beside the tables as a sequence of small records,
``_rhei/leases/<name>/<epoch>.json``, each created with put-if-absent. Of two
processes that try to create the same epoch exactly one succeeds, so taking
the lease is atomic on every tier (a hard link locally, ``If-None-Match`` on
S3). The newest record says who holds the lease and until when:

* a holder renews by creating the next epoch for itself, well before expiry;
* anyone may take an expired (or released) lease by creating the next epoch;
* a holder that finds a newer epoch it did not write has lost the lease.

Waiting is fair: a process that waits for the lease joins a queue of tickets
beside the records (``queue/<since>-<owner>-<expires>.json``, refreshed while
it waits, read in the same listing as the records). A free lease goes to the
oldest fresh ticket; everyone else defers to it, including a holder that lets
go and at once asks again, which would otherwise win every time against a
waiter polling with backoff. A ticket whose waiter died on this machine is
dropped at once, like a dead holder's lease.

Expiry compares wall clocks of different machines: keep them in sync (NTP) and
the TTL well above their skew (the default is 30 s). A holder that died on this
very machine (same host and PID namespace, its PID gone) is not waited for: a
process restarted after a crash takes the lease over at once.

The lease gives a second writer a clear refusal; correctness never depends on
it. Every commit is conditional (watermarks, put-if-absent segments), so even
two processes that both believe they hold the lease cannot commit an event
twice or lose one.
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
from typing import Any

from rhei_lake.errors import CommitConflictError, LeaseHeldError, LeaseLostError, StorageError
from rhei_lake.storage.blobs import BlobStore

log = logging.getLogger("rhei_lake.lease")

DEFAULT_TTL = 30.0
LEASE_DIR = "_rhei/leases"
_KEEP_EPOCHS = 3
_QUEUE = "queue/"
_TICKET_TTL = 5.0
"""Seconds a waiter's ticket counts without a refresh (it refreshes at every poll, at most 1 s apart)."""
_MAX_POLL = 1.0


@dataclass(frozen=True)
class ProcessId:
    """Where a holder runs: enough to tell, on the same machine, that it has died."""

    host: str
    pid: int
    pid_namespace: int | None

    @classmethod
    def current(cls) -> ProcessId:
        try:
            namespace: int | None = os.stat("/proc/self/ns/pid").st_ino
        except OSError:  # not Linux: no quick takeover, the TTL still applies
            namespace = None
        return cls(socket.gethostname(), os.getpid(), namespace)

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "pid_namespace": self.pid_namespace}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProcessId | None:
        """The process a record names, or ``None`` if it names none (or an unreadable one)."""
        try:
            if "pid" not in raw or "host" not in raw:
                return None
            ns = raw.get("pid_namespace")
            return cls(str(raw["host"]), int(raw["pid"]), int(ns) if ns is not None else None)
        except (TypeError, ValueError):
            return None

    def is_dead_here(self, here: ProcessId) -> bool:
        """Whether this process is known dead: it ran on ``here``'s machine and its PID is gone."""
        if self.pid_namespace is None or (self.host, self.pid_namespace) != (here.host, here.pid_namespace):
            return False
        if self.pid == here.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, owned by someone else
            return False
        return False


@dataclass(frozen=True)
class LeaseRecord:
    epoch: int
    owner: str
    holder: str
    expires_at: float
    released: bool = False
    process: ProcessId | None = None

    def to_json(self) -> bytes:
        raw: dict = {"owner": self.owner, "holder": self.holder, "expires_at": self.expires_at, "released": self.released}
        if self.process is not None:
            raw.update(self.process.as_dict())
        return json.dumps(raw).encode()

    @classmethod
    def from_json(cls, epoch: int, data: bytes) -> LeaseRecord:
        try:
            raw = json.loads(data)
            return cls(epoch, str(raw["owner"]), str(raw.get("holder", "?")), float(raw["expires_at"]),
                       bool(raw.get("released", False)), ProcessId.from_dict(raw))
        except (ValueError, KeyError, TypeError):
            # An unreadable record cannot be honoured; treat it as expired so the lake is not stuck.
            return cls(epoch, "?", "unreadable lease record", 0.0, True)


@dataclass(frozen=True)
class Ticket:
    """A waiter's place in the queue: who, since when, counted until when (µs of its clock)."""

    since: int
    owner: str
    expires: int

    def key(self, prefix: str) -> str:
        return f"{prefix}{_QUEUE}{self.since:020d}-{self.owner}-{self.expires:020d}.json"

    @classmethod
    def parse(cls, name: str) -> Ticket | None:
        parts = name.removesuffix(".json").split("-")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[2].isdigit()):
            return None
        return cls(int(parts[0]), parts[1], int(parts[2]))


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
        self._ticket: Ticket | None = None
        self._lock = threading.Lock()

    def _listing(self) -> tuple[list[int], list[Ticket]]:
        """The record epochs and the queue's tickets, from one listing."""
        epochs, tickets = [], []
        for info in self.blobs.list(self.prefix):
            name = info.key[len(self.prefix) :]
            stem = name.removesuffix(".json")
            if stem.isdigit():
                epochs.append(int(stem))
            elif name.startswith(_QUEUE) and (ticket := Ticket.parse(name[len(_QUEUE) :])) is not None:
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
        expires = 0.0 if released else self.clock() + self.ttl
        record = LeaseRecord(epoch, self.owner, self.holder, expires, released, self.process)
        self.blobs.put_if_absent(f"{self.prefix}{epoch:020d}.json", record.to_json())
        return record

    def acquire(self) -> LeaseRecord:
        """Take the lease, or raise :class:`LeaseHeldError` naming who holds it (or who waits first)."""
        with self._lock:
            epochs, tickets = self._listing()
            latest = self._newest(epochs)
            now = self.clock()
            held = latest is not None and latest.owner != self.owner and not latest.released and latest.expires_at > now
            if held and latest.process is not None and latest.process.is_dead_here(self.process):
                log.info("taking over the lake's lease from %s, which is no longer running", latest.holder)
                held = False
            if held:
                raise LeaseHeldError(
                    f"the lake is being written by another process ({latest.holder}); its lease expires in "
                    f"{latest.expires_at - now:.0f}s unless renewed. Stop that process, or wait for it"
                )
            ahead = self._ahead_of_me(tickets, now)
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
            self._leave_queue()
            return record

    def _ahead_of_me(self, tickets: list[Ticket], now: float) -> int:
        """How many fresh tickets of other waiters come before this process's (all of them if it has none)."""
        now_us = int(now * 1e6)
        mine = (self._ticket.since, self.owner) if self._ticket else None
        ahead = 0
        for t in tickets:
            if t.owner == self.owner or t.expires <= now_us or (mine is not None and (t.since, t.owner) >= mine):
                continue
            if not self._waiter_died_here(t):
                ahead += 1
        return ahead

    def _waiter_died_here(self, ticket: Ticket) -> bool:
        """Whether ``ticket``'s waiter is known dead (see :class:`ProcessId`); its ticket is then removed
        rather than honoured until it lapses, so a process restarted after a crash is not queued behind it."""
        key = ticket.key(self.prefix)
        try:
            process = ProcessId.from_dict(json.loads(self.blobs.get(key) or b"{}"))
        except ValueError:
            process = None
        if process is None or not process.is_dead_here(self.process):
            return False
        self._delete_quietly(key)
        return True

    def join_queue(self) -> None:
        """Take (or refresh) this process's place in the queue of waiters; a ticket lapses unless refreshed."""
        now_us = int(self.clock() * 1e6)
        old = self._ticket
        ticket = Ticket(old.since if old else now_us, self.owner, now_us + int(_TICKET_TTL * 1e6))
        self.blobs.put(ticket.key(self.prefix), json.dumps(self.process.as_dict()).encode())
        self._ticket = ticket
        if old is not None:
            self._delete_quietly(old.key(self.prefix))

    def _leave_queue(self) -> None:
        if self._ticket is not None:
            self._delete_quietly(self._ticket.key(self.prefix))
            self._ticket = None

    def leave_queue(self) -> None:
        """Give up this process's place in the queue (it stopped waiting)."""
        with self._lock:
            self._leave_queue()

    def acquire_within(self, wait: float) -> LeaseRecord:
        """Take the lease, waiting in the queue up to ``wait`` seconds; the last :class:`LeaseHeldError` after.

        Transient storage errors are retried within the same deadline.
        """
        deadline = time.monotonic() + wait
        pause = 0.05
        try:
            while True:
                try:
                    return self.acquire()
                except (LeaseHeldError, StorageError) as exc:
                    transient = isinstance(exc, LeaseHeldError) or exc.transient
                    remaining = deadline - time.monotonic()
                    if not transient or remaining <= 0:
                        raise
                try:
                    self.join_queue()
                except StorageError as exc:  # a missed refresh only costs this waiter its turn
                    log.debug("could not refresh the lease queue ticket: %s", exc)
                time.sleep(min(pause, remaining))
                pause = min(pause * 2, _MAX_POLL)
        finally:
            self.leave_queue()

    def _delete_quietly(self, key: str) -> None:
        try:
            self.blobs.delete([key])
        except StorageError as exc:  # garbage only: a stale ticket lapses on its own
            log.debug("could not delete lease queue ticket: %s", exc)

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


class WriterLease:
    """The lease a syncing lake holds from ``open()`` to ``close()``: taken, kept renewed, checked, released."""

    def __init__(self, blobs: BlobStore, *, ttl: float = DEFAULT_TTL, wait: float = 0.0) -> None:
        self.lease = Lease(blobs, ttl=ttl)
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
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None
        self.lease.release()
