"""Restore: write a new SQLite database holding the mirrored tables as they were at an instant.

Built from the lake alone (a read-only lake opened from its URL is enough),
like Litestream's restore: each table is created from its spec (declared
types, NOT NULL, primary key) and filled from the lake's ``t`` view at
``as_of``. The file appears atomically: it is written next to its destination
under a temporary name, synced to disk, and renamed into place.

Values come back as :func:`~rhei_lake.capture.types.written_value` writes
them: integers, reals (bit for bit), text, blobs; booleans as 0/1; dates as
``YYYY-MM-DD``; timestamps as UTC text ``YYYY-MM-DD HH:MM:SS[.ffffff]``;
decimals as their exact text (a whole one as integer text), which SQLite stores
according to the column's affinity as any application's write would be.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from rhei_lake import faults
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.capture.types import sqlite_affinity, written_value
from rhei_lake.catalog import TableSpec
from rhei_lake.errors import ConfigError, RheiError, SourceError
from rhei_lake.storage.local_durability import fsync_path
from rhei_lake.sync.contract import ProgressCallback

if TYPE_CHECKING:
    from rhei_lake.query.engine import QueryEngine

_SUFFIXES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class RestoreReport:
    """What :meth:`~rhei_lake.Lake.restore_sqlite` wrote."""

    path: str
    as_of: datetime | None
    rows: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0

    def __str__(self) -> str:
        when = self.as_of.isoformat() if self.as_of else "latest synced state"
        parts = ", ".join(f"{t}: {n}" for t, n in self.rows.items())
        return f"restored {len(self.rows)} table(s) as of {when} into {self.path} ({parts})"


def create_table_sql(spec: TableSpec) -> str:
    """``CREATE TABLE`` for ``spec`` with its declared types, NOT NULL and primary key."""
    columns = []
    for column in spec.columns:
        text = quote_ident(column.name)
        if column.declared_type:
            text += f" {column.declared_type}"
        if not column.nullable:
            text += " NOT NULL"
        columns.append(text)
    key = ", ".join(quote_ident(k) for k in spec.primary_key)
    return f"CREATE TABLE {quote_ident(spec.name)} ({', '.join(columns)}, PRIMARY KEY ({key}))"


def restore_sqlite(
    engine: QueryEngine,
    specs: dict[str, TableSpec],
    path: str | os.PathLike[str],
    *,
    as_of: int | None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    batch_rows: int = 50_000,
) -> RestoreReport:
    """Write ``specs``' tables at instant ``as_of`` (UTC micros; ``None``: latest) into a new database."""
    started = time.perf_counter()
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise ConfigError(f"restore: directory {directory!r} does not exist")
    if os.path.exists(target) and not overwrite:
        raise ConfigError(f"restore: {target} already exists; pass overwrite=True to replace it")
    if os.path.isdir(target):
        raise ConfigError(f"restore: {target} is a directory")
    if as_of is not None:
        for spec in specs.values():
            _check_known(engine, spec, as_of)
    temp = os.path.join(directory, f".{os.path.basename(target)}.rhei-restore-{uuid.uuid4().hex[:12]}.tmp")
    rows: dict[str, int] = {}
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = OFF")  # a failed restore is deleted, never recovered
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("BEGIN")
            for name, spec in specs.items():
                conn.execute(create_table_sql(spec))
                rows[name] = _copy_table(engine, conn, spec, as_of, progress, batch_rows)
                faults.point("restore.after_table")
            conn.execute("COMMIT")
        finally:
            conn.close()
        fsync_path(temp)
        faults.point("restore.before_rename")
        for suffix in _SUFFIXES:  # a stale WAL next to the target would be replayed into the new file
            if os.path.exists(target + suffix):
                os.remove(target + suffix)
        os.replace(temp, target)
        _fsync_directory(directory)
    except BaseException as exc:
        if os.path.exists(temp):
            os.remove(temp)
        if isinstance(exc, sqlite3.Error):
            raise SourceError(f"restore into {target}: {exc}") from exc
        if isinstance(exc, OSError):
            raise RheiError(f"restore into {target}: {exc}") from exc
        raise
    from rhei_lake.timeutil import from_micros

    return RestoreReport(target, from_micros(as_of) if as_of is not None else None, rows, time.perf_counter() - started)


def first_known_instant(engine: QueryEngine, spec: TableSpec) -> int | None:
    """UTC micros of the first instant the lake knows ``spec``'s state at (its first sync), or ``None``."""
    from rhei_lake.catalog import TS, VALID_FROM
    from rhei_lake.errors import QueryError
    from rhei_lake.timeutil import to_micros

    history, changes = quote_ident(f"{spec.name}_history"), quote_ident(f"{spec.name}_changes")
    known = []
    for sql in (f"SELECT min({VALID_FROM}) FROM {history}", f"SELECT min({TS}) FROM {changes}"):
        try:
            value = engine.query(sql, as_of=None).column(0)[0].as_py()
        except QueryError:  # mirror mode keeps no history
            continue
        if value is not None:
            known.append(to_micros(value))
    return min(known, default=None)


def _check_known(engine: QueryEngine, spec: TableSpec, as_of: int) -> None:
    first = first_known_instant(engine, spec)
    if first is not None and as_of < first:
        from rhei_lake.timeutil import from_micros

        raise ConfigError(
            f"restore: as_of {from_micros(as_of).isoformat()} is before the lake's history of {spec.name!r} "
            f"begins ({from_micros(first).isoformat()}, its first sync): the lake does not know its state then"
        )


def _copy_table(
    engine: QueryEngine,
    conn: sqlite3.Connection,
    spec: TableSpec,
    as_of: int | None,
    progress: ProgressCallback | None,
    batch_rows: int,
) -> int:
    cols = ", ".join(quote_ident(c) for c in spec.column_names)
    source = quote_ident(spec.name)
    total = 0
    if progress is not None:
        counted = engine.query(f"SELECT count(*) AS n FROM {source}", as_of=as_of)
        total = int(counted.column(0)[0].as_py())
        progress(spec.name, 0, total)
    insert = f"INSERT INTO {source} ({cols}) VALUES ({', '.join('?' * len(spec.columns))})"
    done = 0
    for batch in _batches(engine, f"SELECT {cols} FROM {source}", as_of, batch_rows):
        conn.executemany(insert, _rows(batch, spec))
        done += batch.num_rows
        if progress is not None:
            progress(spec.name, done, max(total, done))
    return done


def _batches(engine: QueryEngine, sql: str, as_of: int | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream the query's result so a big table never sits in memory whole."""
    from rhei_lake.errors import translate_query_error

    df = engine.dataframe(sql, as_of=as_of)
    try:
        for batch in df.execute_stream():
            record_batch = batch.to_pyarrow()
            for offset in range(0, record_batch.num_rows, batch_rows):
                yield record_batch.slice(offset, batch_rows)
    except RheiError:
        raise
    except Exception as exc:
        raise translate_query_error(exc, sql=sql) from exc


def _rows(batch: pa.RecordBatch, spec: TableSpec) -> Iterable[tuple[Any, ...]]:
    columns = []
    for name, array in zip(batch.schema.names, batch.columns, strict=True):
        column = spec.column(name)
        affinity = sqlite_affinity(column.declared_type)
        columns.append([written_value(v, column.arrow_type, affinity) for v in array.to_pylist()])
    return zip(*columns)


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
