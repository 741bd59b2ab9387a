"""The background sync loop: one named daemon thread running sync cycles at an interval.

Failure policy (the loop never dies silently; every failure is in ``sync_status()``):

* A **transient** error (``RheiError.transient``: the store or the source is
  unreachable, a commit conflict) is retried with exponential backoff and
  jitter: about ``interval`` after the first failure, doubling up to
  ``max_backoff``, each delay drawn from ``[d/2, d]`` so several processes do
  not retry in lockstep. The first successful cycle resets the backoff.
* A **terminal** error (a value that does not fit its type, a watermark that
  contradicts the source, a bug) stops the loop: retrying cannot help, and a
  loop that spins on it would only hide it. The error stays in the status, is
  logged, and :meth:`~rhei_lake.Lake.start_sync` starts the loop again once the
  cause is fixed. Captured changes wait safely in the CDC log meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from rhei_lake.errors import RheiError

log = logging.getLogger("rhei_lake.sync")

LoopState = Literal["stopped", "running", "backing_off", "failed"]
DEFAULT_MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Backoff:
    """Delays between failed cycles: ``base * 2**(n-1)`` capped at ``maximum``, jittered to ``[d/2, d]``."""

    base: float
    maximum: float = DEFAULT_MAX_BACKOFF

    def delay(self, failures: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.base * 2 ** min(max(failures - 1, 0), 30))
        return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(frozen=True)
class ErrorInfo:
    """A failure as the status reports it."""

    kind: str
    message: str
    transient: bool
    at: datetime

    @classmethod
    def of(cls, exc: BaseException, at: datetime | None = None) -> ErrorInfo:
        return cls(
            kind=type(exc).__name__,
            message=str(exc),
            transient=bool(getattr(exc, "transient", False)),
            at=at or datetime.now(UTC),
        )

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class LoopStatus:
    """The background sync loop: ``stopped``, ``running``, ``backing_off`` (retrying) or ``failed``."""

    state: LoopState
    interval: float | None
    cycles: int
    consecutive_failures: int
    next_attempt_in: float | None
    last_error: ErrorInfo | None

    @property
    def running(self) -> bool:
        return self.state in ("running", "backing_off")


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RheiError) and exc.transient


def summary(exc: BaseException, limit: int = 400) -> str:
    """The first line of an error, for logs repeated on every retry (native errors can span pages)."""
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SyncLoop:
    """Runs ``cycle()`` every ``interval`` seconds in a daemon thread until stopped."""

    def __init__(
        self,
        cycle: Callable[[], object],
        interval: float,
        *,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        name: str = "rhei-sync",
        rng: random.Random | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError("interval must be positive")
        self._cycle = cycle
        self.interval = interval
        self.backoff = Backoff(base=interval, maximum=max(max_backoff, interval))
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._state: LoopState = "stopped"
        self._cycles = 0
        self._failures = 0
        self._next_attempt: float | None = None
        self._error: ErrorInfo | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        with self._lock:
            self._state = "running"
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to stop and wait for the cycle in progress to finish."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> LoopStatus:
        with self._lock:
            wait = None
            if self._state == "backing_off" and self._next_attempt is not None:
                wait = max(0.0, self._next_attempt - time.monotonic())
            return LoopStatus(self._state, self.interval, self._cycles, self._failures, wait, self._error)

    # -- the thread ----------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self._cycle()
                except Exception as exc:  # noqa: BLE001 - every failure is classified and kept
                    if not self._failed(exc):
                        return
                    continue
                with self._lock:
                    self._cycles += 1
                    self._failures = 0
                    self._error = None
                    self._state = "running"
                    self._next_attempt = None
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        except BaseException as exc:  # pragma: no cover - interpreter shutdown and the like
            with self._lock:
                self._state, self._error = "failed", ErrorInfo.of(exc)
            log.exception("the sync loop stopped unexpectedly")
            raise
        finally:
            with self._lock:
                if self._state != "failed":
                    self._state = "stopped"
                self._next_attempt = None

    def _failed(self, exc: Exception) -> bool:
        """Record a failed cycle; wait out the backoff. Returns whether to go on."""
        if not is_transient(exc):
            log.error(
                "sync loop stopped on a terminal error (fix it, then call start_sync()): %s",
                summary(exc),
                exc_info=not isinstance(exc, RheiError),
            )
        with self._lock:
            self._cycles += 1
            self._failures += 1
            self._error = ErrorInfo.of(exc)
            if not is_transient(exc):
                self._state = "failed"
                return False
        delay = self.backoff.delay(self._failures, self._rng)
        with self._lock:
            self._state = "backing_off"
            self._next_attempt = time.monotonic() + delay
        log.warning("sync failed (attempt %d), retrying in %.2fs: %s", self._failures, delay, summary(exc))
        return not self._stop.wait(delay)
