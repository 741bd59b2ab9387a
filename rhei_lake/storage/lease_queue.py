"""The queue of processes waiting for a lease: a free lease goes to the one that waited longest.

A waiter keeps a ticket beside the lease records,
``queue/<since>-<owner>-<expires>.json`` (µs of its clock; the body names its
process), and refreshes it at every poll: a ticket not refreshed for
:data:`TICKET_TTL` seconds lapses, and one whose waiter died on this machine
is dropped at once. The lease reads the tickets in the same listing as its
records and lets a process take a free lease only if no fresh ticket of
another waiter is older than its own. Without the queue, a holder that lets
go and at once asks again would win every time against a waiter polling with
backoff.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from rhei_lake.errors import StorageError
from rhei_lake.storage.blobs import BlobStore
from rhei_lake.storage.clock import Clock
from rhei_lake.storage.process_identity import ProcessId

log = logging.getLogger("rhei_lake.lease")

QUEUE_DIR = "queue/"
"""Where the tickets live, under a lease's prefix."""
TICKET_TTL = 5.0
"""Seconds a waiter's ticket counts without a refresh (it refreshes at every poll, at most 1 s apart)."""


@dataclass(frozen=True)
class Ticket:
    """A waiter's place in the queue: who, since when, counted until when (µs of its clock)."""

    since: int
    owner: str
    expires: int

    def key(self, prefix: str) -> str:
        return f"{prefix}{QUEUE_DIR}{self.since:020d}-{self.owner}-{self.expires:020d}.json"

    @classmethod
    def parse(cls, name: str) -> Ticket | None:
        parts = name.removesuffix(".json").split("-")
        if len(parts) != 3 or not (parts[0].isdigit() and parts[2].isdigit()):
            return None
        return cls(int(parts[0]), parts[1], int(parts[2]))


def ticket_named(name: str) -> Ticket | None:
    """The ticket a key under a lease's prefix names, or ``None`` if it is not one."""
    return Ticket.parse(name[len(QUEUE_DIR) :]) if name.startswith(QUEUE_DIR) else None


class LeaseQueue:
    """The waiters' queue of the lease at ``prefix``, as seen by one waiter (``owner``, running as ``process``)."""

    def __init__(self, blobs: BlobStore, prefix: str, owner: str, process: ProcessId, clock: Clock) -> None:
        self.blobs = blobs
        self.prefix = prefix
        self.owner = owner
        self.process = process
        self.clock = clock
        self.ticket: Ticket | None = None

    def ahead_of_me(self, tickets: list[Ticket], now: float) -> int:
        """How many fresh tickets of other waiters come before this process's (all of them if it has none)."""
        now_us = int(now * 1e6)
        mine = (self.ticket.since, self.owner) if self.ticket else None
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

    def join(self) -> None:
        """Take (or refresh) this process's place in the queue; a ticket lapses unless refreshed."""
        now_us = int(self.clock.time() * 1e6)
        old = self.ticket
        ticket = Ticket(old.since if old else now_us, self.owner, now_us + int(TICKET_TTL * 1e6))
        self.blobs.put(ticket.key(self.prefix), json.dumps(self.process.as_dict()).encode())
        self.ticket = ticket
        if old is not None:
            self._delete_quietly(old.key(self.prefix))

    def leave(self) -> None:
        """Give up this process's place (it took the lease, or stopped waiting)."""
        if self.ticket is not None:
            self._delete_quietly(self.ticket.key(self.prefix))
            self.ticket = None

    def _delete_quietly(self, key: str) -> None:
        try:
            self.blobs.delete([key])
        except StorageError as exc:  # garbage only: a stale ticket lapses on its own
            log.debug("could not delete lease queue ticket: %s", exc)
