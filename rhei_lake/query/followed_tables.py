"""The tables of a lake that another process syncs, followed cheaply.

A read-only lake (``open(storage=...)``) loads every table once, concurrently.
After that it looks at the store again only for the tables a query reads, and
only when its last look at a table started more than ``refresh_interval``
seconds ago. A look with nothing new costs one request whatever the table's
history: the tail segment extending the watermark. When a segment arrives the
change feed's next commit is looked at too (one more), then only what is new is
read (see :meth:`Changelog.poll`). The Delta tables themselves (the change feed
and the derived ``history``/``current``) are looked at less often: when a
segment arrived, every :data:`DERIVED_EVERY` intervals, and when the last look
is old, since a flush or a compaction reorganises the events but changes no
result (an initial snapshot, which does, leaves a bridge segment). When the
change feed's table moved, the derived table is looked at in the same look,
then the feed again until it stands still: a compaction may have expired events
from the feed that it folded into the derived table, and the two together must
be one state. So the rule a reader can rely on:

    A query that starts ``refresh_interval`` seconds or more after another
    process's ``sync_now()`` returned sees that sync; :meth:`refresh` (or
    ``refresh_interval=0``) makes it see everything committed before it.

A query naming a table the lake does not know makes it list the store's
tables again (at most once per interval) to find tables created meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor

from rhei_lake.catalog import TableSpec
from rhei_lake.compaction.derived import DerivedTables
from rhei_lake.config import DEFAULT_REMOTE_REFRESH_INTERVAL, LakeConfig
from rhei_lake.query.references import parts_named
from rhei_lake.storage.changelog import Changelog
from rhei_lake.storage.lake_storage import LakeStorage
from rhei_lake.storage.recorded_spec import read_spec

_THREADS = 8
"""Tables opened or looked at concurrently: each look is a round trip or two on S3."""

DERIVED_EVERY = 10
"""A table's derived table is looked at every this many refresh intervals, or when its change feed moved."""

_FEED_ATTEMPTS = 5
"""Looks at a table's derived table and change feed in a row, until the feed stands still over one."""


def concurrently(work: Callable[[str], object], names: Collection[str]) -> None:
    """Run ``work(name)`` for every name, several at a time; the first error is raised."""
    names = list(names)
    if len(names) <= 1:
        for name in names:
            work(name)
        return
    with ThreadPoolExecutor(max_workers=min(_THREADS, len(names)), thread_name_prefix="rhei-look") as pool:
        for _ in pool.map(work, names):
            pass


def refresh_interval(config: LakeConfig, storage: LakeStorage) -> float:
    """The configured ``refresh_interval``, or by default 0 where a look is cheap and 0.5 s on S3."""
    if config.refresh_interval is not None:
        return config.refresh_interval
    return DEFAULT_REMOTE_REFRESH_INTERVAL if storage.location.scheme == "s3" else 0.0


class FollowedTables:
    """The spec and changelog of each table of a read-only lake, looked at again when due.

    ``tables`` is the mapping this object keeps up to date (the lake's own);
    ``ready(spec, changelog)`` says whether a table found in the store is one
    yet (default: every table is).
    """

    def __init__(
        self,
        storage: LakeStorage,
        config: LakeConfig,
        derived: DerivedTables,
        tables: dict[str, tuple[TableSpec, Changelog]],
        *,
        ready: Callable[[TableSpec, Changelog], bool] | None = None,
    ) -> None:
        self.storage = storage
        self.ready = ready
        self.waiting: set[str] = set()
        """Tables in the store that ``ready`` refuses (their registration has not finished): not in ``tables``,
        loaded again at each :meth:`discover` until they are."""
        self.config = config
        self.interval = refresh_interval(config, storage)
        self.tables = tables
        self._derived = derived
        self._looked: dict[str, float] = {}  # when the last look at a table started (monotonic)
        self._derived_looked: dict[str, float] = {}
        self._listed = float("-inf")
        self._lock = threading.Lock()  # one look at a time: a query arriving meanwhile waits for its result

    # -- loading ---------------------------------------------------------
    def discover(self) -> None:
        """Load every table in the store that is not loaded yet (all of them at open)."""
        started = time.monotonic()
        found = self.storage.list_tables(known=self.tables.keys())
        self._listed = started
        new = [name for name in found if name not in self.tables]
        loaded: dict[str, tuple[TableSpec, Changelog]] = {}

        def load(name: str) -> None:
            spec = read_spec(self.storage, name)
            changelog = self.storage.changelog(
                name, flush_segments=self.config.tail_flush_segments, flush_rows=self.config.tail_flush_rows
            )
            changelog.load()
            loaded[name] = (spec, changelog)

        concurrently(load, new)
        for name in new:
            if self.ready is not None and not self.ready(*loaded[name]):
                self.waiting.add(name)
                continue
            self.waiting.discard(name)
            self.tables[name] = loaded[name]
            self._looked[name] = started
            self._derived_looked[name] = started  # loaded when a query first reads the table

    # -- following -------------------------------------------------------
    def freshen(self, relations: frozenset[str] | None, *, force: bool = False, discover: bool = False) -> None:
        """Before a query reading ``relations`` (lower-cased names; ``None``: all): look at what is due.

        ``force`` looks whether due or not; ``discover`` also lists the
        store's tables, if that was not done within the interval.
        """
        now = time.monotonic()  # before waiting: a look that began while this query waited serves it too
        with self._lock:
            wanted: Collection[str] = list(self.tables) if relations is None else parts_named(relations, self.tables)
            due = [name for name in wanted if force or self._looked.get(name, float("-inf")) <= now - self.interval]
            self._look(due, time.monotonic(), derived_too=force)
            if discover and self._listed <= now - self.interval:
                self.discover()

    def refresh(self) -> None:
        """Look at every table and list the store's tables now."""
        with self._lock:
            self._look(list(self.tables), time.monotonic(), derived_too=True)
            self.discover()

    def _look(self, names: list[str], started: float, *, derived_too: bool) -> None:
        def look(name: str) -> None:
            spec, changelog = self.tables[name]
            derived_due = self._derived_looked.get(name, float("-inf")) <= started - DERIVED_EVERY * self.interval
            derived_now = derived_too or derived_due
            moved = False
            for _ in range(_FEED_ATTEMPTS):
                feed_version = changelog.store.version()
                if derived_now:
                    # The derived table first: the change feed then holds at least every event folded into it.
                    self._derived.get(spec).poll()
                    self._derived_looked[name] = started
                moved = changelog.poll(table=derived_now) or moved
                if changelog.store.version() == feed_version:
                    break
                # The change feed's table moved (a flush, a compaction): a compaction may have expired events
                # from it that it folded into the derived table after the reader last looked there. The two
                # agree once the feed stood still over a look at the derived table.
                derived_now = True
            else:  # the feed kept moving: the next look starts at the derived table
                self._derived_looked.pop(name, None)
            if moved:
                evolved = read_spec(self.storage, name)  # from the snapshot just loaded: no request
                if evolved != spec:  # another process added or dropped a column
                    self.tables[name] = (evolved, changelog)
            self._looked[name] = started

        concurrently(look, names)
