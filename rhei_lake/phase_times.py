"""Where the time of one long operation went, phase by phase (a snapshot, a sidecar's first sync).

The phases of a streamed operation overlap (a reader process reads while the
parent writes), so each phase counts the time the calling thread spent in it;
:meth:`PhaseTimes.timed` attributes the time spent pulling from an iterator to
one phase, and :meth:`PhaseTimes.around` subtracts what nested phases took from
an enclosing call (the Delta write minus the stream it pulled).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class PhaseTimes:
    """Seconds per named phase, in the order the phases were first seen."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._own = 0.0  # seconds of the phases the calling threads spent themselves

    def add(self, phase: str, seconds: float, *, elsewhere: bool = False) -> None:
        """Count ``seconds`` as ``phase``; ``elsewhere``: spent by another thread or process, alongside."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        if not elsewhere:
            self._own += seconds

    def merge(self, other: PhaseTimes, *, elsewhere: bool = False) -> None:
        """Add ``other``'s phases (``elsewhere``: they ran alongside this one's, in another thread)."""
        for phase, seconds in other.seconds.items():
            self.add(phase, seconds, elsewhere=elsewhere)

    @contextmanager
    def measure(self, phase: str) -> Iterator[None]:
        """Time the ``with`` block as ``phase``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - started)

    @contextmanager
    def around(self, phase: str) -> Iterator[None]:
        """Time the ``with`` block as ``phase``, less the time other phases recorded inside it."""
        inner_before = self._own
        started = time.perf_counter()
        try:
            yield
        finally:
            inner = self._own - inner_before
            self.add(phase, max(0.0, time.perf_counter() - started - inner))

    def timed(self, phase: str, items: Iterable[T]) -> Iterator[T]:
        """``items``, with the time spent producing each one counted as ``phase``."""
        iterator = iter(items)
        while True:
            started = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.add(phase, time.perf_counter() - started)
                return
            self.add(phase, time.perf_counter() - started)
            yield item

    def rounded(self) -> dict[str, float]:
        """The phases in milliseconds' precision (for logs and reports)."""
        return {phase: round(seconds, 4) for phase, seconds in self.seconds.items()}

    def __str__(self) -> str:
        return ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in self.seconds.items())
