"""One DataFusion session per lake, with each table's views kept fresh.

Every mirrored table ``t`` is queryable as ``t`` (current rows), ``t_history``
(every version) and ``t_changes`` (the raw change feed). The session is
refreshed lazily: before a query, tables whose changelog moved since the last
query are re-registered, so queries see everything committed so far without
paying for tables that did not change.

The analytic path is read-only: DDL, DML and ``SET`` are refused before planning.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import SEQ, TableSpec
from rhei_lake.compaction.derived import DerivedTable
from rhei_lake.errors import QueryError, translate_query_error
from rhei_lake.query import views
from rhei_lake.relation_names import name_clashes
from rhei_lake.storage.base import TableStore
from rhei_lake.storage.changelog import Changelog, register_arrow


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

    def generation(self) -> tuple[int, ...]:
        derived = self.current if self.mirror else self.history
        derived_version = derived.version() if derived is not None else -1
        # The changes table's own version moves when compaction rewrites it (expiry, bin-packing).
        return (self.changelog.generation, self.changelog.store.version(), derived_version, self.folded)


UNFOLDED_IN_MEMORY = 200_000
"""Up to this many pending events, a table's unfolded events are held in memory by its views."""

TableProvider = Callable[[], dict[str, QueryTable]]


def _sql_options():
    from datafusion import SQLOptions

    return SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


def _names(table: str) -> list[str]:
    """The name a table is registered under, plus its lower-case alias for unquoted SQL."""
    return [table] if table == table.lower() else [table, table.lower()]


class QueryEngine:
    """Runs read-only SQL over the lake's views."""

    def __init__(self, tables: TableProvider) -> None:
        self._tables = tables
        self._lock = threading.RLock()
        self._ctx = None
        self._generations: dict[str, tuple[int, ...]] = {}

    def _context(self):
        from datafusion import SessionContext

        with self._lock:
            if self._ctx is None:
                self._ctx = SessionContext()
            tables = self._tables()
            for name in list(self._generations):
                if name not in tables:
                    self._drop(self._ctx, name)
            for name, table in tables.items():
                generation = table.generation()
                if self._generations.get(name) != generation:
                    _register_table(self._ctx, table, as_of=None)
                    self._generations[name] = generation
            _withdraw_ambiguous(self._ctx, tables)
            return self._ctx

    def _drop(self, ctx, name: str) -> None:
        for alias in _names(name):
            for view in (alias, f"{alias}_history", f"{alias}_changes"):
                if ctx.table_exist(q(view)):
                    ctx.deregister_table(q(view))
        self._generations.pop(name, None)

    def dataframe(self, sql: str, *, as_of: int | None = None, params: dict[str, Any] | None = None):
        """Plan ``sql``; returns a DataFusion DataFrame (nothing executed yet).

        ``params`` binds placeholders: ``{"1": value}`` is ``$1``. The plan is
        bound to the tables as registered now, so it can be executed or
        streamed from any thread without the engine lock.
        """
        if as_of is None:
            # Planned under the lock: re-registering a view deregisters it first, and a
            # query planned in that window would find no such table.
            with self._lock:
                ctx = self._context()
                return _plan(ctx, sql, params, self._tables(), as_of)
        from datafusion import SessionContext

        ctx = SessionContext()
        tables = self._tables()
        for table in tables.values():
            _register_table(ctx, table, as_of=as_of)
        _withdraw_ambiguous(ctx, tables)
        df = _plan(ctx, sql, params, tables, as_of)
        # A DataFrame does not own its session, and Delta tables scanned through DataFusion's
        # FFI fail once it is gone ("TaskContextProvider went out of scope"): keep it alive.
        df._rhei_session = ctx
        return df

    def query(self, sql: str, *, as_of: int | None = None) -> pa.Table:
        """Run ``sql`` and return all rows."""
        if not isinstance(sql, str) or not sql.strip():
            raise QueryError("query: SQL must be a non-empty string")
        df = self.dataframe(sql, as_of=as_of)
        try:
            table = df.to_arrow_table()
        except Exception as exc:
            raise translate_query_error(exc, sql=sql) from exc
        return normalize_types(table)

    def table_names(self) -> list[str]:
        names = []
        for name in sorted(self._tables()):
            names.extend([name, f"{name}_history", f"{name}_changes"])
        return names


def _plan(ctx, sql: str, params: dict[str, Any] | None, tables: dict[str, QueryTable], as_of: int | None):
    try:
        return ctx.sql_with_options(sql, _sql_options(), param_values=params)
    except Exception as exc:
        error = _explain_missing_view(translate_query_error(exc, sql=sql), tables, as_of)
        raise _explain_ambiguous(error, tables) from exc


def _withdraw_ambiguous(ctx, tables: dict[str, QueryTable]) -> None:
    """A name two tables' relations claim (``x_changes`` of ``x`` and table ``x_changes``) answers neither.

    Lakes written before such names were refused may hold both; whichever was
    registered last would win, silently. A query naming it fails instead.
    """
    clashes = {clash.name for clash in name_clashes(tables)}
    if not clashes:
        return
    for name in tables:
        for alias in _names(name):
            for view in (alias, f"{alias}_history", f"{alias}_changes"):
                if view.lower() in clashes and ctx.table_exist(q(view)):
                    ctx.deregister_table(q(view))


def _explain_ambiguous(error: QueryError, tables: dict[str, QueryTable]) -> QueryError:
    text = str(error).lower()
    for clash in name_clashes(tables):
        if re.search(rf"table '(?:[^']*\.)?{re.escape(clash.name)}' not found", text):
            return QueryError(
                f"{clash.describe()} in this lake (mirrored before rhei_lake refused such names), so it answers "
                "neither; their other names still work (see README, \"Names\")"
            )
    return error


def _explain_missing_view(error: QueryError, tables: dict[str, QueryTable], as_of: int | None) -> QueryError:
    """Say why a mirrored table has no ``t_history`` (nor, under ``as_of``, ``t``)."""
    text = str(error).lower()
    for table in tables.values():
        if not table.mirror:
            continue
        name = table.spec.name
        views = [f"{alias}_history" for alias in _names(name)]
        if as_of is not None:
            views += _names(name)
        for view in views:
            if re.search(rf"table '(?:[^']*\.)?{re.escape(view.lower())}' not found", text):
                readable = f"{name}_changes" if as_of is not None else f"{name} and {name}_changes"
                return QueryError(
                    f"table {name!r} is kept with sync_mode='mirror' (current rows only, no history): "
                    f"{'as_of queries' if as_of is not None else 'queries'} can read {readable}"
                )
    return error


def _source_base(table: str) -> str:
    # DataFusion parses a registered name as SQL and folds it to lower case: internal
    # names must be plain lower-case identifiers whatever the table is called.
    return f"__rhei_{table.encode().hex()}"


def _register_table(ctx, table: QueryTable, *, as_of: int | None) -> None:
    spec = table.spec
    base = _source_base(spec.name)
    changes_src = f"{base}__changes"
    table.changelog.register(ctx, changes_src)
    if table.mirror:
        _register_mirror(ctx, table, changes_src, as_of=as_of)
        return
    history_src = None
    if table.history is not None:
        history_src = f"{base}__history"
        table.history.register(ctx, history_src)
    sources = _unfolded_sources(ctx, table, changes_src, history=history_src)
    changes_view = ctx.sql(views.changes_sql(spec, sources, as_of))
    history_view = ctx.sql(views.history_sql(spec, sources, as_of))
    history_name = f"{base}__history_view"
    _put_view(ctx, history_name, history_view)
    current_view = ctx.sql(views.current_sql(spec, history_name))
    for alias in _names(spec.name):
        _put_view(ctx, f"{alias}_changes", changes_view)
        _put_view(ctx, f"{alias}_history", history_view)
        _put_view(ctx, alias, current_view)


def _unfolded_sources(
    ctx, table: QueryTable, changes_src: str, *, history: str | None = None, current: str | None = None
) -> views.ViewSources:
    """The view sources, with the events not yet folded read once here rather than at every query.

    Checked after the change feed is registered: the watermark only grows, so
    if it is still at the folded one, the registered feed holds nothing past it.
    """
    base = _source_base(table.spec.name)
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
        current_src = f"{_source_base(spec.name)}__current"
        table.current.register(ctx, current_src)
    sources = _unfolded_sources(ctx, table, changes_src, current=current_src)
    changes_view = ctx.sql(views.changes_sql(spec, sources, as_of))
    current_view = ctx.sql(views.mirror_current_sql(spec, sources)) if as_of is None else None
    for alias in _names(spec.name):
        _put_view(ctx, f"{alias}_changes", changes_view)
        if current_view is not None:
            _put_view(ctx, alias, current_view)


def _put_view(ctx, name: str, df) -> None:
    # Quoted: DataFusion parses the name as SQL, and would fold "Orders" to orders.
    if ctx.table_exist(q(name)):
        ctx.deregister_table(q(name))
    ctx.register_view(q(name), df)


_VIEW_TYPES = {pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with ``string_view``/``binary_view`` fields as ``string``/``binary``."""
    fields = [
        pa.field(f.name, _VIEW_TYPES[f.type], f.nullable, f.metadata) if f.type in _VIEW_TYPES else f
        for f in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)


def normalize_types(table: pa.Table) -> pa.Table:
    """Results use ``string``/``binary`` whatever view types the scan produced."""
    schema = normalize_schema(table.schema)
    if schema.equals(table.schema):
        return table
    return table.cast(schema)


