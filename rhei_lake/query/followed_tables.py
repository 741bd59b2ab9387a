"""The tables of a lake that another process syncs, followed cheaply.

A read-only lake (``open(storage=...)``) loads every table once, concurrently.
After that it looks at the store again only for the tables a query reads, and
only when its last look at a table started more than ``refresh_interval``
seconds ago. A look costs two requests whatever the table's history: the tail
segment extending the watermark and the change feed's next commit (see
:meth:`Changelog.poll`); only what is new is then read. The derived table
(``history``/``current``) is looked at less often: after the change feed
moved, and every :data:`DERIVED_EVERY` intervals, since a compaction
reorganises the events but changes no result.

On S3 the lake's change marker (:mod:`~rhei_lake.storage.change_marker`) is
read first, one request for all the tables due: a table whose last look began
after the marker's token was written is not looked at again (nothing was
committed since). Every :data:`FULL_LOOK_EVERY` intervals a table is looked at
whatever the marker says, for commits no token announced (a writer that died
between its commit and the token, or an older version that writes none); a
lake without a marker is looked at as above. So the rule a reader can rely on:

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
"""A table's derived table is looked at every this many refresh intervals, or after its change feed moved."""

FULL_LOOK_EVERY = 20
"""A table is looked at every this many refresh intervals even when the lake's change marker did not move."""


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
        self._feed_moved: set[str] = set()  # tables whose change feed's table moved at their last look
        self._feed_versions: dict[str, int] = {}
        self._listed = float("-inf")
        self._marker = storage.marker
        self._seen: dict[str, str | None] = {}  # the marker's token read before a table's last look
        self._derived_seen: dict[str, str | None] = {}  # ... before its derived table's last look
        self._full_looked: dict[str, float] = {}  # when the last look at a table that ignored the marker started
        self._lock = threading.Lock()  # one look at a time: a query arriving meanwhile waits for its result

    # -- loading ---------------------------------------------------------
    def discover(self) -> None:
        """Load every table in the store that is not loaded yet (all of them at open)."""
        started = time.monotonic()
        token = self._token()
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
            self._looked[name] = self._full_looked[name] = started
            self._derived_looked[name] = started  # loaded when a query first reads the table
            self._seen[name] = self._derived_seen[name] = token

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
            if due:
                started = time.monotonic()
                token = self._token()  # before looking: what is committed after it moves the marker again
                if not force:
                    due = self._moved(due, started, token)
                self._look(due, started, derived_too=force, token=token)
            if discover and self._listed <= now - self.interval:
                self.discover()

    def refresh(self) -> None:
        """Look at every table and list the store's tables now."""
        with self._lock:
            started = time.monotonic()
            self._look(list(self.tables), started, derived_too=True, token=self._token())
            self.discover()

    def _token(self) -> str | None:
        """The lake's change marker now (one request); ``None`` where there is none."""
        return None if self._marker is None else self._marker.read()

    def _moved(self, due: list[str], started: float, token: str | None) -> list[str]:
        """The tables of ``due`` a look may find something new in; the others count as looked at now.

        With the marker's token unchanged since a table's last look, nothing
        was committed since that look began: unless the table is due its
        periodic full look, or a derived-table look it has not had since the
        token last moved.
        """
        if token is None:
            return due
        moved = []
        for name in due:
            full_due = self._full_looked.get(name, float("-inf")) <= started - FULL_LOOK_EVERY * self.interval
            derived_due = self._derived_due(name, started) and self._derived_seen.get(name) != token
            if full_due or derived_due or name in self._feed_moved or self._seen.get(name) != token:
                moved.append(name)
            else:
                self._looked[name] = started
        return moved

    def _derived_due(self, name: str, started: float) -> bool:
        return self._derived_looked.get(name, float("-inf")) <= started - DERIVED_EVERY * self.interval

    def _look(self, names: list[str], started: float, *, derived_too: bool, token: str | None) -> None:
        def look(name: str) -> None:
            spec, changelog = self.tables[name]
            if derived_too or self._derived_due(name, started) or name in self._feed_moved:
                # The derived table first: the change feed then holds at least every event folded into it.
                self._derived.get(spec).poll()
                self._derived_looked[name] = started
                self._derived_seen[name] = token
                self._feed_moved.discard(name)
            if changelog.poll():
                if changelog.store.version() != self._feed_versions.get(name):
                    self._feed_moved.add(name)  # a flush or a compaction: the derived table may follow
                evolved = read_spec(self.storage, name)  # from the snapshot just loaded: no request
                if evolved != spec:  # another process added or dropped a column
                    self.tables[name] = (evolved, changelog)
            self._feed_versions[name] = changelog.store.version()
            self._looked[name] = self._full_looked[name] = started
            self._seen[name] = token

        concurrently(look, names)
