"""Work that must not delay a sync: folding hot-path tails into Delta, pruning the CDC log.

A sync returns once its events are committed (segments written, watermarks
recorded). Folding a tail into its Delta table (a 10-45 ms commit every few
dozen syncs) and deleting committed events from the SQLite log are needed for
the lake to stay lean, but not for anything a sync promises; doing them here,
in one background thread, keeps them out of sync latency. Jobs are keyed, so a
job already waiting is not queued twice; a failing job is logged, remembered
in :attr:`Housekeeper.last_error` and retried when it is next submitted.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rhei_lake.storage.changelog import Changelog

log = logging.getLogger("rhei_lake.sync")


class Housekeeper:
    """One daemon thread running keyed background jobs in submission order."""

    def __init__(self, name: str = "rhei-housekeeping") -> None:
        self.name = name
        self.last_error: BaseException | None = None
        self._jobs: OrderedDict[Hashable, Callable[[], object]] = OrderedDict()
        self._cond = threading.Condition()
        self._running = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, key: Hashable, job: Callable[[], object]) -> None:
        """Run ``job`` soon, unless a job with ``key`` is already waiting."""
        with self._cond:
            if self._closed or key in self._jobs:
                return
            self._jobs[key] = job
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closed:
                    self._cond.wait()
                if not self._jobs:
                    return
                key, job = self._jobs.popitem(last=False)
                self._running += 1
            try:
                job()
            except Exception as exc:  # a job's failure must not kill the thread
                self.last_error = exc
                log.warning("background %s failed (will retry): %s", key, exc)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is waiting or running; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._jobs and not self._running, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Finish the jobs already submitted, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)


def bound_tail(housekeeper: Housekeeper, name: str, changelog: Changelog) -> None:
    """Fold ``changelog``'s tail in the background once it is due; past twice the threshold, here and now.

    Called after each batch of a long catch-up (a first sync of millions of
    rows, a big CDC-log backlog), which would otherwise hold every segment in
    memory until the sync ends. (Not a wait for the housekeeper: its other
    jobs may need the SQLite write lock the caller holds.)
    """
    if not changelog.needs_flush:
        return
    if changelog.tail_rows >= 2 * changelog.flush_rows:
        changelog.flush()
    else:
        housekeeper.submit(("flush", name), changelog.flush)
