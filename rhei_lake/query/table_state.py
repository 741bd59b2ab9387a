"""One table's part of the shared query session, brought forward by what changed.

For a mirrored table ``t`` the session holds its change feed (the Delta table
plus the tail held in memory), its derived table (``history`` or ``current``),
the events past the folded watermark (held in memory while they are few), the
views ``t_history``/``t_changes``, and ``t`` itself as rows in memory.

Nothing is re-read that did not change: new tail segments (or, rarely, new
events flushed past what this state had seen) are applied to the rows and
appended to the unfolded events; a compaction only swaps the derived table
(the current rows do not change when events are folded); a new schema starts
over. The parts of a table a query does not name are brought forward when a
query names them (see :mod:`rhei_lake.query.references`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from rhei_lake._shared.arrow_types import normalize_schema as normalize_schema
from rhei_lake._shared.arrow_types import normalize_types
from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import SEQ, TableSpec
from rhei_lake.compaction.derived import FOLDED_APP_ID, DerivedTable
from rhei_lake.errors import CommitConflictError
from rhei_lake.query import views
from rhei_lake.query.current_rows import apply_events, collect_rows
from rhei_lake.storage.changelog import Changelog, FeedSnapshot, register_arrow

if TYPE_CHECKING:
    from rhei_lake.storage.base import TableStore

UNFOLDED_IN_MEMORY = 200_000
"""Up to this many pending events, a table's unfolded events are held in memory by its views."""

UNFOLDED_READ_BYTES = 64 * 1024 * 1024
"""Up to this many (compressed) bytes of change-feed files, the events a state takes from the store are read
file by file, each whole in one request (a scan on S3 asks for each file's footer, then for its columns)."""

_DERIVED_ATTEMPTS = 5


@dataclass
class QueryTable:
    """What the query layer needs of one mirrored table.

    Temporal tables pass their ``history`` store, mirrored ones (``mirror=True``)
    their ``current`` store, once it exists; ``folded`` is the highest
    ``_rhei_seq`` folded into it.
    """

    spec: TableSpec
    changelog: Changelog
    history: TableStore | None = None
    folded: int = 0
    current: TableStore | None = None
    mirror: bool = False

    @classmethod
    def of(cls, spec: TableSpec, changelog: Changelog, derived: DerivedTable) -> QueryTable:
        """The query view of a table whose history or current rows live in ``derived``."""
        store = derived.store if derived.exists() else None
        mirror = derived.mode == "mirror"
        return cls(
            spec,
            changelog,
            history=None if mirror else store,
            folded=derived.folded,
            current=store if mirror else None,
            mirror=mirror,
        )

    @property
    def derived(self) -> TableStore | None:
        return self.current if self.mirror else self.history


def source_base(table: str) -> str:
    """The prefix of a table's internal names in a session.

    DataFusion parses a registered name as SQL and folds it to lower case:
    internal names must be plain lower-case identifiers whatever the table is called.
    """
    return f"__rhei_{table.encode().hex()}"


def names(table: str) -> list[str]:
    """The name a table is registered under, plus its lower-case alias for unquoted SQL."""
    return [table] if table == table.lower() else [table, table.lower()]


def put_view(ctx, name: str, df) -> None:
    # Quoted: DataFusion parses the name as SQL, and would fold "Orders" to orders.
    if ctx.table_exist(q(name)):
        ctx.deregister_table(q(name))
    ctx.register_view(q(name), df)


@dataclass
class _Registered:
    """What a part's views were last registered from (``None``: never)."""

    current: int | None = None
    history: int | None = None
    changes: int | None = None


@dataclass
class TableState:
    """The cached sources, views and rows of one table in one session."""

    spec: TableSpec
    feed: FeedSnapshot | None = None
    derived_version: int | None = None  # of the registered derived table; None: there is none
    folded: int = 0
    unfolded: pa.Table | None = None  # events past `folded` up to `applied`; None: read from the feed per query
    rows: pa.Table | None = None  # `t`, at `applied`; None until a query names `t`
    applied: int = 0
    moves: int = 0  # bumps whenever anything registered changed
    mirror: bool = False
    registered: _Registered = field(default_factory=_Registered)

    @property
    def base(self) -> str:
        return source_base(self.spec.name)

    @property
    def changes_src(self) -> str:
        return f"{self.base}__changes"

    @property
    def derived_src(self) -> str:
        return f"{self.base}__current" if self.mirror else f"{self.base}__history"

    # -- bringing the state forward ------------------------------------------------
    def current(self, table: QueryTable, parts: set[str]) -> bool:
        """Whether the named ``parts`` are registered as ``table`` is now: :meth:`update` would change nothing."""
        if self.feed is None or table.spec != self.spec or table.mirror != self.mirror:
            return False
        store = table.derived
        if (None if store is None else store.version()) != self.derived_version:
            return False
        if table.changelog.feed_key() != (self.feed.version, self.feed.stored, self.feed.watermark):
            return False
        registered = self.registered
        return (
            ("current" not in parts or (self.rows is not None and registered.current == self.moves))
            and ("changes" not in parts or registered.changes == self.moves)
            and ("history" not in parts or self.mirror or registered.history == self.moves)
        )

    def update(self, ctx, table: QueryTable, parts: set[str]) -> None:
        """Bring the named ``parts`` (see :data:`~rhei_lake.query.references.PARTS`) up to ``table``'s state."""
        self.mirror = table.mirror
        # The derived table first: the feed then holds at least every event folded into it.
        derived_moved = self._register_derived(ctx, table)
        feed = table.changelog.register(ctx, self.changes_src, previous=self.feed)
        first = self.feed is None
        if first or feed is not self.feed or derived_moved:
            self.moves += 1
            if not first and feed.watermark < self.applied:
                # The feed went back (a table re-created under the same name): start over.
                self.unfolded = self.rows = None
                first = True
            if not first and self.folded > self.applied:
                # A compaction folded events these rows never saw, and may have expired them from the feed
                # (changelog retention): they cannot be applied, so t is computed anew when a query names it.
                self.rows = None
            events = None if first else self._events_after(ctx, table.changelog, feed, self.applied)
            self.feed = feed
            self._bring_unfolded(ctx, table.changelog, events)
            if self.rows is not None and events is not None and events.num_rows:
                self.rows = apply_events(self.rows, events, self.spec)
            self.applied = feed.watermark
        if "current" in parts and self.rows is None:
            self.rows = self._compute_rows(ctx)
        if self.rows is not None and self.registered.current != self.moves:
            for alias in names(self.spec.name):
                register_arrow(ctx, q(alias), self.rows)
            self.registered.current = self.moves
        if "changes" in parts and self.registered.changes != self.moves:
            changes_view = ctx.sql(views.changes_sql(self.spec, self._sources(), None))
            for alias in names(self.spec.name):
                put_view(ctx, f"{alias}_changes", changes_view)
            self.registered.changes = self.moves
        if "history" in parts and not self.mirror and self.registered.history != self.moves:
            history_view = ctx.sql(views.history_sql(self.spec, self._sources(), None))
            for alias in names(self.spec.name):
                put_view(ctx, f"{alias}_history", history_view)
            self.registered.history = self.moves

    def _register_derived(self, ctx, table: QueryTable) -> bool:
        """Register the derived table if it moved; whether it did. Its folded watermark is read with it."""
        store = table.derived
        if store is None:
            moved = self.derived_version is not None
            self.derived_version, self.folded = None, 0
            return moved
        for _ in range(_DERIVED_ATTEMPTS):
            version = store.version()
            if version == self.derived_version:
                return False
            folded = store.app_version(FOLDED_APP_ID) or 0
            store.register(ctx, self.derived_src)
            if store.version() == version:  # a concurrent commit would make `folded` another snapshot's
                self.derived_version, self.folded = version, folded
                return True
        raise CommitConflictError(f"{store.uri}: the table kept moving while it was registered; retry")

    def _events_after(self, ctx, changelog: Changelog, feed: FeedSnapshot, seq: int) -> pa.Table:
        """The feed's events after ``seq``, from its tail in memory when it holds them all."""
        events = feed.events_after(seq)
        if events is None:
            events = self._read_after(ctx, changelog, feed, seq)
        return _without_view_types(events)

    def _read_after(self, ctx, changelog: Changelog, feed: FeedSnapshot, seq: int) -> pa.Table:
        """The events ``feed`` registered after ``seq``: read file by file where that is cheaper, else scanned."""
        events = changelog.read_after(feed, seq, max_bytes=UNFOLDED_READ_BYTES)
        if events is None:
            scan = ctx.sql(f"SELECT * FROM {q(self.changes_src)} WHERE {q(SEQ)} > {int(seq)} ORDER BY {q(SEQ)}")
            events = scan.to_arrow_table()
        return events

    def _bring_unfolded(self, ctx, changelog: Changelog, events: pa.Table | None) -> None:
        """Keep the events past the folded watermark in memory (while they are few), and registered."""
        assert self.feed is not None
        pending = self.feed.watermark - self.folded  # an upper bound: sequence numbers span tables
        if self.derived_version is not None and pending <= 0:
            self.unfolded = None
            return
        if pending > UNFOLDED_IN_MEMORY:
            self.unfolded = None
            return
        before = self.unfolded
        if self.unfolded is not None and events is not None and _same_columns(self.unfolded, events):
            # promote: DuckDB's results declare every column nullable, the tail does not
            held = (
                pa.concat_tables([self.unfolded, events], promote_options="default")
                if events.num_rows
                else self.unfolded
            )
            self.unfolded = _after(held, self.folded)
        else:
            self.unfolded = _without_view_types(self._read_after(ctx, changelog, self.feed, self.folded))
        if self.unfolded is not before:
            register_arrow(ctx, f"{self.base}__unfolded", self.unfolded)
            self.moves += 1

    def _sources(self) -> views.ViewSources:
        assert self.feed is not None
        derived = self.derived_src if self.derived_version is not None else None
        history, current = (None, derived) if self.mirror else (derived, None)
        if derived is not None and self.feed.watermark <= self.folded:
            return views.ViewSources(self.changes_src, history, self.folded, current, all_folded=True)
        unfolded = f"{self.base}__unfolded" if self.unfolded is not None else None
        return views.ViewSources(self.changes_src, history, self.folded, current, unfolded=unfolded)

    def _compute_rows(self, ctx) -> pa.Table:
        """``t`` by the merge-on-read SQL, once; later events are applied to it."""
        sources = self._sources()
        if self.mirror:
            sql = views.mirror_current_sql(self.spec, sources)
        else:
            history = f"{self.base}__history_view"
            put_view(ctx, history, ctx.sql(views.history_sql(self.spec, sources, None)))
            sql = views.current_sql(self.spec, history)
        rows = collect_rows(ctx.sql(sql).execute_stream(), self.spec)
        self.moves += 1
        return rows

    def drop(self, ctx) -> None:
        """Deregister everything this table registered."""
        for alias in names(self.spec.name):
            for name in (alias, f"{alias}_history", f"{alias}_changes"):
                if ctx.table_exist(q(name)):
                    ctx.deregister_table(q(name))


def _without_view_types(table: pa.Table) -> pa.Table:
    return normalize_types(table)


def _same_columns(held: pa.Table, events: pa.Table) -> bool:
    """Whether ``events`` have ``held``'s columns and types (nullability aside): else the feed's schema
    moved under the same spec (a column added to the change feed by another process) and the held events
    are read again rather than concatenated with rows of another layout."""
    return [(f.name, f.type) for f in held.schema] == [(f.name, f.type) for f in events.schema]


def _after(events: pa.Table, seq: int) -> pa.Table:
    import pyarrow.compute as pc

    if events.num_rows == 0 or events.column(SEQ)[0].as_py() > seq:
        return events
    return events.filter(pc.greater(events.column(SEQ), seq))
