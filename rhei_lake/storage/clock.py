"""The clock the lease code reads, as a seam tests can replace.

Leases read three kinds of time: wall-clock seconds for expiry (compared
between machines, so it must be the epoch clock), monotonic seconds for how
long a waiter has waited (immune to the wall clock being stepped), and pauses
(a waiter's backoff, a keeper's interval). :class:`SystemClock` is the real
one and every lease class defaults to it; a test passes a clock it moves by
hand, so expiry and renewal happen at exact instants without sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the lease code gets the time and how it waits."""

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (lease expiry, compared across machines)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never go back (deadlines within this process)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Pause the calling thread for ``seconds``."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until ``event`` is set or ``timeout`` seconds have passed; whether it was set."""
        ...


class SystemClock:
    """The real clock: :func:`time.time`, :func:`time.monotonic`, :func:`time.sleep`, :meth:`threading.Event.wait`."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


SYSTEM_CLOCK: Clock = SystemClock()
