"""One DataFusion session per lake, with each table's views kept fresh.

Every mirrored table ``t`` is queryable as ``t`` (current rows), ``t_history``
(every version) and ``t_changes`` (the raw change feed). The session is kept
across queries and brought forward lazily: before a query, the tables it names
are updated with what moved since the last query (see
:mod:`rhei_lake.query.table_state`), so a query sees everything committed so
far and pays only for what changed in the tables it reads.

``as_of`` queries get a session of their own, with only the relations they
name, kept for the next query at the same instant over the same table versions
(see :class:`_AsOfSessions`). The analytic path is read-only: DDL, DML and
``SET`` are refused before planning.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from typing import Any

import pyarrow as pa

from rhei_lake._shared.arrow_types import normalize_schema, normalize_types
from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import SEQ
from rhei_lake.errors import QueryError, RheiError, StorageError, translate_query_error
from rhei_lake.query import views
from rhei_lake.query.duckdb_session import DuckSession
from rhei_lake.query.references import PARTS, every_part, referenced_parts
from rhei_lake.query.rwlock import ReadWriteLock
from rhei_lake.relation_names import name_clashes
from rhei_lake.query.table_state import (
    UNFOLDED_IN_MEMORY,
    QueryTable,
    TableState,
    names,
    put_view,
    source_base,
)
from rhei_lake.storage.changelog import register_arrow

__all__ = ["QueryEngine", "QueryTable", "UNFOLDED_IN_MEMORY", "normalize_schema", "normalize_types"]

TableProvider = Callable[[Collection[str] | None], dict[str, QueryTable]]
"""The query view of the named tables (``None``: all of them)."""


@functools.cache
def _sql_options():
    from datafusion import SQLOptions

    return SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


class QueryEngine:
    """Runs read-only SQL over the lake's views.

    One session is kept across queries. Before planning, the tables a query
    names (every table when that cannot be told from the SQL) are brought up
    to date in it: only what moved since the last query is registered again
    (see :mod:`rhei_lake.query.table_state`).
    """

    def __init__(
        self,
        tables: TableProvider,
        names: Callable[[], list[str]],
        *,
        look_again: Callable[[str, str], None] | None = None,
        new_session: Callable[[], Any] | None = None,
    ) -> None:
        self._tables = tables
        self._new_session = new_session or _datafusion_session
        self._names = names
        self._look_again = look_again
        self._lock = ReadWriteLock()  # planning reads the session; bringing tables forward changes it
        self._ctx = None
        self._states: dict[str, TableState] = {}
        self._as_of = _AsOfSessions()

    def _current(self, wanted: dict[str, set[str]] | None, tables: dict[str, QueryTable]) -> bool:
        """Whether the session holds the named parts of these tables as they are now (nothing to register)."""
        if self._ctx is None:
            return False
        for name, parts in (every_part(tables) if wanted is None else wanted).items():
            state = self._states.get(name)
            if state is None or not state.current(tables[name], parts):
                return False
        return True

    def _context(self, wanted: dict[str, set[str]] | None, tables: dict[str, QueryTable]):
        if self._ctx is None:
            self._ctx = self._new_session()
        ctx = self._ctx
        known = set(self._names())
        for name in list(self._states):
            if name not in known:
                self._states.pop(name).drop(ctx)
        for name, parts in (every_part(tables) if wanted is None else wanted).items():
            table = tables[name]
            state = self._states.get(name)
            if state is None or state.spec != table.spec:
                if state is not None:
                    state.drop(ctx)
                state = self._states[name] = TableState(table.spec)
            try:
                state.update(ctx, table, parts)
            except BaseException:
                self._states.pop(name).drop(ctx)  # half brought forward: start over next time
                raise
        _withdraw_ambiguous(ctx, self._names())
        return ctx

    def dataframe(self, sql: str, *, as_of: int | None = None, params: dict[str, Any] | None = None, bind: bool = True):
        """Plan ``sql``; returns a DataFusion DataFrame (nothing executed yet).

        ``params`` binds placeholders: ``{"1": value}`` is ``$1``. The plan is
        bound to the tables as registered now, so it can be executed or
        streamed from any thread without the engine lock. A table or column the
        engine does not know makes it look again (``look_again``, which may find
        a table or column created since) and plan once more.
        """
        try:
            return self._dataframe(sql, as_of, params, bind)
        except QueryError as exc:
            if self._look_again is None or not _NAME_NOT_FOUND.search(str(exc)):
                raise
        self._as_of.clear()
        self._look_again(sql, "table")
        return self._dataframe(sql, as_of, params, bind)

    def _dataframe(self, sql: str, as_of: int | None, params: dict[str, Any] | None, bind: bool = True):
        wanted = referenced_parts(sql, self._names())
        tables = self._tables(None if wanted is None else wanted.keys())
        if as_of is None:
            # Planned under the lock: re-registering a view deregisters it first, and a
            # query planned in that window would find no such table. Queries over tables
            # that did not move are planned side by side.
            with self._lock.reading():
                if self._current(wanted, tables):
                    return _plan(self._ctx, sql, params, tables, as_of, bind)
            with self._lock.writing():
                ctx = self._context(wanted, tables)
                return _plan(ctx, sql, params, tables, as_of, bind)
        parts = every_part(tables) if wanted is None else wanted
        known = self._names()
        datafusion = self._new_session is _datafusion_session
        key = _as_of_key(as_of, parts, tables, known) if datafusion else None
        ctx = self._as_of.get(key)
        if ctx is None:
            ctx = _as_of_datafusion_session() if datafusion else self._new_session()
            for name, named in parts.items():
                _register_table(ctx, tables[name], as_of=as_of, parts=named)
            _withdraw_ambiguous(ctx, known)
            # Kept only if nothing moved while registering: the key must describe what was registered.
            if key is not None and key == _as_of_key(as_of, parts, tables, known):
                self._as_of.put(key, ctx)
        df = _plan(ctx, sql, params, tables, as_of, bind)
        # A DataFrame does not own its session, and Delta tables scanned through DataFusion's
        # FFI fail once it is gone ("TaskContextProvider went out of scope"): keep it alive.
        df._rhei_session = ctx
        return df

    def query(self, sql: str, *, as_of: int | None = None) -> pa.Table:
        """Run ``sql`` and return all rows.

        A file found gone (vacuumed by a compaction since the tables were last
        looked at) makes the engine look again, through ``look_again``, and
        run the query once more: up to three times, since a compaction that
        vacuums at once (``vacuum_retention=0``) can remove the next file while
        the query reads.
        """
        if not isinstance(sql, str) or not sql.strip():
            raise QueryError("query: SQL must be a non-empty string")
        for attempt in range(_ATTEMPTS):
            try:
                # Not bound apart from running at first (DuckDB would bind twice); an unknown table is
                # found then, and the second attempt binds first, to explain it.
                return normalize_types(self.dataframe(sql, as_of=as_of, bind=attempt > 0).to_arrow_table())
            except Exception as exc:
                self._as_of.clear()  # a kept as_of session may name a vacuumed file: never trust it again
                look_again = self._look_again if attempt < _ATTEMPTS - 1 else None
                if look_again is not None and _missing_file(exc):
                    look_again(sql, "file")
                    continue
                if attempt == 0 and self._look_again is not None and _NAME_NOT_FOUND.search(str(exc)):
                    self._look_again(sql, "table")
                    continue
                if isinstance(exc, RheiError):
                    raise
                raise translate_query_error(exc, sql=sql) from exc
        raise AssertionError("unreachable")

    def interrupt(self) -> None:
        """Cancel the queries running now on the kept session (DuckDB; they raise KeyboardInterrupt)."""
        interrupt = getattr(self._ctx, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def close(self) -> None:
        """Release the kept session's engine resources (DuckDB cursors) and the kept ``as_of`` sessions."""
        self._as_of.clear()
        close = getattr(self._ctx, "close", None)
        if close is not None:
            close()

    def olap_session(self):
        """A new session with every table's views registered as they are now, for the user's own use.

        DataFusion: a ``SessionContext``; DuckDB: a connection (a cursor of the
        lake's database). It is not the session the lake queries through, so
        what a user registers or creates in it never reaches the lake's views.
        """
        tables = self._tables(None)
        ctx = self._new_session()
        for name in tables:
            _register_table(ctx, tables[name], as_of=None)
        _withdraw_ambiguous(ctx, self._names())
        return ctx.connection() if isinstance(ctx, DuckSession) else ctx

    def table_names(self) -> list[str]:
        names = []
        for name in sorted(self._names()):
            names.extend([name, f"{name}_history", f"{name}_changes"])
        return names


_ATTEMPTS = 4  # the first run and up to three after looking again

# A table or column the engine does not know: another process may have registered it or
# added it since the last look (a read-only lake sees a column added with no rows after it
# only at its next look at the table).
_NAME_NOT_FOUND = re.compile(r"table '[^']*' not found|no field named|referenced column .* not found", re.IGNORECASE)


def _missing_file(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was translated from) says a data file was not found."""
    while exc is not None:
        text = str(exc).lower()
        if ("not found" in text or "cannot open file" in text or "failed to open local file" in text) and (
            "object at location" in text or "no such file" in text or "nosuchkey" in text
        ):
            return True
        exc = exc.__cause__
    return False


def _datafusion_session():
    from datafusion import SessionContext

    return SessionContext()


def _as_of_datafusion_session():
    """A session for ``as_of`` queries: no round-robin repartition above a scan.

    An ``as_of`` view filters the history on its validity above the scan
    (``CASE`` on ``_rhei_valid_to`` is not pushed into the dataset), and
    DataFusion spreads that filter over the cores through a round-robin
    repartition: ~2.5 ms of a 9 ms point lookup on 1M rows, and no faster on a
    GROUP BY over all of them (2 cores). The dataset's scan decodes on pyarrow's
    own threads either way, and aggregates still repartition by hash.
    """
    from datafusion import SessionConfig, SessionContext

    return SessionContext(SessionConfig().set("datafusion.optimizer.enable_round_robin_repartition", "false"))


def _plan(
    ctx, sql: str, params: dict[str, Any] | None, tables: dict[str, QueryTable], as_of: int | None, bind: bool = True
):
    try:
        if isinstance(ctx, DuckSession):
            return ctx.plan(sql, params, bind=bind)
        return ctx.sql_with_options(sql, _sql_options(), param_values=params)
    except Exception as exc:
        error = _explain_ambiguous(_explain_missing_view(translate_query_error(exc, sql=sql), tables, as_of), tables)
        if error is exc:  # DuckDB's session raises rhei_lake's errors itself
            raise
        raise error from exc


def _withdraw_ambiguous(ctx, tables: Iterable[str]) -> None:
    """A name two tables' relations claim (``x_changes`` of ``x`` and table ``x_changes``) answers neither.

    Lakes written before such names were refused may hold both; whichever was
    registered last would win, silently. A query naming it fails instead.
    """
    tables = list(tables)
    clashes = {clash.name for clash in name_clashes(tables)}
    if not clashes:
        return
    for name in tables:
        for alias in names(name):
            for view in (alias, f"{alias}_history", f"{alias}_changes"):
                if view.lower() in clashes and ctx.table_exist(q(view)):
                    ctx.deregister_table(q(view))


def _explain_ambiguous(error: QueryError | StorageError, tables: dict[str, QueryTable]) -> QueryError | StorageError:
    text = str(error).lower()
    for clash in name_clashes(tables):
        if re.search(rf"table '(?:[^']*\.)?{re.escape(clash.name)}' not found", text):
            return QueryError(
                f"{clash.describe()} in this lake (mirrored before rhei_lake refused such names), so it answers "
                'neither; their other names still work (see docs/htap-api.md, "Names")'
            )
    return error


def _explain_missing_view(
    error: QueryError | StorageError, tables: dict[str, QueryTable], as_of: int | None
) -> QueryError | StorageError:
    """Say why a mirrored table has no ``t_history`` (nor, under ``as_of``, ``t``)."""
    text = str(error).lower()
    for table in tables.values():
        if not table.mirror:
            continue
        name = table.spec.name
        views = [f"{alias}_history" for alias in names(name)]
        if as_of is not None:
            views += names(name)
        for view in views:
            if re.search(rf"table '(?:[^']*\.)?{re.escape(view.lower())}' not found", text):
                readable = f"{name}_changes" if as_of is not None else f"{name} and {name}_changes"
                return QueryError(
                    f"table {name!r} is kept with sync_mode='mirror' (current rows only, no history): "
                    f"{'as_of queries' if as_of is not None else 'queries'} can read {readable}"
                )
    return error


class _AsOfSessions:
    """The last few ``as_of`` sessions, by :func:`_as_of_key`: a session is never changed once kept.

    A key names the instant, the relations registered and the version of every
    source they were registered from (Delta versions, the feed's watermark): a
    sync, flush or compaction makes another key, so a kept session never serves
    a state other than the one it was built from. Keeping one drops those built
    from an older state of a table it names (they can never be asked for again,
    and may hold that state's unfolded events in memory). A query that fails on
    one (a file vacuumed since) drops them all.
    """

    SIZE = 4

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple | None) -> Any:
        if key is None:
            return None
        with self._lock:
            ctx = self._sessions.get(key)
            if ctx is not None:
                self._sessions.move_to_end(key)
            return ctx

    def put(self, key: tuple, ctx: Any) -> None:
        states = {name: state for name, _parts, state in key[2:]}
        with self._lock:
            for kept in list(self._sessions):
                if kept[1] != key[1] or any(states.get(name, state) != state for name, _parts, state in kept[2:]):
                    del self._sessions[kept]
            self._sessions[key] = ctx
            while len(self._sessions) > self.SIZE:
                self._sessions.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


def _as_of_key(
    as_of: int, parts: dict[str, set[str]], tables: dict[str, QueryTable], known: Collection[str]
) -> tuple | None:
    """What an ``as_of`` session registered from ``tables`` now depends on (no I/O); ``None``: not to be kept.

    ``(as_of, known tables, (name, parts, state) per table registered)``.
    """
    key: list[Any] = [as_of, tuple(sorted(known))]
    for name in sorted(parts):
        table = tables[name]
        store = table.derived
        state = (
            table.spec,
            table.mirror,
            None if store is None else store.version(),
            table.folded,
            table.changelog.feed_key(),
        )
        key.append((name, frozenset(parts[name]), state))
    try:
        hash(tuple(key))
    except TypeError:
        return None
    return tuple(key)


def _register_table(ctx, table: QueryTable, *, as_of: int | None, parts: Collection[str] = PARTS) -> None:
    """Register ``table``'s sources and the views of ``parts`` (``t`` needs ``t_history``'s view)."""
    spec = table.spec
    base = source_base(spec.name)
    changes_src = f"{base}__changes"
    if table.mirror:
        table.changelog.register(ctx, changes_src)
        _register_mirror(ctx, table, changes_src, as_of=as_of)
        return
    history_src = None
    if table.history is not None:
        history_src = f"{base}__history"
        table.history.register(ctx, history_src)
    if "changes" not in parts and history_src is not None and table.changelog.watermark <= table.folded:
        # Every event is in the history: its views never read the feed, so it is not registered.
        sources = views.ViewSources(changes_src, history_src, table.folded, all_folded=True)
    else:
        # Registered after the history: the feed then holds at least every event folded into it.
        table.changelog.register(ctx, changes_src)
        sources = _unfolded_sources(ctx, table, changes_src, history=history_src)
    if "changes" in parts:
        changes_view = ctx.sql(views.changes_sql(spec, sources, as_of))
        for alias in names(spec.name):
            put_view(ctx, f"{alias}_changes", changes_view)
    if not {"history", "current"} & set(parts):
        return
    history_view = ctx.sql(views.history_sql(spec, sources, as_of))
    history_name = f"{base}__history_view"
    put_view(ctx, history_name, history_view)
    current_view = ctx.sql(views.current_sql(spec, history_name)) if "current" in parts else None
    for alias in names(spec.name):
        if "history" in parts:
            put_view(ctx, f"{alias}_history", history_view)
        if current_view is not None:
            put_view(ctx, alias, current_view)


def _unfolded_sources(
    ctx, table: QueryTable, changes_src: str, *, history: str | None = None, current: str | None = None
) -> views.ViewSources:
    """The view sources, with the events not yet folded read once here rather than at every query.

    Checked after the change feed is registered: the watermark only grows, so
    if it is still at the folded one, the registered feed holds nothing past it.
    """
    base = source_base(table.spec.name)
    pending = table.changelog.watermark - table.folded  # an upper bound: sequence numbers span tables
    derived = current if table.mirror else history
    if pending <= 0 and derived is not None:
        return views.ViewSources(changes_src, history, table.folded, current, all_folded=True)
    if pending > UNFOLDED_IN_MEMORY:
        return views.ViewSources(changes_src, history, table.folded, current)
    seq = q(SEQ)
    events = ctx.sql(f"SELECT * FROM {q(changes_src)} WHERE {seq} > {int(table.folded)} ORDER BY {seq}")
    try:
        unfolded = events.to_arrow_table()
    except Exception:  # noqa: BLE001 - a damaged or unreachable file: the query that scans it says so
        return views.ViewSources(changes_src, history, table.folded, current)
    name = f"{base}__unfolded"
    register_arrow(ctx, name, unfolded)
    return views.ViewSources(changes_src, history, table.folded, current, unfolded=name)


def _register_mirror(ctx, table: QueryTable, changes_src: str, *, as_of: int | None) -> None:
    spec = table.spec
    current_src = None
    if table.current is not None:
        current_src = f"{source_base(spec.name)}__current"
        table.current.register(ctx, current_src)
    sources = _unfolded_sources(ctx, table, changes_src, current=current_src)
    changes_view = ctx.sql(views.changes_sql(spec, sources, as_of))
    current_view = ctx.sql(views.mirror_current_sql(spec, sources)) if as_of is None else None
    for alias in names(spec.name):
        put_view(ctx, f"{alias}_changes", changes_view)
        if current_view is not None:
            put_view(ctx, alias, current_view)
