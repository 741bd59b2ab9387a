"""A clock tests move by hand, for the lease code's clock seam (``rhei_lake.storage.clock``).

``time()`` and ``monotonic()`` read one counter. ``advance(seconds)`` moves it
on, stopping at every deadline on the way in time order: a callback due then
(``call_at``) runs, a thread blocked in ``wait`` whose deadline it is wakes, and
the clock moves on only once that thread has finished its round (is waiting
again, or has ended). So what a lease keeper does at each deadline is done, in
order and exactly once per deadline, when ``advance`` returns. ``sleep`` is ``advance``: a sleeping thread is the one that
moves time on. Stopping a waiter (setting its event) needs no advance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

_ROUND_TIMEOUT = 10.0
"""Real seconds a woken thread may take for its round before advance() gives up (a hung test)."""
_POLL = 0.005


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._cond = threading.Condition()
        self._waiting: dict[threading.Thread, float] = {}
        self._due: set[threading.Thread] = set()
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self.sleeps: list[float] = []
        """Every pause asked of :meth:`sleep`, in order."""

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def call_at(self, when: float, action: Callable[[], object]) -> None:
        """Run ``action`` (in the advancing thread) when the clock passes ``when``."""
        self._timers.append((when, len(self._timers), action))
        self._timers.sort()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        me = threading.current_thread()
        with self._cond:
            self._due.discard(me)
            self._waiting[me] = self._now + timeout
            self._cond.notify_all()
            try:
                while not event.is_set():
                    if me in self._due:
                        return False
                    self._cond.wait(_POLL)
                return True
            finally:
                del self._waiting[me]

    @property
    def waiters(self) -> int:
        """How many threads are blocked in :meth:`wait`."""
        with self._cond:
            return len(self._waiting)

    def await_waiters(self, count: int) -> None:
        """Return once ``count`` threads are blocked in :meth:`wait` (a keeper just started is not yet)."""
        deadline = time.monotonic() + _ROUND_TIMEOUT
        with self._cond:
            while len(self._waiting) < count:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(self._waiting)} thread(s) wait on the fake clock, expected {count}")
                self._cond.wait(_POLL)

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds``, stopping at every deadline and timer on the way in time order;
        what was due by then has happened when this returns."""
        target = self._now + seconds
        while True:
            with self._cond:
                deadlines = [until for until in self._waiting.values() if until <= target]
            timer = self._timers[0][0] if self._timers and self._timers[0][0] <= target else None
            if timer is not None and (not deadlines or timer <= min(deadlines)):
                _, _, action = self._timers.pop(0)
                self._step_to(max(timer, self._now))
                action()
            elif deadlines:
                self._step_to(max(min(deadlines), self._now))
            else:
                break
        self._step_to(target)

    def _step_to(self, instant: float) -> None:
        deadline = time.monotonic() + _ROUND_TIMEOUT
        with self._cond:
            self._now = instant
            self._due |= {t for t, until in self._waiting.items() if until <= instant}
            self._cond.notify_all()
            while any(t.is_alive() for t in self._due):
                if time.monotonic() > deadline:
                    raise AssertionError("a thread woken by the fake clock did not finish its round")
                self._cond.wait(_POLL)
            self._due.clear()
