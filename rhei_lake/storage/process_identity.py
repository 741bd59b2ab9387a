"""Which process holds (or waits for) a lease, and whether it is known to have died.

A lease record and a waiter's ticket name the process that wrote them: host,
PID and PID namespace. On the same machine (same host and PID namespace) a
PID that no longer exists is a holder that crashed, so a process restarted
after a crash takes its lease over at once instead of waiting out the TTL. A
PID on another machine says nothing: only expiry frees that holder's lease.
The database binding (:mod:`rhei_lake.sync.binding`) names its holder the same way.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any


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
