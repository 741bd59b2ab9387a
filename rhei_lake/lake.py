"""The lake: a captured source, its storage and a query session, behind one object."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from rhei_lake.capture import oltp_writes, schema_watch
from rhei_lake.capture.log_watch import LogWatch, application_tables
from rhei_lake.capture.oltp_writes import Statement
from rhei_lake.capture.polled_source import open_polled_source
from rhei_lake.capture.source_url import parse_source_url
from rhei_lake.capture.sqlite_db import connect
from rhei_lake.capture.trigger_source import TriggerSource
from rhei_lake.catalog import TableSpec
from rhei_lake.compaction.derived import DerivedTable, DerivedTables
from rhei_lake.compaction.job import CompactionOptions, CompactionProgress, CompactionTarget, compact, select_targets
from rhei_lake.compaction.report import CompactionReport
from rhei_lake.config import LakeConfig, build_config
from rhei_lake._shared.identifiers import quote_ident
from rhei_lake.errors import (
    ConfigError,
    LakeClosedError,
    QueryError,
    ReadOnlySourceError,
    RheiError,
    SchemaError,
    SourceError,
    StorageError,
    TableNotReadyError,
    TypeMismatchError,
)
from rhei_lake.query.engine import QueryEngine, QueryTable
from rhei_lake.query.followed_tables import FollowedTables
from rhei_lake.query.references import referenced_names
from rhei_lake.query.oltp_reader import OltpReader
from rhei_lake.query.router import Route, route
from rhei_lake.relation_names import check_new_table, relation_names, tables_named
from rhei_lake.restore import RestoreReport, restore_sqlite
from rhei_lake.storage.changelog import Changelog
from rhei_lake.storage.writer_lease import WriterLease
from rhei_lake.storage.lake_storage import LakeStorage, open_storage
from rhei_lake.storage.location import parse_storage_url, resolve_s3_options
from rhei_lake.sync import evolution
from rhei_lake.sync.binding import DatabaseBinding
from rhei_lake.sync.contract import ProgressCallback, Sync
from rhei_lake.sync.loop import SyncLoop
from rhei_lake.sync.polling_sync import PollingSync
from rhei_lake.sync.report import SyncReport
from rhei_lake.sync.status import SyncListener, SyncStatus, SyncTracker, collect_status
from rhei_lake.sync.trigger_sync import TriggerSync
from rhei_lake.timeutil import Duration, Instant, to_micros

log = logging.getLogger("rhei_lake")
T = TypeVar("T")

_KEY_LOOKUP_BATCH = 200
_UNFINISHED_ELSEWHERE = (
    "its registration has not finished: the lake that syncs it holds no snapshot of it yet (that lake's "
    "sync_status().waiting says why)"
)
ROUTE_METADATA_KEY = b"rhei.route"
"""Key of the route (``oltp``/``olap``) in the schema metadata of every ``query()`` result."""


def _snapshot_landed(spec: TableSpec, changelog: Changelog) -> bool:
    """Whether a table another process registered is mirrored: a captured table's snapshot commits a watermark,
    so without one its registration never finished."""
    return spec.source != TriggerSource.kind or changelog.watermark > 0


@dataclass
class ReturnedRows:
    """What :meth:`Lake.execute_returning` kept: the returned columns and rows, and the rows changed."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    changed: int


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
        self._sync: Sync | None = None
        self._reader: OltpReader | None = None
        self._loop: SyncLoop | None = None
        self._tracker = SyncTracker()
        self._readonly_tables: dict[str, tuple[TableSpec, Changelog]] = {}
        self._lease: WriterLease | None = None
        self._binding: DatabaseBinding | None = None
        self._watch: LogWatch | None = None
        self._created: set[str] = set()  # tables created inside a transaction, registered once it commits
        self._derived = DerivedTables(self.storage)
        self._followed = FollowedTables(
            self.storage, config, self._derived, self._readonly_tables, ready=_snapshot_landed
        )
        self._store_verified = False
        self._duckdb = None
        try:
            if (
                (config.oltp_path is not None or config.source is not None)
                and location.url != "memory://"
                and not config.read_only
            ):
                self._verify_store()
                self._lease = WriterLease(self.storage.blobs, ttl=config.lease_ttl, wait=config.lease_wait)
                self._lease.acquire()
            if config.read_only:
                self._open_read_only()
            elif config.oltp_path is not None:
                self._binding = DatabaseBinding.bind(config.oltp_path, self.storage)  # before anything writes there
                source = TriggerSource(config.oltp_path, columnar_min_rows=config.columnar_min_rows)
                self._sync = TriggerSync(source, self.storage, config, lake_keys=self._lake_keys)
                self._oltp = connect(config.oltp_path)
                self._oltp.execute("PRAGMA recursive_triggers = ON")
                self._sync.attach()
                self._reader = OltpReader(config.oltp_path)
            elif config.source is not None:
                self._sync = PollingSync(open_polled_source(parse_source_url(config.source)), self.storage, config)
                self._sync.attach()
            else:
                self._discover()
            self._queries = QueryEngine(
                self._query_tables, self.tables, look_again=self._look_again, new_session=self._query_session()
            )
            if config.sync_interval is not None:
                self.start_sync(config.sync_interval)
        except BaseException:
            self._release()
            raise

    def _query_session(self) -> Callable[[], Any] | None:
        """What makes the engine's sessions: ``None`` for DataFusion; DuckDB sessions share one database."""
        if self.config.engine != "duckdb":
            return None
        from rhei_lake.query.duckdb_session import DuckSession, open_database

        location = self.location
        database = open_database(location.scheme, location.root, location.options)
        self._duckdb = database
        return lambda: DuckSession(database)

    def _verify_store(self) -> None:
        """Before the first write: refuse an S3-compatible store that ignores put-if-absent (see storage.write_probe)."""
        if self._store_verified or self.location.scheme != "s3" or self.config.conditional_writes == "single_writer":
            return
        from rhei_lake.storage.s3_blobs import S3Blobs
        from rhei_lake.storage.write_probe import verify_conditional_writes

        blobs = self.storage.blobs
        if not isinstance(blobs, S3Blobs):  # an s3:// location's storage always keeps its blobs in S3Blobs
            raise StorageError(f"{self.location.url}: expected S3 blobs, found {type(blobs).__name__}")
        verify_conditional_writes(blobs, endpoint=self.location.options.get("AWS_ENDPOINT_URL"))
        self._store_verified = True

    def _leased(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``work`` (which commits to the lake) if this process still holds the writer lease.

        Another process that took the lease over stops this one with a terminal
        LeaseLostError: retrying cannot help, and the background loop must stop.
        """
        if self._lease is not None:
            self._lease.ensure()
        if self._binding is not None:
            self._binding.ensure()  # the database was detached while the lake ran: stop, as for a lost lease
        return work(*args, **kwargs)

    def _lake_leased(self, work: Callable[..., T]) -> T:
        """:meth:`_leased` for work on the lake alone (folding committed events into Delta): no database needed."""
        if self._lease is not None:
            self._lease.ensure()
        return work()

    def _open_read_only(self) -> None:
        """Tables from the lake alone; point reads and lag from ``oltp_path`` if set, never written to."""
        self._discover()
        path = self.config.oltp_path
        if path is not None:
            if not os.path.isfile(path):
                raise SourceError(f"SQLite database {path!r} does not exist")
            self._reader = OltpReader(path)
            self._watch = LogWatch(path)

    # -- catalog ---------------------------------------------------------
    def _discover(self) -> None:
        self._followed.discover()

    def _waiting(self) -> dict[str, str]:
        """Tables registered but not mirrored (their registration did not finish), with why and the way on."""
        if self._sync is not None:
            return {name: str(error) for name, error in self._sync.waiting.items()}
        return dict.fromkeys(self._followed.waiting, _UNFINISHED_ELSEWHERE)

    def _not_ready(self, table: str) -> TableNotReadyError:
        reason = self._sync.waiting.get(table) if self._sync is not None else None
        why = str(reason) if reason is not None else self._waiting().get(table, "its registration has not finished")
        way = (
            ""
            if isinstance(reason, TypeMismatchError)
            else (
                f" Call lake.register_table({table!r}) again to take its snapshot anew." if reason is not None else ""
            )
        )
        return TableNotReadyError(
            f"table {table!r} is registered but not mirrored: its registration did not finish, so the lake holds "
            f"none of its rows and answers no query on it. The registration stopped with: {why}.{way}",
            table=table,
            reason=reason,
        )

    def _refuse_waiting(self, sql: str) -> None:
        """Raise TableNotReadyError if ``sql`` names a relation of a table whose registration did not finish."""
        waiting = self._waiting()
        if not waiting or not self._names_waiting(sql, waiting):
            return
        if self._sync is None:  # its snapshot may have landed since the last look
            self._followed.freshen(referenced_names(sql), discover=True)
            waiting = self._waiting()
        named = tables_named(sql, waiting)
        if named:
            raise self._not_ready(named[0])

    @staticmethod
    def _names_waiting(sql: str, waiting: Iterable[str]) -> bool:
        """Whether ``sql`` may name a relation of a waiting table (an identifier scan, before any parse)."""
        names = referenced_names(sql)
        return names is None or any(name.lower() in names for table in waiting for name, _ in relation_names(table))

    def _explain_waiting(self, error: QueryError) -> QueryError:
        """A relation the lake does not know, of a table that waits for its registration: say so."""
        waiting = self._waiting()
        text = str(error).lower()
        for table in waiting:
            for name, _ in relation_names(table):
                if re.search(rf"table '(?:[^']*\.)?{re.escape(name.lower())}' not found", text):
                    return self._not_ready(table)
        return error

    def _lake_keys(self, table: str, keys: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
        """Which of ``keys`` (lake values in primary-key order) the lake's current rows of ``table`` hold."""
        names = list(self.table_spec(table).primary_key)
        found: set[tuple[Any, ...]] = set()
        for start in range(0, len(keys), _KEY_LOOKUP_BATCH):
            chunk = keys[start : start + _KEY_LOOKUP_BATCH]
            params: dict[str, Any] = {}
            alternatives = []
            for key in chunk:
                terms = []
                for name, value in zip(names, key):
                    params[str(len(params) + 1)] = value
                    terms.append(f"{quote_ident(name)} = ${len(params)}")
                alternatives.append("(" + " AND ".join(terms) + ")")
            select = ", ".join(quote_ident(n) for n in names)
            sql = f"SELECT {select} FROM {quote_ident(table)} WHERE {' OR '.join(alternatives)}"
            rows = self._queries.dataframe(sql, params=params).to_arrow_table().to_pylist()
            found.update(tuple(row[n] for n in names) for row in rows)
        return found

    def _entries(self) -> dict[str, tuple[TableSpec, Changelog]]:
        if self._sync is not None:
            specs = self._sync.specs
            return {name: (specs[name], cl) for name, cl in self._sync.changelogs.items() if name in specs}
        return dict(self._readonly_tables)

    def _derived_table(self, spec: TableSpec) -> DerivedTable:
        # HTAP lakes keep tables in the configured mode (checked when attached); read-only
        # lakes use the mode each table recorded.
        return self._derived.get(spec, self.config.sync_mode if self._sync is not None else None)

    def _query_tables(self, only: Collection[str] | None = None) -> dict[str, QueryTable]:
        return {
            name: QueryTable.of(spec, changelog, self._derived_table(spec))
            for name, (spec, changelog) in self._entries().items()
            if only is None or name in only
        }

    def tables(self) -> list[str]:
        """Names of the mirrored tables.

        A table whose registration did not finish is not one (``sync_status().waiting`` names it).
        """
        return sorted(self._entries())

    def table_spec(self, table: str) -> TableSpec:
        """Columns, declared and Arrow types, primary key and source of a mirrored table.

        Raises TableNotReadyError for a table whose registration did not finish.
        """
        entries = self._entries()
        if table not in entries:
            matches = [n for n in entries if n.lower() == table.lower()]
            if not matches:
                waiting = [n for n in self._waiting() if n.lower() == table.lower()]
                if waiting:
                    raise self._not_ready(waiting[0])
                raise SchemaError(f"no mirrored table {table!r}; known: {sorted(entries) or 'none'}")
            table = matches[0]
        return entries[table][0]

    def refresh(self) -> None:
        """Pick up commits other processes made to this lake now, such as a compaction job's.

        A read-only lake does it by itself for the tables a query reads, at most
        every ``refresh_interval`` seconds; see docs/time-travel-and-compaction.md, "Query serving and freshness".
        """
        self._check_open()
        with self._lock:
            if self._sync is not None:
                self._derived.load_all()  # before the changelogs: they then hold at least what was folded
                for changelog in self._sync.changelogs.values():
                    changelog.load()
            else:
                self._followed.refresh()

    def _follow(self, sql: str) -> None:
        """Before a read-only lake's query: look at the store for what ``sql`` reads, if due."""
        if self._sync is None:
            self._followed.freshen(referenced_names(sql))

    def _look_again(self, sql: str, missing: str) -> None:
        """After a query found a ``"file"`` gone (another process compacted and vacuumed) or a
        ``"table"`` unknown (another process registered it): look now."""
        if self._sync is None:
            self._followed.freshen(referenced_names(sql), force=True, discover=missing == "table")
        elif missing == "file":
            self.refresh()

    # -- writes (HTAP) ---------------------------------------------------
    def _require_oltp(self, what: str) -> sqlite3.Connection:
        self._check_open()
        self._refuse_read_only(what)
        source = self._sync.read_only_source if self._sync is not None else None
        if source is not None:
            raise ReadOnlySourceError(
                f"{what}: this lake follows {source} read-only (sidecar mode); "
                "write to that database directly and sync_now() picks the changes up"
            )
        if self._oltp is None:
            raise SourceError(f"{what} needs an OLTP database: open the lake with oltp_path=")
        return self._oltp

    def _refuse_read_only(self, what: str) -> None:
        if self.config.read_only:
            raise SourceError(f"{what}: this lake is open read-only (read_only=True): it never writes or syncs")

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        """Run one SQL statement on the SQLite database; returns the number of rows it changed.

        With ``auto_register``, a table it creates is mirrored once the statement commits.
        """
        conn = self._require_oltp("execute()")
        with self._lock:
            before = self._tables_before(conn, [sql])
            changed = oltp_writes.execute(conn, sql, params, mirrored=self._entries(), path=self.config.oltp_path or "")
            self._register_created(conn, before)
            return changed

    def execute_returning(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> ReturnedRows:
        """Run one SQL statement as :meth:`execute` does, keeping the rows it returns.

        For a write with a ``RETURNING`` clause: the rows come back as SQLite
        returned them (Python values, no lake types), with the rows changed.
        """
        conn = self._require_oltp("execute_returning()")
        kept = ReturnedRows(columns=[], rows=[], changed=0)

        def keep(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
            kept.columns[:] = columns
            kept.rows[:] = rows

        with self._lock:
            before = self._tables_before(conn, [sql])
            kept.changed = oltp_writes.execute(
                conn, sql, params, mirrored=self._entries(), path=self.config.oltp_path or "", returned=keep
            )
            self._register_created(conn, before)
        return kept

    def execute_batch(self, statements: Iterable[Statement]) -> int:
        """Run many statements in one SQLite transaction, all or nothing; returns the rows changed.

        Each statement is SQL text or a ``(sql, params)`` pair. If one fails,
        none is applied and the error names the failing statement. Far faster
        than one :meth:`execute` per statement (one commit instead of many).
        """
        conn = self._require_oltp("execute_batch()")
        statements = list(statements)
        with self._lock:
            before = self._tables_before(conn, [s[0] if isinstance(s, tuple) and s else s for s in statements])
            mirrored = {name: spec for name, (spec, _) in self._entries().items()}
            nested = conn.in_transaction
            rebuilt: set[str] = set()

            def refuse_unfollowable(conn: sqlite3.Connection, dropped: set[str]) -> None:
                # ALTER TABLE of a mirrored table is refused, so only a DROP (a rebuild) changes one here
                drifts = schema_watch.judge(conn, {name: mirrored[name] for name in dropped})
                refused = [d for d in drifts if d.action == "refuse"]
                if refused:
                    raise refused[0].batch_error()
                rebuilt.update(dropped)

            changed = oltp_writes.execute_batch(
                conn, statements, mirrored=mirrored, path=self.config.oltp_path or "", check=refuse_unfollowable
            )
            if rebuilt and not nested:
                self._follow_schema_now()
            self._register_created(conn, before)
            return changed

    def _tables_before(self, conn: sqlite3.Connection, sql: Sequence[Any]) -> set[str] | None:
        """The database's tables before statements that may create one run (``auto_register`` only)."""
        if not self.config.auto_register or not any(isinstance(s, str) and "create" in s.lower() for s in sql):
            return None
        return set(application_tables(conn))

    def _register_created(self, conn: sqlite3.Connection, before: set[str] | None) -> None:
        """Mirror the tables created since ``before``, once no transaction is open on ``conn``.

        A table that cannot be mirrored (no primary key, a column without a
        type) stays as it is, with a warning naming the reason: the statement
        that created it has committed.
        """
        if before is None and not self._created:
            return
        if before is not None:
            self._created |= set(application_tables(conn)) - before
        if conn.in_transaction or not self._created:
            return
        created, self._created = self._created, set()
        existing = set(application_tables(conn))
        for name in sorted(created & existing):
            try:
                self.register_table(name)
            except RheiError as exc:
                log.warning("table %r was created but is not mirrored: %s", name, exc)

    def unmirrored_tables(self) -> list[str]:
        """Tables of the SQLite database (``oltp_path``) that this lake does not mirror."""
        self._check_open()
        if self.config.oltp_path is None or not os.path.isfile(self.config.oltp_path):
            return []
        mirrored = {name.lower() for name in self._entries()}
        conn = self._oltp
        if conn is not None:
            with self._lock:
                names = application_tables(conn)
        else:
            with closing(connect(self.config.oltp_path, create=False)) as reader:
                names = application_tables(reader)
        return [name for name in names if name.lower() not in mirrored]

    def _follow_schema_now(self) -> None:
        """Follow a rebuild this lake's own batch committed at once, before another write can come in blind."""
        sync = self._trigger_sync("a schema change")
        try:
            self._leased(sync.follow_schema)
        except RheiError as exc:  # the batch is committed; the next sync follows (or refuses) it
            log.warning("the schema change is followed at the next sync: %s", exc)
        finally:
            self._reload_schema()

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
        Called again for a registered table, ``types=None`` keeps the types it
        was registered with (``{}``: the declared ones). Types change only
        while the registration is unfinished (its snapshot refused): a mirrored
        table is refused with a :class:`~rhei_lake.errors.SchemaError`.
        """
        self._require_oltp("register_table()")
        sync = self._trigger_sync("register_table()")
        with self._lock:
            known = {*sync.source.registrations(), *self.storage.list_tables()}
            check_new_table(name, [t for t in known if t.lower() != name.lower()])  # SQLite: one table, any case
            return self._leased(sync.register, name, types=types, progress=progress)

    def unregister_table(self, table: str) -> None:
        """Stop mirroring ``table``: what was captured is committed, then its triggers are dropped.

        Its Delta tables stay in the lake's storage, with its history up to now
        (``rhei_lake.open(storage=URL)`` reads them), but this lake no longer
        lists it. The way on when a table was dropped for good, or changed in a
        way the lake cannot follow (see docs/htap-api.md, "Schema evolution").
        Registering it again in this lake (with any ``types``) is then refused;
        the error names the new lake that takes it.
        """
        sync = self._evolving("unregister_table()")
        with self._lock:
            self._leased(sync.unregister, table)

    def sync_now(self, *, progress: ProgressCallback | None = None) -> SyncReport:
        """Commit every captured change to the store; returns once it is committed.

        In sidecar mode ``progress(table, rows_done, rows_total)`` is called as
        polled rows are committed (the first sync of a big table takes a while).
        """
        self._check_open()
        self._refuse_read_only("sync_now()")
        if self._sync is None:
            raise SourceError("sync_now() needs a source: open the lake with oltp_path= or source=")
        sync = self._sync
        return self._tracker.run(lambda: self._leased(sync.sync_now, progress))

    def repair_event(self, table: str, seq: int, values: Mapping[str, Any]) -> None:
        """Correct a captured change event that stops the sync with a TypeMismatchError.

        SQLite lets a column declared ``INTEGER`` hold ``'abc'``; such an event
        stops the sync (nothing after it is committed, nothing is skipped), and
        fixing the row later adds a new event but leaves the bad one in the CDC
        log. This replaces the named values of that one event (``seq`` is in the
        error) with ones that fit the declared types; the change is logged.
        """
        sync = self._evolving("repair_event()")
        with self._lock:
            replaced = sync.repair_event(table, seq, values)
        log.warning("repaired event %d of table %r: %r replaced by %r", seq, table, replaced, dict(values))

    def initial_sync(self, table: str) -> SyncReport:
        """Re-snapshot ``table``: commit each row SQLite holds that differs from the lake's current one.

        A repair tool (Rhei's ``initial_sync``) for a lake that drifted from its
        database, e.g. after writes made with the triggers dropped: under one
        SQLite write lock, the table's rows are compared with the lake's current
        rows, and each difference becomes a new version (a row missing from the
        lake an insert, a row the database no longer has a delete). A key whose
        row equals the lake's current version gets no new version, so on a lake
        in step it commits nothing. HTAP mode (``oltp_path``) only.
        """
        self._check_open()
        sync = self._evolving("initial_sync()")
        name = self._canonical_table(table)
        with self._lock:
            report = self._leased(sync.resnapshot, name)
        log.info("table %r re-snapshot: %d events committed", name, report.events)
        return report

    def _canonical_table(self, table: str) -> str:
        for name in self.tables():
            if name == table or name.lower() == str(table).lower():
                return name
        raise SchemaError(f"no mirrored table {table!r}; known: {self.tables() or 'none'}")

    def flush(self) -> int:
        """Fold every table's hot-path tail into its Delta changelog now; returns rows moved."""
        self._check_open()
        self._refuse_read_only("flush()")
        with self._lock:
            if self._sync is not None:
                return self._lake_leased(self._sync.flush)
            self._verify_store()
            return sum(cl.flush() for _spec, cl in self._readonly_tables.values())

    # -- maintenance -----------------------------------------------------
    def compact(
        self,
        tables: Sequence[str] | None = None,
        *,
        vacuum_retention: Duration | None = None,
        dry_run: bool = False,
        progress: CompactionProgress | None = None,
    ) -> CompactionReport:
        """Fold each table's change feed into its history (or current rows), then tidy its files.

        Per table: flush the hot-path tail into the changelog (only a lake that
        syncs does; a compaction job reads the tail as it is), fold the events
        past the folded watermark (one commit per batch, exactly once), expire
        folded change rows older than ``changelog_retention``, bin-pack small
        files, write checkpoints, and vacuum files unreferenced for longer than
        ``vacuum_retention`` (the configured one unless given here, e.g. ``"7d"``
        or ``0``). Safe while a sync runs and against a concurrent compaction.
        ``dry_run=True`` writes nothing and reports what would be done.
        """
        self._check_open()
        self._refuse_read_only("compact()")
        options = CompactionOptions.from_config(self.config, vacuum_retention=vacuum_retention, dry_run=dry_run)
        if not dry_run:
            self._verify_store()
        if isinstance(tables, str):
            tables = [tables]
        with self._lock:
            if self._sync is None and set(self.storage.list_tables()) != set(self._readonly_tables):
                self._readonly_tables.clear()
                self._discover()
            # The derived tables of the chosen tables only: loading one costs requests on S3.
            chosen = [
                CompactionTarget(spec, changelog, self._derived_table(spec))
                for spec, changelog in select_targets(self._entries(), tables)
            ]
        return compact(
            chosen,
            options,
            reload=self._sync is None,
            blobs=self.storage.blobs,
            progress=progress,
        )

    # -- reads -----------------------------------------------------------
    def query(self, sql: str, *, as_of: Instant | None = None, hint: str | None = None) -> pa.Table:
        """Run read-only SQL; returns a ``pyarrow.Table``.

        Each mirrored table ``t`` is queryable as ``t`` (current rows),
        ``t_history`` (SCD2 versions) and ``t_changes`` (the change feed).
        ``as_of`` (an aware datetime, ISO 8601 text with ``Z`` or an offset, or
        epoch seconds; an instant without a time zone raises ConfigError)
        makes them mean their state at that instant.

        Point reads by primary key go to SQLite (fresh: they see every write,
        synced or not); everything else goes to the lake (what is synced). See
        :meth:`explain_route`; ``hint="oltp"`` or ``"olap"`` forces the route.
        The route taken is in ``result.schema.metadata[b"rhei.route"]``. Both
        routes give the same Arrow types; writes raise WriteRefusedError.
        """
        self._check_open()
        micros = to_micros(as_of) if as_of is not None else None
        self._refuse_waiting(sql)
        chosen = self._route(sql, micros, hint)
        try:
            if chosen.target == "oltp":
                result = self._read_oltp(sql, chosen)
            else:
                self._follow(sql)
                result = self._queries.query(sql, as_of=micros)
        except QueryError as exc:
            raise self._explain_waiting(exc) from exc
        metadata = dict(result.schema.metadata or {})
        metadata[ROUTE_METADATA_KEY] = chosen.target.encode()
        return result.replace_schema_metadata(metadata)

    def query_with_hint(self, sql: str, hint: str | None, *, as_of: Instant | None = None) -> pa.Table:
        """:meth:`query` with ``hint`` (``"oltp"``, ``"olap"`` or ``None``): Rhei's name for it."""
        return self.query(sql, as_of=as_of, hint=hint)

    def olap(self) -> Any:
        """The active engine's session with the lake's views registered, for UDFs and joins with your own data.

        DataFusion: a ``datafusion.SessionContext``; DuckDB: a ``duckdb``
        connection. Each call returns a new session holding the views as they
        are now (call again to see later syncs). It is separate from the session
        :meth:`query` uses: tables, UDFs and settings you add there stay there.
        Unlike :meth:`query` it does not refuse writes; writes through it are
        yours and never reach the lake's tables (the views read Delta tables and
        Arrow data it cannot change), but DataFusion can read any file the
        process can, and a DuckDB connection can create tables in its memory.
        """
        self._check_open()
        return self._queries.olap_session()

    def explain_route(self, sql: str, *, as_of: Instant | None = None, hint: str | None = None) -> Route:
        """Where :meth:`query` would run ``sql`` (``oltp``: SQLite, ``olap``: the lake), and why."""
        self._check_open()
        return self._route(sql, to_micros(as_of) if as_of is not None else None, hint)

    def _route(self, sql: str, as_of: int | None, hint: str | None) -> Route:
        specs = {name: spec for name, (spec, _) in self._entries().items()}
        return route(sql, specs, as_of=as_of, hint=hint, oltp_available=self._reader is not None)

    def _read_oltp(self, sql: str, chosen: Route) -> pa.Table:
        assert self._reader is not None
        if self._oltp is not None and self._oltp.in_transaction:
            with self._lock:  # an open transaction on the write connection: read its own writes
                if self._oltp.in_transaction:
                    return self._read_oltp_on(sql, chosen, self._oltp)
        return self._read_oltp_on(sql, chosen, None)

    def _read_oltp_on(self, sql: str, chosen: Route, conn: sqlite3.Connection | None) -> pa.Table:
        assert self._reader is not None
        if chosen.plan is not None:
            return self._reader.read_point(chosen.plan, self.table_spec(chosen.plan.table), conn=conn)
        return self._reader.read_sql(sql, chosen.column_types, conn=conn)

    def dataframe(self, sql: str, *, as_of: Instant | None = None, params: Mapping[str, Any] | None = None) -> Any:
        """Plan read-only SQL over the lake (never routed to SQLite), without running it.

        Returns a DataFusion ``DataFrame`` bound to the lake as it is now;
        stream its rows with ``execute_stream()`` (the Flight SQL server does)
        rather than materialising them. ``params`` binds placeholders
        (``{"1": value}`` is ``$1``). Planning errors raise
        :class:`~rhei_lake.errors.QueryError`.
        """
        self._check_open()
        micros = to_micros(as_of) if as_of is not None else None
        self._follow(sql)
        self._refuse_waiting(sql)
        try:
            return self._queries.dataframe(sql, as_of=micros, params=dict(params) if params is not None else None)
        except QueryError as exc:
            raise self._explain_waiting(exc) from exc

    def outside_views(self, dialect: str, *, as_of: Instant | None = None, show_secrets: bool = False) -> str:
        """SQL that gives DuckDB, Spark or Trino this lake's views, reading its Delta tables alone.

        ``dialect`` is ``duckdb``, ``spark`` or ``trino``. Returns the store
        settings the engine needs (secrets ``***`` unless ``show_secrets``) and,
        per table ``t``, ``CREATE VIEW`` statements for ``t``, ``t_history``
        and ``t_changes`` (the same merge-on-read rhei_lake runs), and the
        ``as_of`` form: DuckDB table macros ``t_as_of(instant)``; Spark and
        Trino views ``t_as_of`` at ``as_of``, when given. They show what is in
        Delta (a syncing process's tail once flushed, see ``tail_flush_interval``);
        regenerate them after a schema change or a table's first compaction.
        """
        from rhei_lake.query.outside_views import OutsideTable, render

        self._check_open()
        if self.location.scheme == "memory":
            raise ConfigError("outside_views: a memory:// lake lives in this process only; no other engine can read it")
        if self._sync is None:
            self.refresh()
        tables = []
        for _name, (spec, changelog) in sorted(self._entries().items()):
            derived = self._derived_table(spec)
            derived.load()  # another process may have compacted it since
            derived_uri = derived.store.uri if derived.exists() else None
            tables.append(OutsideTable(spec, derived.mode, changelog.store.uri, derived_uri))
        micros = to_micros(as_of) if as_of is not None else None
        return render(tables, dialect, storage_options=self.location.options, as_of=micros, show_secrets=show_secrets)

    # -- schema evolution --------------------------------------------------
    def _trigger_sync(self, what: str) -> TriggerSync:
        """The sync, for work only trigger capture does (registering, schema changes, repairs)."""
        if not isinstance(self._sync, TriggerSync):
            raise SourceError(f"{what} needs a source: open the lake with oltp_path=")
        return self._sync

    def _evolving(self, what: str) -> TriggerSync:
        conn = self._require_oltp(what)
        sync = self._trigger_sync(what)
        if conn.in_transaction:
            raise SourceError(f"{what}: finish the transaction open on this lake's connection first")
        if self._lease is not None:
            self._lease.ensure()
        if self._binding is not None:
            self._binding.ensure()
        return sync

    def add_column(self, table: str, column: str, sql_type: str) -> TableSpec:
        """Add a nullable column to a mirrored table, in SQLite, its triggers and the lake; returns the new spec.

        Existing rows, versions and events read NULL in it. Everything captured
        before the change is committed first.
        """
        with self._lock:
            try:
                return evolution.add_column(self._evolving("add_column()"), table, column, sql_type)
            finally:
                self._reload_schema()

    def drop_column(self, table: str, column: str) -> TableSpec:
        """Drop a column of a mirrored table from SQLite, its triggers and the views; returns the new spec.

        The values it held stay in the lake's storage (see docs/htap-api.md, "Schema evolution").
        """
        with self._lock:
            try:
                return evolution.drop_column(self._evolving("drop_column()"), table, column)
            finally:
                self._reload_schema()

    def _reload_schema(self) -> None:
        # The change ran on the capture connection; SQLite only notices it on this one when a
        # statement checks the schema cookie, and until then may plan against the old columns.
        if self._oltp is not None and not self._closed:
            self._oltp.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()

    def rename_column(self, table: str, column: str, new_name: str) -> TableSpec:
        """Not supported: raises SchemaError explaining how to add, copy and drop instead."""
        with self._lock:
            return evolution.rename_column(self._evolving("rename_column()"), table, column, new_name)

    # -- background sync and status ----------------------------------------
    def start_sync(self, interval: float | None = None) -> None:
        """Start syncing in a background thread every ``interval`` seconds (default: ``sync_interval`` or 1).

        Transient failures are retried with exponential backoff; a terminal one
        stops the loop. Either way it shows in :meth:`sync_status`.
        """
        self._check_open()
        self._refuse_read_only("start_sync()")
        if self._sync is None:
            raise ConfigError("background sync needs a source to sync from: open the lake with oltp_path=")
        interval = interval if interval is not None else (self.config.sync_interval or 1.0)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ConfigError(f"sync interval must be a positive number of seconds, not {interval!r}")
        sync = self._sync
        with self._lock:
            if self._loop is not None:
                self._loop.stop()
            self._loop = SyncLoop(
                lambda: self._tracker.run(lambda: self._leased(sync.sync_now)),
                float(interval),
                max_backoff=self.config.sync_max_backoff,
                name=f"rhei-sync {self.location.url}",
            )
            self._loop.start()

    def stop_sync(self) -> None:
        """Stop the background sync loop, waiting for a cycle in progress to finish."""
        loop = self._loop
        if loop is not None:
            loop.stop()

    def add_sync_listener(self, listener: SyncListener) -> Callable[[], None]:
        """Call ``listener(report, error)`` after every sync cycle, manual or background.

        ``report`` is the cycle's :class:`SyncReport` (``error`` is ``None``), or
        ``error`` the :class:`ErrorInfo` of a failed cycle (``report`` is ``None``).
        It runs on the syncing thread, so it must be quick; its own exceptions
        are logged and never disturb the sync. Returns a function that removes it.
        """
        return self._tracker.add_listener(listener)

    def sync_status(self) -> SyncStatus:
        """Per table and overall: synced sequence, lag, last commit, errors, loop state, unfolded size.

        A read-only lake looks at the store first, as a query does (at most
        every ``refresh_interval``): its status follows the process that writes.
        """
        self._check_open()
        if self._sync is None:
            self._followed.freshen(None, discover=True)
        if self._sync is not None:
            lag = self._sync.lag_probe
        else:
            lag = self._watch.table_lag if self._watch is not None else None
        tables = self._query_tables()
        if self._sync is not None:
            position = self._sync.position
        else:
            position = max((t.changelog.watermark for t in tables.values()), default=None)
        loop = self._loop.status() if self._loop is not None else None
        waiting: dict[str, BaseException]
        if self._sync is not None:
            waiting = dict(self._sync.waiting)
            through = self._sync.horizon
        else:
            waiting = {name: TableNotReadyError(why, table=name) for name, why in self._waiting().items()}
            through = None
        return collect_status(
            tables, self._tracker, loop, lag=lag, position=position, waiting=waiting, synced_through=through
        )

    @property
    def sync_engine(self) -> Sync | None:
        """The engine that syncs this lake (``TriggerSync`` or ``PollingSync``): a seam for tests and diagnostics.

        Not a stable API. It reaches what applications leave to :meth:`sync_now`,
        :meth:`flush` and :meth:`sync_status` (changelogs, the source, background
        upkeep); calling into it bypasses the lake's lock and lease. ``None`` when
        the lake only reads.
        """
        return self._sync

    # -- restore -------------------------------------------------------------
    def restore_sqlite(
        self,
        path: str | os.PathLike[str],
        as_of: Instant | None = None,
        tables: Iterable[str] | None = None,
        *,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
    ) -> RestoreReport:
        """Write a new SQLite database with the tables' state at ``as_of`` (default: latest synced), from the lake alone.

        Tables are created with their declared types and primary keys. The file
        appears atomically; an existing file is replaced only with
        ``overwrite=True``. ``progress(table, rows_done, rows_total)`` reports long work.
        """
        self._check_open()
        micros = to_micros(as_of) if as_of is not None else None
        target = os.path.abspath(os.fspath(path))
        if self.config.oltp_path is not None and target == os.path.abspath(self.config.oltp_path):
            raise ConfigError("restore: refusing to overwrite the lake's own live SQLite database")
        if self._sync is None:
            self.refresh()
        waiting = sorted(self._waiting())
        if tables is None and waiting:
            raise TableNotReadyError(
                f"restore: table(s) {waiting} are registered but not mirrored (their registration did not finish), "
                f"so the lake cannot restore them; see sync_status().waiting, or restore the mirrored tables alone "
                f"with tables={self.tables()!r}",
                table=waiting[0],
            )
        names = self.tables() if tables is None else [self.table_spec(t).name for t in tables]
        specs = {name: self.table_spec(name) for name in names}
        return restore_sqlite(self._queries, specs, target, as_of=micros, overwrite=overwrite, progress=progress)

    # -- lifecycle -------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise LakeClosedError("this lake is closed")

    def close(self, *, final_sync: bool | None = None) -> None:
        """Stop background sync, release connections; the CDC log is pruned of everything committed.

        With the background loop running, a last sync commits what is still
        captured first (``final_sync``, default from the config); if it fails
        the lake still closes, then its error is raised (the events stay in the
        CDC log and are synced at the next open).

        A lake that syncs then flushes every table's hot-path tail into its
        Delta changelog (at most one commit per table), so that engines reading
        the Delta tables directly see every synced event once ``close()``
        returns. Should that fail, the events stay committed in the tail, the
        lake still closes and the error is raised.
        """
        if self._closed:
            return
        error: RheiError | None = None
        loop = self._loop
        if loop is not None:
            active = loop.status().running
            loop.stop()
            wanted = self.config.final_sync if final_sync is None else final_sync
            sync = self._sync
            if wanted and active and sync is not None:
                try:
                    self._tracker.run(lambda: self._leased(sync.sync_now))
                except RheiError as exc:
                    log.warning("final sync failed; the events stay in the CDC log for the next open: %s", exc)
                    error = exc
        if self._sync is not None:
            try:
                self._lake_leased(self._sync.flush)  # outside readers see only Delta, never the tail
            except RheiError as exc:
                log.warning("flush at close failed; the events stay in the tail for the next open: %s", exc)
                error = error or exc
        self._closed = True
        self._release()
        if error is not None:
            raise error

    def _release(self) -> None:
        errors = []
        if self._loop is not None:
            self._loop.stop()
        if self._reader is not None:
            self._reader.close()
        if self._watch is not None:
            self._watch.close()
        if self._sync is not None:
            try:
                self._sync.close()
            except RheiError as exc:
                errors.append(exc)
        if self._oltp is not None:
            self._oltp.close()
        queries = getattr(self, "_queries", None)  # unset when opening failed before the engine was made
        if queries is not None:
            queries.close()  # its kept as_of sessions (and DuckDB cursors) go with the lake
        if self._duckdb is not None:
            self._duckdb.close()
        if self._binding is not None:
            self._binding.release()  # a memory:// lake lets go of its database
        if self._lease is not None:
            self._lease.release()
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
        if self.config.read_only and self.config.oltp_path:
            mode = f"read-only oltp_path={self.config.oltp_path!r}"
        source = self._sync.read_only_source if self._sync is not None else None
        if source is not None:
            mode = f"source={source!r}"
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
