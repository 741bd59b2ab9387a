"""The lake: a captured source, its storage and a query session, behind one object."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from rhei_lake.capture.sqlite_db import connect, translate_sqlite_error
from rhei_lake.capture.polled_source import open_polled_source
from rhei_lake.capture.source_url import parse_source_url
from rhei_lake.capture.trigger_source import TriggerSource
from rhei_lake.catalog import TableSpec
from rhei_lake.config import LakeConfig, build_config
from rhei_lake.errors import ReadOnlySourceError, RheiError, SchemaError, SourceError
from rhei_lake.query.engine import QueryEngine, QueryTable
from rhei_lake.storage.changelog import Changelog
from rhei_lake.storage.lake_storage import LakeStorage, open_storage
from rhei_lake.storage.location import parse_storage_url, resolve_s3_options
from rhei_lake.sync.polling_sync import PollingSync
from rhei_lake.sync.report import SyncReport
from rhei_lake.sync.tables import read_spec
from rhei_lake.sync.trigger_sync import ProgressCallback, TriggerSync
from rhei_lake.timeutil import Instant, to_micros

log = logging.getLogger("rhei_lake")


class Lake:
    """A durable, queryable, time-travelling mirror of a database.

    Create one with :func:`rhei_lake.open`. With ``oltp_path`` it owns that
    SQLite database (HTAP mode): writes go through :meth:`execute`, registered
    tables are captured by triggers and :meth:`sync_now` commits their changes.
    With only ``storage`` it opens an existing lake read-only, for queries and
    maintenance.
    """

    def __init__(self, config: LakeConfig, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        location = parse_storage_url(config.storage, config.storage_options)
        if location.scheme == "s3":
            location = location.with_options(resolve_s3_options(config.storage_options, environ or {}))
        self.location = location
        self.storage: LakeStorage = open_storage(location)
        self._lock = threading.RLock()
        self._closed = False
        self._oltp: sqlite3.Connection | None = None
        self._sync: TriggerSync | PollingSync | None = None
        self._readonly_tables: dict[str, tuple[TableSpec, Changelog]] = {}
        try:
            if config.oltp_path is not None:
                source = TriggerSource(config.oltp_path)
                self._sync = TriggerSync(source, self.storage, config)
                self._oltp = connect(config.oltp_path)
                self._oltp.execute("PRAGMA recursive_triggers = ON")
                self._sync.attach()
            elif config.source is not None:
                self._sync = PollingSync(open_polled_source(parse_source_url(config.source)), self.storage, config)
                self._sync.attach()
            else:
                self._discover()
        except BaseException:
            self._release()
            raise
        self._queries = QueryEngine(self._query_tables)

    # -- catalog ---------------------------------------------------------
    def _discover(self) -> None:
        for name in self.storage.list_tables():
            spec = read_spec(self.storage, name)
            changelog = self.storage.changelog(
                name, flush_segments=self.config.tail_flush_segments, flush_rows=self.config.tail_flush_rows
            )
            changelog.load()
            self._readonly_tables[name] = (spec, changelog)

    def _entries(self) -> dict[str, tuple[TableSpec, Changelog]]:
        if self._sync is not None:
            specs = self._sync.specs
            return {name: (specs[name], cl) for name, cl in self._sync.changelogs.items() if name in specs}
        return dict(self._readonly_tables)

    def _query_tables(self) -> dict[str, QueryTable]:
        return {name: QueryTable(spec, changelog) for name, (spec, changelog) in self._entries().items()}

    def tables(self) -> list[str]:
        """Names of the mirrored tables."""
        return sorted(self._entries())

    def table_spec(self, table: str) -> TableSpec:
        """Columns, declared and Arrow types, primary key and source of a mirrored table."""
        entries = self._entries()
        if table not in entries:
            matches = [n for n in entries if n.lower() == table.lower()]
            if not matches:
                raise SchemaError(f"no mirrored table {table!r}; known: {sorted(entries) or 'none'}")
            table = matches[0]
        return entries[table][0]

    def refresh(self) -> None:
        """Pick up commits other processes made to this lake (read-only lakes do it before each query)."""
        self._check_open()
        with self._lock:
            if self._sync is None:
                known = set(self._readonly_tables)
                for name, (_spec, changelog) in list(self._readonly_tables.items()):
                    changelog.load()
                if set(self.storage.list_tables()) != known:
                    self._readonly_tables.clear()
                    self._discover()

    # -- writes (HTAP) ---------------------------------------------------
    def _require_oltp(self, what: str) -> sqlite3.Connection:
        self._check_open()
        if isinstance(self._sync, PollingSync):
            raise ReadOnlySourceError(
                f"{what}: this lake follows {self._sync.source.location.masked} read-only (sidecar mode); "
                "write to that database directly and sync_now() picks the changes up"
            )
        if self._oltp is None:
            raise SourceError(f"{what} needs an OLTP database: open the lake with oltp_path=")
        return self._oltp

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        """Run one SQL statement on the SQLite database; returns the number of rows changed."""
        conn = self._require_oltp("execute()")
        with self._lock:
            try:
                cursor = conn.execute(sql, params)
                cursor.fetchall()
                return max(cursor.rowcount, 0)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.config.oltp_path or "") from exc

    def register_table(
        self,
        name: str,
        *,
        types: Mapping[str, str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> TableSpec:
        """Mirror table ``name``: capture its changes from now on and commit its existing rows once.

        The primary key and Arrow schema come from the table's declaration;
        ``types`` overrides declared types by column (e.g. for untyped columns).
        """
        self._require_oltp("register_table()")
        assert self._sync is not None
        with self._lock:
            return self._sync.register(name, types=types, progress=progress)

    def sync_now(self, *, progress: ProgressCallback | None = None) -> SyncReport:
        """Commit every captured change to the store; returns once it is committed.

        In sidecar mode ``progress(table, rows_done, rows_total)`` is called as
        polled rows are committed (the first sync of a big table takes a while).
        """
        self._check_open()
        if self._sync is None:
            raise SourceError("sync_now() needs a source: open the lake with oltp_path= or source=")
        if isinstance(self._sync, PollingSync):
            return self._sync.sync_now(progress)
        return self._sync.sync_now()

    def flush(self) -> int:
        """Fold every table's hot-path tail into its Delta changelog now; returns rows moved."""
        self._check_open()
        with self._lock:
            if self._sync is not None:
                return self._sync.flush()
            return sum(cl.flush() for _spec, cl in self._readonly_tables.values())

    # -- reads -----------------------------------------------------------
    def query(self, sql: str, *, as_of: Instant | None = None) -> pa.Table:
        """Run read-only SQL over the lake; returns a ``pyarrow.Table``.

        Each mirrored table ``t`` is queryable as ``t`` (current rows),
        ``t_history`` (SCD2 versions) and ``t_changes`` (the change feed).
        ``as_of`` (datetime, ISO 8601 string or epoch seconds) makes them mean
        their state at that instant.
        """
        self._check_open()
        micros = to_micros(as_of) if as_of is not None else None
        if self._sync is None:
            self.refresh()
        return self._queries.query(sql, as_of=micros)

    # -- lifecycle -------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RheiError("this lake is closed")

    def close(self) -> None:
        """Release connections; the CDC log is pruned of everything committed."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        errors = []
        if self._sync is not None:
            try:
                self._sync.close()
            except RheiError as exc:
                errors.append(exc)
        if self._oltp is not None:
            self._oltp.close()
        if self.location.scheme == "memory" and self.location.url == "memory://":
            from rhei_lake.storage.memory import MemoryLakeRegistry

            MemoryLakeRegistry.drop_lake(self.location.root)
        if errors:
            log.warning("closing the lake: %s", errors[0])

    def __enter__(self) -> Lake:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = f"oltp_path={self.config.oltp_path!r}" if self.config.oltp_path else "read-only"
        if isinstance(self._sync, PollingSync):
            mode = f"source={self._sync.source.location.masked!r}"
        return f"<Lake {self.location.url} {mode} tables={self.tables() if not self._closed else 'closed'}>"


def open(config: LakeConfig | Mapping[str, Any] | None = None, /, **options: Any) -> Lake:  # noqa: A001
    """Open a lake.

    ``rhei_lake.open(oltp_path="app.db", storage="./lake")`` owns ``app.db`` and
    mirrors it into ``./lake``; ``rhei_lake.open(storage="s3://bucket/lake")``
    opens an existing lake for queries. Options are the fields of
    :class:`~rhei_lake.LakeConfig`; a ``LakeConfig`` (or a mapping) may be
    passed first and keyword options override it. Invalid values raise
    :class:`~rhei_lake.errors.ConfigError` naming the field. S3 credentials and
    endpoint come from ``storage_options`` or the usual ``AWS_*`` variables.
    """
    cfg = build_config(config, **options)
    return Lake(cfg, environ=os.environ)
