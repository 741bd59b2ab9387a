"""The async API: :class:`AsyncLake`, the same methods as :class:`~rhei_lake.Lake` as coroutines.

Works under asyncio and trio (through anyio)::

    async with await rhei_lake.aio.open(oltp_path="app.db", storage="./lake") as lake:
        await lake.execute("INSERT INTO orders VALUES (1, 99)")
        await lake.sync_now()
        table = await lake.query("SELECT SUM(total) FROM orders")

Every call runs the blocking work (SQLite, object storage, DataFusion) in a
worker thread, so the event loop never blocks. Cancelling a call waits for
that thread to finish its step first: a commit is never abandoned half-way,
and the cancellation takes effect as soon as it returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pyarrow as pa

from rhei_lake.catalog import TableSpec
from rhei_lake.compaction.report import CompactionReport
from rhei_lake.config import LakeConfig
from rhei_lake.lake import Lake
from rhei_lake.lake import open as _open_lake
from rhei_lake.query.router import Route
from rhei_lake.restore import RestoreReport
from rhei_lake.sync.report import SyncReport
from rhei_lake.sync.status import SyncStatus
from rhei_lake.timeutil import Instant

__all__ = ["AsyncLake", "open"]

T = TypeVar("T")


async def _run(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def open(config: LakeConfig | Mapping[str, Any] | None = None, /, **options: Any) -> AsyncLake:  # noqa: A001
    """Open a lake without blocking the event loop; options as :func:`rhei_lake.open`.

    Like every call here, opening is not abandoned half-way when the caller is
    cancelled: the lake is returned and the cancellation arrives at the next
    checkpoint, so ``async with await rhei_lake.aio.open(...)`` always closes it.
    """
    return AsyncLake(await _run(_open_lake, config, **options))


class AsyncLake:
    """A :class:`~rhei_lake.Lake` whose methods are coroutines. ``.lake`` is the blocking object."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake

    async def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        """See :meth:`rhei_lake.Lake.execute`."""
        return await _run(self.lake.execute, sql, params)

    async def execute_batch(self, statements: Iterable[Any]) -> int:
        """See :meth:`rhei_lake.Lake.execute_batch`."""
        return await _run(self.lake.execute_batch, list(statements))

    async def query(self, sql: str, *, as_of: Instant | None = None, hint: str | None = None) -> pa.Table:
        """See :meth:`rhei_lake.Lake.query`."""
        return await _run(self.lake.query, sql, as_of=as_of, hint=hint)

    async def explain_route(self, sql: str, *, as_of: Instant | None = None, hint: str | None = None) -> Route:
        """See :meth:`rhei_lake.Lake.explain_route`."""
        return await _run(self.lake.explain_route, sql, as_of=as_of, hint=hint)

    async def register_table(self, name: str, **options: Any) -> TableSpec:
        """See :meth:`rhei_lake.Lake.register_table`."""
        return await _run(self.lake.register_table, name, **options)

    async def sync_now(self) -> SyncReport:
        """See :meth:`rhei_lake.Lake.sync_now`."""
        return await _run(self.lake.sync_now)

    async def repair_event(self, table: str, seq: int, values: Mapping[str, Any]) -> None:
        """See :meth:`rhei_lake.Lake.repair_event`."""
        await _run(self.lake.repair_event, table, seq, values)

    async def flush(self) -> int:
        """See :meth:`rhei_lake.Lake.flush`."""
        return await _run(self.lake.flush)

    async def refresh(self) -> None:
        """See :meth:`rhei_lake.Lake.refresh`."""
        await _run(self.lake.refresh)

    async def unregister_table(self, table: str) -> None:
        """See :meth:`rhei_lake.Lake.unregister_table`."""
        await _run(self.lake.unregister_table, table)

    async def add_column(self, table: str, column: str, sql_type: str) -> TableSpec:
        """See :meth:`rhei_lake.Lake.add_column`."""
        return await _run(self.lake.add_column, table, column, sql_type)

    async def drop_column(self, table: str, column: str) -> TableSpec:
        """See :meth:`rhei_lake.Lake.drop_column`."""
        return await _run(self.lake.drop_column, table, column)

    async def start_sync(self, interval: float | None = None) -> None:
        """See :meth:`rhei_lake.Lake.start_sync`."""
        await _run(self.lake.start_sync, interval)

    async def stop_sync(self) -> None:
        """See :meth:`rhei_lake.Lake.stop_sync` (waits for a cycle in progress, off the event loop)."""
        await _run(self.lake.stop_sync)

    async def sync_status(self) -> SyncStatus:
        """See :meth:`rhei_lake.Lake.sync_status`."""
        return await _run(self.lake.sync_status)

    async def restore_sqlite(
        self, path: str, as_of: Instant | None = None, tables: Iterable[str] | None = None, **options: Any
    ) -> RestoreReport:
        """See :meth:`rhei_lake.Lake.restore_sqlite`."""
        return await _run(self.lake.restore_sqlite, path, as_of, tables, **options)

    async def compact(self, tables: Iterable[str] | None = None, **options: Any) -> CompactionReport:
        """See :meth:`rhei_lake.Lake.compact`."""
        return await _run(self.lake.compact, tables, **options)

    async def tables(self) -> list[str]:
        """See :meth:`rhei_lake.Lake.tables`."""
        return await _run(self.lake.tables)

    async def table_spec(self, table: str) -> TableSpec:
        """See :meth:`rhei_lake.Lake.table_spec`."""
        return await _run(self.lake.table_spec, table)

    async def close(self, *, final_sync: bool | None = None) -> None:
        """See :meth:`rhei_lake.Lake.close`."""
        await _run(self.lake.close, final_sync=final_sync)

    async def __aenter__(self) -> AsyncLake:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):  # closing must finish even when the task is being cancelled
            await self.close()

    def __repr__(self) -> str:
        return f"<AsyncLake of {self.lake!r}>"
