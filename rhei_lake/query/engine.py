"""One DataFusion session per lake, with each table's views kept fresh.

Every mirrored table ``t`` is queryable as ``t`` (current rows), ``t_history``
(every version) and ``t_changes`` (the raw change feed). The session is
refreshed lazily: before a query, tables whose changelog moved since the last
query are re-registered, so queries see everything committed so far without
paying for tables that did not change.

The analytic path is read-only: DDL, DML and ``SET`` are refused before planning.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rhei_lake.catalog import TableSpec
from rhei_lake.errors import QueryError, translate_query_error
from rhei_lake.query import views
from rhei_lake.storage.base import TableStore
from rhei_lake.storage.changelog import Changelog


@dataclass
class QueryTable:
    """What the query layer needs of one mirrored table."""

    spec: TableSpec
    changelog: Changelog
    history: TableStore | None = None
    folded: int = 0

    def generation(self) -> tuple[int, int, int]:
        hist_version = self.history.version() if self.history is not None else -1
        return (self.changelog.generation, hist_version, self.folded)


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
        self._generations: dict[str, tuple[int, int, int]] = {}

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
            return self._ctx

    def _drop(self, ctx, name: str) -> None:
        for alias in _names(name):
            for view in (alias, f"{alias}_history", f"{alias}_changes"):
                if ctx.table_exist(view):
                    ctx.deregister_table(view)
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
                return _plan(self._context(), sql, params)
        from datafusion import SessionContext

        ctx = SessionContext()
        for table in self._tables().values():
            _register_table(ctx, table, as_of=as_of)
        df = _plan(ctx, sql, params)
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


def _plan(ctx, sql: str, params: dict[str, Any] | None):
    try:
        return ctx.sql_with_options(sql, _sql_options(), param_values=params)
    except Exception as exc:
        raise translate_query_error(exc, sql=sql) from exc


def _register_table(ctx, table: QueryTable, *, as_of: int | None) -> None:
    spec = table.spec
    base = f"__rhei_{spec.name}"
    changes_src = f"{base}__changes"
    table.changelog.register(ctx, changes_src)
    history_src = None
    if table.history is not None:
        history_src = f"{base}__history"
        table.history.register(ctx, history_src)
    sources = views.ViewSources(changes=changes_src, history=history_src, folded=table.folded)
    changes_view = ctx.sql(views.changes_sql(spec, sources, as_of))
    history_view = ctx.sql(views.history_sql(spec, sources, as_of))
    history_name = f"{base}__history_view"
    _put_view(ctx, history_name, history_view)
    current_view = ctx.sql(views.current_sql(spec, history_name))
    for alias in _names(spec.name):
        _put_view(ctx, f"{alias}_changes", changes_view)
        _put_view(ctx, f"{alias}_history", history_view)
        _put_view(ctx, alias, current_view)


def _put_view(ctx, name: str, df) -> None:
    if ctx.table_exist(name):
        ctx.deregister_table(name)
    ctx.register_view(name, df)


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


