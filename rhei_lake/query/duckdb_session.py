"""DuckDB as the lake's query engine, behind the part of DataFusion's session the query layer uses.

The query layer keeps each table's merge-on-read state (the change feed, the
unfolded events, ``t``'s rows in memory; see :mod:`rhei_lake.query.table_state`)
and registers it in a session: Arrow tables, Delta tables and views over them.
:class:`DuckSession` takes the same calls and keeps what they register as a
catalog of definitions, so both engines share one merge-on-read
implementation:

* Arrow tables are registered in DuckDB as they are (zero copy);
* a Delta table is ``delta_scan(uri, version => v)`` of the delta extension,
  pinned to the snapshot the state was built from;
* views are the same SQL, in DuckDB's dialect (see
  :func:`~rhei_lake.query.outside_views.to_duckdb`).

DuckDB registrations belong to one connection, and a connection runs one query
at a time: every query takes a cursor of its own from a pool and brings that
cursor's registrations to the catalog as it was when the query was planned
(only what changed is registered again). Concurrent queries (Flight SQL's
clients) each run on their own cursor.

The analytic path is read-only. Statements other than a query are refused
before they run (:class:`~rhei_lake.errors.WriteRefusedError`), and the
database is locked down once the extensions and the S3 secret are in place:
no file or URL outside the lake can be read or written, no extension loaded,
no setting changed.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import pyarrow as pa

from rhei_lake._shared.identifiers import quote_ident as q
from rhei_lake._shared.identifiers import quote_literal
from rhei_lake._shared.options import is_secret_key
from rhei_lake.errors import ConfigError, QueryError, StorageError, WriteRefusedError, translate_storage_error

log = logging.getLogger("rhei_lake")

INSTALL_HINT = "pip install 'rhei-lake[duckdb]'"
"""What installs DuckDB and its extensions (no download at run time)."""

_READ_STATEMENTS = ("SELECT", "EXPLAIN")
_STREAM_BATCH_ROWS = 8192
"""Rows per streamed batch, as DataFusion's: a slow Flight SQL client holds the stream back, not megabytes."""
T = TypeVar("T")


# -- the database -------------------------------------------------------------
def extension_path(name: str) -> Path:
    """The ``.duckdb_extension`` file of the ``duckdb-extension-<name>`` wheel for the installed DuckDB."""
    import duckdb

    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"DuckDB's {name} extension is not installed: {INSTALL_HINT} installs it")
    folder = Path(next(iter(spec.submodule_search_locations))) / "extensions" / f"v{duckdb.__version__}"
    path = folder / f"{name}.duckdb_extension"
    if not path.is_file():
        found = sorted(p.name for p in folder.parent.glob("v*")) if folder.parent.is_dir() else []
        raise ConfigError(
            f"DuckDB's {name} extension is installed for DuckDB {', '.join(found) or 'another version'}, "
            f"not {duckdb.__version__}: {INSTALL_HINT} installs matching versions"
        )
    return path


def lake_prefix(scheme: str, root: str) -> str | None:
    """What DuckDB may read: the lake's folder (or S3 prefix); ``None`` for a ``memory://`` lake."""
    if scheme == "s3":
        return f"s3://{root.rstrip('/')}/"
    if scheme == "memory":
        return None
    return str(Path(root).resolve()) + "/"


def open_database(scheme: str, root: str, options: Mapping[str, str]):
    """An in-memory DuckDB database that reads the lake and nothing else.

    Loads the delta extension (and httpfs for S3) from their wheels, turns the
    S3 options into a DuckDB secret, then locks the configuration: only files
    under the lake's root can be read, nothing else can be loaded or set.
    """
    try:
        import duckdb
    except ImportError:
        raise ConfigError(f"engine='duckdb' needs DuckDB: {INSTALL_HINT}") from None
    con = duckdb.connect(
        ":memory:",
        config={
            "allow_unsigned_extensions": "true",  # the wheels' files are not signed by DuckDB's key
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
        },
    )
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"LOAD {quote_literal(str(extension_path('delta')))}")
        prefix = lake_prefix(scheme, root)
        if scheme == "s3":
            con.execute(f"LOAD {quote_literal(str(extension_path('httpfs')))}")
            _create_secret(con, options)
        con.execute(
            f"SET allowed_directories = [{quote_literal(prefix)}]" if prefix else "SET allowed_directories = []"
        )
        con.execute("SET enable_external_access = false")
        con.execute("SET python_enable_replacements = false")  # no scanning of Python variables by name
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _create_secret(con, options: Mapping[str, str]) -> None:
    from rhei_lake.query.outside_views import duckdb_s3_secret

    try:
        con.execute(duckdb_s3_secret(options, show_secrets=True))
    except Exception as exc:
        masked = duckdb_s3_secret(options, show_secrets=False)
        raise ConfigError(f"DuckDB refused the lake's S3 settings ({masked}): {_mask(str(exc), options)}") from None


def _mask(text: str, options: Mapping[str, str]) -> str:
    for key, value in options.items():
        if value and is_secret_key(key):
            text = text.replace(value, "***")
    return text


# -- the catalog ----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Entry:
    """One registered name: an Arrow table, or SQL (a view, or a pinned Delta scan)."""

    name: str
    arrow: pa.Table | None = None
    sql: str | None = None
    depends: bool = True  # a view over other entries (created after them)


def _same(applied: _Entry, wanted: _Entry | None) -> bool:
    if applied is wanted:
        return True
    if wanted is None or applied.arrow is not None or wanted.arrow is not None:
        return False
    return (applied.name, applied.sql, applied.depends) == (wanted.name, wanted.sql, wanted.depends)


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('""', '"')
    return name


def _key(name: str) -> str:
    return _unquote(name).lower()  # DuckDB's names are case-insensitive, quoted or not


class _Cursor:
    """One DuckDB connection of the pool and what is registered in it."""

    def __init__(self, con) -> None:
        self.con = con
        self.applied: dict[str, _Entry] = {}

    def bring_to(self, entries: Mapping[str, _Entry]) -> None:
        """Register exactly ``entries`` here, re-registering only what differs.

        A view registered again with the same SQL is kept: DuckDB binds a view's
        names when a query runs, so it reads whatever is registered under them then.
        """
        for key in [k for k, entry in self.applied.items() if not _same(entry, entries.get(k))]:
            self._drop(self.applied.pop(key))
        for key, entry in entries.items():
            if key in self.applied:
                self.applied[key] = entry
        pending = [e for k, e in entries.items() if k not in self.applied]
        for entry in [e for e in pending if not e.depends]:
            self._create(entry)
        views = [e for e in pending if e.depends]
        while views:  # a view is bound when created: each after those it reads
            failed = []
            for entry in views:
                try:
                    self._create(entry)
                except Exception:  # noqa: BLE001 - created in a later round, or reported then
                    failed.append(entry)
            if len(failed) == len(views):
                self._create(failed[0])  # raises the reason
            views = failed

    def _create(self, entry: _Entry) -> None:
        key = _key(entry.name)
        if entry.arrow is not None:
            self.con.register(entry.name, entry.arrow)
        else:
            self.con.execute(f"CREATE OR REPLACE TEMP VIEW {q(entry.name)} AS {entry.sql}")
        self.applied[key] = entry

    def _drop(self, entry: _Entry) -> None:
        if entry.arrow is not None:
            self.con.unregister(entry.name)
        else:
            self.con.execute(f"DROP VIEW IF EXISTS {q(entry.name)}")


class DuckSession:
    """A catalog of the lake's relations for DuckDB, registered the way DataFusion's ``SessionContext`` is.

    Offers the calls the query layer makes on a session (``register_*``,
    ``table_exist``, ``deregister_table``, ``sql``), so the merge-on-read state
    is built the same way for both engines; ``plan`` runs a user's query.
    """

    scans_delta = True
    """Delta tables are registered with :meth:`register_table` wherever they live (S3 too)."""

    def __init__(self, database) -> None:
        self._database = database
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._idle: list[_Cursor] = []
        self._busy: set[_Cursor] = set()
        self._closed = False

    # -- DataFusion's registration calls --------------------------------------
    def table_exist(self, name: str) -> bool:
        return _key(name) in self._entries

    def deregister_table(self, name: str) -> None:
        with self._lock:
            self._entries.pop(_key(name), None)

    def _put(self, entry: _Entry) -> None:
        with self._lock:
            key = _key(entry.name)
            self._entries.pop(key, None)  # re-registered: after what it may now read
            self._entries[key] = entry

    def register_record_batches(self, name: str, partitions: list[list[pa.RecordBatch]]) -> None:
        batches = [b for part in partitions for b in part]
        self._put(_Entry(_unquote(name), arrow=pa.Table.from_batches(batches), depends=False))

    def register_arrow(self, name: str, table: pa.Table) -> None:
        self._put(_Entry(_unquote(name), arrow=table, depends=False))

    def register_table(self, name: str, table: Any) -> None:
        """A Delta table (``deltalake.DeltaTable``), read by ``delta_scan`` at its loaded version."""
        from deltalake import DeltaTable

        if not isinstance(table, DeltaTable):
            raise TypeError(f"DuckSession registers Delta tables, not {type(table).__name__}")
        sql = (
            f"SELECT * FROM delta_scan({quote_literal(_scan_uri(table.table_uri))}, version => {int(table.version())})"
        )
        self._put(_Entry(_unquote(name), sql=sql, depends=False))

    def register_dataset(self, name: str, dataset: Any) -> None:
        self.register_arrow(name, dataset.to_table())

    def register_view(self, name: str, frame: DuckFrame) -> None:
        self._put(_Entry(_unquote(name), sql=frame.sql))

    def sql(self, sql: str) -> DuckFrame:
        """rhei_lake's own SQL (DataFusion's dialect), over the relations registered now."""
        from rhei_lake.query.outside_views import to_duckdb

        return DuckFrame(self, to_duckdb(sql), dict(self._entries))

    # -- queries ---------------------------------------------------------------
    def plan(self, sql: str, params: Mapping[str, Any] | None = None, *, bind: bool = True) -> DuckFrame:
        """A user's query, in DuckDB's SQL, checked to be one read-only statement (and bound now, with ``bind``)."""
        refuse_writes(sql)
        values, missing = _parameters(sql, params)
        frame = DuckFrame(self, sql, dict(self._entries), params=values, unbound=missing)
        if bind:
            frame.bind()
        return frame

    def connection(self):
        """A DuckDB connection (a new cursor of the database) with this catalog registered, for the user."""
        cursor = _Cursor(self._database.cursor())
        cursor.bring_to(dict(self._entries))
        return cursor.con

    def interrupt(self) -> None:
        """Cancel every query running in this session (they raise KeyboardInterrupt)."""
        with self._lock:
            busy = list(self._busy)
        for cursor in busy:
            cursor.con.interrupt()

    def _acquire(self, entries: Mapping[str, _Entry]) -> _Cursor:
        with self._lock:
            cursor = self._idle.pop() if self._idle else None
        if cursor is None:
            cursor = _Cursor(self._database.cursor())
        try:
            cursor.bring_to(entries)
        except BaseException:
            cursor.con.close()
            raise
        with self._lock:
            self._busy.add(cursor)
        return cursor

    def _release(self, cursor: _Cursor, *, failed: BaseException | None = None) -> None:
        """Back to the pool; a cursor whose query was interrupted is closed.

        Ctrl-C stops DuckDB's Python call but not always its worker threads:
        ``interrupt()`` stops them, or closing the cursor (or the database) would wait for them.
        """
        keep = failed is None or not _interrupted(failed)
        with self._lock:
            self._busy.discard(cursor)
            if keep and not self._closed:
                self._idle.append(cursor)
                return
        cursor.con.interrupt()
        cursor.con.close()

    def close(self) -> None:
        """Close every cursor (a stream still running fails)."""
        with self._lock:
            self._closed = True
            cursors, self._idle = self._idle + list(self._busy), []
            self._busy.clear()
        for cursor in cursors:
            cursor.con.interrupt()
            cursor.con.close()


def _scan_uri(uri: str) -> str:
    if uri.startswith("file://"):
        return unquote(urlparse(uri).path)
    return uri.rstrip("/")


class _Batch:
    """A record batch as DataFusion's streams yield them (``to_pyarrow()``)."""

    __slots__ = ("batch",)

    def __init__(self, batch: pa.RecordBatch) -> None:
        self.batch = batch

    def to_pyarrow(self) -> pa.RecordBatch:
        return self.batch


class DuckFrame:
    """A query over a snapshot of a session's catalog, run on a cursor of its own when asked.

    Offers what the lake uses of a DataFusion ``DataFrame``: ``schema()``,
    ``to_arrow_table()`` and ``execute_stream()``. Results have the types the
    documented schema gives (see :func:`normalize_duckdb`).
    """

    def __init__(
        self,
        session: DuckSession,
        sql: str,
        entries: dict[str, _Entry],
        *,
        params: dict[str, Any] | None = None,
        unbound: list[str] | None = None,
    ) -> None:
        self.session = session
        self.sql = sql
        self._unbound = unbound or []
        self._entries = entries
        self._params = params
        self._schema: pa.Schema | None = None
        self._duck_types: list[str] | None = None

    def _relation(self, cursor: _Cursor):
        if self._params is None:
            return cursor.con.sql(self.sql)
        return cursor.con.sql(self.sql, params=self._params)

    def _run(self, work: Callable[[Any], T]) -> T:
        """``work(relation)`` on a cursor of its own, DuckDB's errors translated."""
        cursor = self.session._acquire(self._entries)
        try:
            result = work(self._relation(cursor))
        except BaseException as exc:
            if _interrupted(exc):
                # The traceback holds the interrupted relation, and DuckDB does not close a
                # connection while one is alive: drop it first.
                exc.__traceback__ = None
                self.session._release(cursor, failed=exc)
                raise KeyboardInterrupt("query cancelled") from None
            self.session._release(cursor)
            if not isinstance(exc, Exception):
                raise
            raise translate_duckdb_error(exc, sql=self.sql) from exc
        self.session._release(cursor)
        return result

    def bind(self) -> None:
        """Bind the query now: an unknown table or column is an error here, not when it runs."""
        self._run(lambda relation: relation.types)

    def schema(self) -> pa.Schema:
        if self._schema is None:

            def schema(relation) -> pa.Schema:
                types = [str(t) for t in relation.types]
                return normalize_duckdb_schema(relation.limit(0).to_arrow_table().schema, types)

            self._schema = self._run(schema)
        return self._schema

    def _check_bound(self) -> None:
        if self._unbound:
            raise QueryError(f"No value found for placeholder ${self._unbound[0]} (in: {' '.join(self.sql.split())})")

    def to_arrow_table(self) -> pa.Table:
        self._check_bound()

        def run(relation) -> pa.Table:
            types = [str(t) for t in relation.types]
            table = relation.to_arrow_table()
            schema = normalize_duckdb_schema(table.schema, types)
            return table if schema.equals(table.schema) else table.cast(schema)

        return self._run(run)

    def execute_stream(self) -> Iterator[_Batch]:
        self._check_bound()
        cursor = self.session._acquire(self._entries)
        try:
            relation = self._relation(cursor)
            types = [str(t) for t in relation.types]
            reader = relation.to_arrow_reader(_STREAM_BATCH_ROWS)
        except BaseException as exc:
            interrupted = _interrupted(exc)
            exc.__traceback__ = None if interrupted else exc.__traceback__
            self.session._release(cursor, failed=exc)
            if interrupted:
                raise KeyboardInterrupt("query cancelled") from None
            if not isinstance(exc, Exception):
                raise
            raise translate_duckdb_error(exc, sql=self.sql) from exc
        return self._stream(cursor, reader, types)

    def _stream(self, cursor: _Cursor, reader: pa.RecordBatchReader, types: list[str]) -> Iterator[_Batch]:
        failed: BaseException | None = None
        try:
            schema = normalize_duckdb_schema(reader.schema, types)
            same = schema.equals(reader.schema)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except BaseException as exc:
                    failed = exc
                    if _interrupted(exc):
                        exc.__traceback__ = None
                        raise KeyboardInterrupt("query cancelled") from None
                    if not isinstance(exc, Exception):
                        raise
                    raise translate_duckdb_error(exc, sql=self.sql) from exc
                yield _Batch(batch if same else batch.cast(schema))
        finally:
            reader.close()
            del reader
            self.session._release(cursor, failed=failed)


# -- the write refusal --------------------------------------------------------------
def refuse_writes(sql: str) -> None:
    """Raise WriteRefusedError unless ``sql`` is exactly one query (``SELECT``/``EXPLAIN`` and kin)."""
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("query: SQL must be a non-empty string")
    try:
        statements = duckdb.extract_statements(sql)
    except Exception as exc:
        raise translate_duckdb_error(exc, sql=sql) from exc
    if len(statements) != 1:
        raise QueryError(f"send one statement at a time (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in _READ_STATEMENTS:
        raise WriteRefusedError(f"the analytic path is read-only: {kind} statements are refused")


_PLACEHOLDER = re.compile(r"\$(\w+)")


def _parameters(sql: str, params: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The bound values the query names (``{"1": v}`` is ``$1``), as Python values; the placeholders left unbound.

    Unbound placeholders are bound to NULL, so that the query can be planned
    (a prepared statement's schema) but not run.
    """
    used = sorted(set(_PLACEHOLDER.findall(sql)))
    if not used:
        return None, []
    given = {str(k): v for k, v in (params or {}).items()}
    values = {}
    missing = []
    for name in used:
        if name in given:
            value = given[name]
            values[name] = value.as_py() if isinstance(value, pa.Scalar) else value
        else:
            values[name] = None
            missing.append(name)
    return values, missing


# -- types and errors -------------------------------------------------------------------
def normalize_duckdb_schema(schema: pa.Schema, duck_types: list[str]) -> pa.Schema:
    """DuckDB's result types as DataFusion's would be.

    ``HUGEINT`` (the sum of integers) is ``int64``; instants are in ``UTC``
    (DuckDB names the zone ``Etc/UTC``); strings and binaries are ``string``/``binary``.
    """
    fields = []
    for i, f in enumerate(schema):
        duck = duck_types[i] if i < len(duck_types) else ""
        t = f.type
        if duck == "HUGEINT":
            t = pa.int64()
        elif duck == "UHUGEINT":
            t = pa.uint64()
        elif pa.types.is_timestamp(t) and t.tz is not None and t.tz in ("Etc/UTC", "UTC"):
            t = pa.timestamp(t.unit, tz="UTC")
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            t = pa.binary()
        fields.append(f if t == f.type else pa.field(f.name, t, f.nullable, f.metadata))
    return pa.schema(fields, metadata=schema.metadata)


def _interrupted(exc: BaseException) -> bool:
    import duckdb

    return isinstance(exc, (duckdb.InterruptException, KeyboardInterrupt)) or "interrupted" in str(exc).lower()


_MISSING_TABLE = re.compile(r"Table with name (\S+?) does not exist", re.IGNORECASE)


def translate_duckdb_error(exc: BaseException, *, sql: str) -> QueryError | StorageError:
    """Map a DuckDB error to rhei_lake's: a write or a read outside the lake is refused, a file's failure is storage's.

    A cancelled query raises KeyboardInterrupt, as Ctrl-C does with DataFusion.
    """
    import duckdb

    if isinstance(exc, (QueryError, StorageError)):
        return exc
    text = str(exc)
    if _interrupted(exc):
        raise KeyboardInterrupt from exc
    if isinstance(exc, duckdb.PermissionException):
        return WriteRefusedError(f"the analytic path reads only the lake's tables: {text.splitlines()[0]}")
    if isinstance(exc, (duckdb.IOException, duckdb.HTTPException)):
        return translate_storage_error(exc, where="query")
    first = text.splitlines()[0] if text else type(exc).__name__
    missing = _MISSING_TABLE.search(first)
    if missing:
        # As DataFusion says it, so that looking again for a new table works the same for both engines.
        first = f"table '{missing.group(1).strip(chr(34)).lower()}' not found ({first})"
    snippet = " ".join(sql.split())
    if len(snippet) > 200:
        snippet = snippet[:197] + "..."
    return QueryError(f"{first} (in: {snippet})")
