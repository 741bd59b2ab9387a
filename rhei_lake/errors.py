"""The rhei_lake exception hierarchy.

Every error the library raises is a :class:`RheiError`. Each class says whether
retrying the same operation later can succeed (``transient``): the sync loop
retries transient errors with backoff and stops on terminal ones.

::

    RheiError                       every error rhei_lake raises; ``transient`` says whether a retry can succeed
    ├── ConfigError                 invalid configuration (names the field); also a ValueError
    ├── LakeClosedError             the Lake (or its OLTP reader) was used after close()
    ├── SourceError                 the database rhei_lake captures from
    │   ├── SchemaError             unknown table/column, no primary key, unsupported type
    │   │   └── SchemaChangedError  a mirrored table was changed in a way the lake cannot follow
    │   ├── TypeMismatchError       a stored value does not fit its declared type
    │   ├── NonMonotonicUpdateError a polled row's updated_at went backwards
    │   ├── SourceUnavailableError  the source cannot be reached right now   [transient]
    │   ├── ReadOnlySourceError     a write sent to a source rhei_lake only reads
    │   └── DatabaseBindingError    the database feeds another lake (or no longer this one)
    ├── StorageError                the lake on memory://, a local path or s3://
    │   ├── StorageUnavailableError the store cannot be reached right now    [transient]
    │   ├── StorageAccessError      credentials refused, no permission, no such bucket, read-only disk
    │   ├── CommitConflictError     another writer committed first; re-read and retry [transient]
    │   ├── TableNotFoundError      no table at that location
    │   ├── WatermarkError          the lake and the source disagree on what was synced
    │   ├── CorruptStorageError     files under the lake are not what rhei_lake wrote
    │   ├── LeaseHeldError          another process holds the lake's writer lease
    │   └── LeaseLostError          this process's writer lease was taken over
    └── QueryError                  SQL that cannot be planned or run
        ├── WriteRefusedError       DDL/DML sent to the read-only analytic path
        └── TableNotReadyError      a table whose registration has not finished (its snapshot is not in the lake)

Native errors (deltalake, datafusion, sqlite3, obstore) are translated in one
place, :func:`translate_storage_error` and friends, and chained with ``from``.
The native classes they match (``deltalake.exceptions``, ``obstore.exceptions``)
are named once, in :func:`native_errors`; callers that must tell a missing object
or a refused conditional write apart use :func:`is_missing_object` and
:func:`is_refused_create` rather than class names.
"""

from __future__ import annotations

import errno
import functools
import re
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = [
    "RheiError",
    "ConfigError",
    "LakeClosedError",
    "SourceError",
    "SchemaError",
    "SchemaChangedError",
    "TypeMismatchError",
    "NonMonotonicUpdateError",
    "SourceUnavailableError",
    "ReadOnlySourceError",
    "DatabaseBindingError",
    "StorageError",
    "StorageUnavailableError",
    "StorageAccessError",
    "CommitConflictError",
    "TableNotFoundError",
    "WatermarkError",
    "CorruptStorageError",
    "LeaseHeldError",
    "LeaseLostError",
    "QueryError",
    "WriteRefusedError",
    "TableNotReadyError",
]


class RheiError(Exception):
    """Base class of every error rhei_lake raises."""

    transient: bool = False


class ConfigError(RheiError, ValueError):
    """The configuration is invalid; the message names the offending field."""


class LakeClosedError(RheiError):
    """The lake was used after :meth:`Lake.close`: open it again (``rhei_lake.open``)."""


class SourceError(RheiError):
    """A problem with the database rhei_lake captures changes from."""


class SchemaError(SourceError):
    """A table or column is unknown, lacks a primary key, or has an unusable type."""


class SchemaChangedError(SchemaError):
    """A mirrored table's schema was changed outside rhei_lake in a way the lake cannot follow.

    For example the table was dropped or renamed away, its primary key changed,
    or a column was renamed. Syncing stops (everything captured before the
    change is committed); the message names the table, the change and what to do.
    """

    def __init__(self, message: str, *, table: str, change: str) -> None:
        super().__init__(message)
        self.table = table
        self.change = change


class TypeMismatchError(SourceError):
    """A value stored in the source does not fit its column's declared type (or a key its canonical spelling).

    SQLite is dynamically typed, so a column declared ``INTEGER`` can hold
    ``'abc'``; and two spellings of one instant would become one lake row. The
    message names the way on from where the value was read: ``seq`` is the
    captured event that stopped the sync (nothing from it on is committed until
    ``Lake.repair_event`` corrects it), ``None`` for a registration's snapshot
    or a polled row, which are fixed in the source.
    """

    def __init__(
        self,
        message: str,
        *,
        table: str,
        column: str,
        primary_key: dict[str, Any] | None = None,
        seq: int | None = None,
        canonical: Any = None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.column = column
        self.primary_key = primary_key
        self.seq = seq
        self.canonical = canonical
        """The spelling a refused primary-key value must take (``None``: the value was refused for its type)."""


class NonMonotonicUpdateError(SourceError):
    """A polled row's ``updated_at`` is older than the version the lake already holds for it.

    Its history would run backwards, so nothing from that row on is committed
    until the source is fixed (set the row's ``updated_at`` to the current time).
    """

    def __init__(self, message: str, *, table: str, primary_key: dict[str, Any]) -> None:
        super().__init__(message)
        self.table = table
        self.primary_key = primary_key


class SourceUnavailableError(SourceError):
    """The source database cannot be reached right now (retry later)."""

    transient = True


class ReadOnlySourceError(SourceError):
    """A write was sent to a source that rhei_lake only reads (sidecar mode)."""


class DatabaseBindingError(SourceError):
    """The database feeds another lake, or was detached from this one.

    A database's CDC log has one reader: a second lake would re-snapshot it and
    prune events the first has not committed. The message names both lakes and
    the way on (``rh detach`` / :func:`rhei_lake.detach_database`).
    """


class StorageError(RheiError):
    """A problem with the lake's storage."""


class StorageUnavailableError(StorageError):
    """The store cannot be reached right now (network, throttling, 5xx, full disk)."""

    transient = True


class StorageAccessError(StorageError):
    """The store refused access: wrong credentials, a missing permission, no such bucket, a read-only disk.

    Retrying cannot help; the message says what to fix.
    """


class CommitConflictError(StorageError):
    """Another writer committed first; re-read the table state and retry."""

    transient = True


class TableNotFoundError(StorageError):
    """No table exists at the given location."""


class WatermarkError(StorageError):
    """The lake's recorded watermark contradicts the source (wrong lake or database)."""


class CorruptStorageError(StorageError):
    """Files under the lake prefix are not what rhei_lake wrote."""


class LeaseHeldError(StorageError):
    """Another process holds the lake's writer lease (only one may sync into a lake)."""


class LeaseLostError(StorageError):
    """This process's writer lease was taken over (it expired while the process stalled)."""


class QueryError(RheiError):
    """SQL that cannot be parsed, planned or executed."""


class WriteRefusedError(QueryError):
    """A write (DDL/DML) was sent to the read-only analytic path."""


class TableNotReadyError(QueryError):
    """A query (or restore) names a table whose registration has not finished.

    Its snapshot was refused or never committed, so the lake holds none of its
    rows and answering would show an empty table where the database has rows.
    ``reason`` is the error that stopped the registration (its message names the
    way on), ``None`` when this process did not see it (a lake opened read-only).
    """

    def __init__(self, message: str, *, table: str, reason: RheiError | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.reason = reason


_TRANSIENT_MARKERS = (
    "connection",
    "connect error",
    "timed out",
    "timeout",
    "temporarily",
    "service unavailable",
    "slowdown",
    "slow down",
    "reduce your request rate",
    "too many requests",
    "throttl",
    "requesttimeout",
    "internalerror",
    "500 internal",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway",
    "429 too many",
    "broken pipe",
    "reset by peer",
    "no space left",
    "disk quota exceeded",
    "dispatch failure",
    "error sending request",
    "io error",
)

_NOT_FOUND_MARKERS = ("not a delta table", "no such file", "not found", "does not exist")

# Status codes are matched with their reason phrase: a bare "403" also matches port 40312 in a URL.

# The log itself cannot be read: no retry will fix it, whatever else the message says.
_DAMAGED_LOG_MARKERS = ("json error", "invalid json", "no table metadata or protocol")

_CORRUPT_MARKERS = (
    *_DAMAGED_LOG_MARKERS,
    "parquet error",
    "invalid parquet",
    "out of specification",
    "unexpected eof",
    "corrupt",
    "checksum",
    "invalid log",
    "logtailversionsnotcontiguous",
    "not contiguous",
)

_CREDENTIAL_MARKERS = (
    "access denied",
    "accessdenied",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "invalidtoken",
    "expiredtoken",
    "403 forbidden",
    "401 unauthorized",
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TIMING = re.compile(r" in [0-9.]+(?:µs|ms|s)\b")
_ROOT_CAUSE = re.compile(r'message: "([^"]+)"')
_BACKTRACE_FRAME = re.compile(r"^\s*(?:\d+: |at \S)")


def _message(exc: BaseException) -> str:
    """One readable line: native errors carry multi-line debug dumps, backtraces and colour codes."""
    text = _ANSI.sub("", str(exc)).strip() or type(exc).__name__
    head, _, debug = text.partition("\n\nDebug source:")
    parts = [p.strip(" \t↳") for p in head.splitlines() if not _BACKTRACE_FRAME.match(p)]
    summary = ": ".join(dict.fromkeys(p for p in parts if p))
    roots = _ROOT_CAUSE.findall(debug)
    if roots and roots[-1] not in summary:
        summary += f" ({roots[-1]})"
    summary = _TIMING.sub("", summary)
    return summary if len(summary) <= 1000 else summary[:997] + "..."


@dataclass(frozen=True)
class NativeErrors:
    """The native exception classes rhei_lake tells apart, grouped by what they mean for a lake."""

    #: A conditional PUT (create only) refused: the object exists.
    refused_create: tuple[type[BaseException], ...]
    #: A commit or conditional PUT lost to another writer.
    conflict: tuple[type[BaseException], ...]
    #: No Delta table at the location.
    no_table: tuple[type[BaseException], ...]
    #: No object under the key (obstore's, and the local file system's).
    missing_object: tuple[type[BaseException], ...]
    #: The store refused the credentials or the permission.
    denied: tuple[type[BaseException], ...]
    #: The table's log or schema is not one delta-rs can follow.
    damaged: tuple[type[BaseException], ...]


@functools.cache
def native_errors() -> NativeErrors:
    """The deltalake and obstore exception classes, mapped once (imported on first use: both load Arrow)."""
    from deltalake import exceptions as delta
    from obstore import exceptions as obs

    refused_create = (obs.AlreadyExistsError, obs.PreconditionError)
    return NativeErrors(
        refused_create=refused_create,
        conflict=(delta.CommitFailedError, *refused_create),
        no_table=(delta.TableNotFoundError,),
        missing_object=(obs.NotFoundError, FileNotFoundError),
        denied=(obs.PermissionDeniedError, obs.UnauthenticatedError),
        damaged=(delta.DeltaProtocolError, delta.SchemaMismatchError),
    )


def is_missing_object(exc: BaseException) -> bool:
    """True if ``exc`` says the object asked for does not exist."""
    return isinstance(exc, native_errors().missing_object)


def is_refused_create(exc: BaseException) -> bool:
    """True if ``exc`` is a conditional PUT (create only) refused because the object exists."""
    return isinstance(exc, native_errors().refused_create)


def translate_storage_error(exc: BaseException, *, where: str) -> StorageError:
    """Map a deltalake/obstore/OS error raised while touching ``where`` to a StorageError."""
    if isinstance(exc, StorageError):
        return exc
    native = native_errors()
    text = _message(exc)
    low = text.lower()
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if isinstance(exc, native.conflict):
        return CommitConflictError(f"{where}: another writer committed first ({text})")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StorageUnavailableError(f"{where}: no space left on device ({text})")
    if code == errno.EROFS or "read-only file system" in low:
        return StorageAccessError(f"{where}: the file system is read-only; a lake needs a writable directory ({text})")
    if isinstance(exc, PermissionError) or code == errno.EACCES:
        return StorageAccessError(f"{where}: permission denied; check the permissions of the lake directory ({text})")
    if isinstance(exc, native.no_table) or (isinstance(exc, native.missing_object) and "delta" not in low):
        return TableNotFoundError(f"{where}: no table here ({text})")
    if "nosuchbucket" in low or "bucket does not exist" in low:
        return StorageAccessError(f"{where}: the bucket does not exist; create it or fix the bucket name ({text})")
    if "requesttimetooskewed" in low:
        return StorageAccessError(f"{where}: this machine's clock is too far off for the store; sync it (NTP) ({text})")
    if isinstance(exc, native.denied) or any(m in low for m in _CREDENTIAL_MARKERS):
        return StorageAccessError(
            f"{where}: access denied; check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
            f"AWS_SESSION_TOKEN) and that they may read and write this bucket and prefix ({text})"
        )
    if any(m in low for m in _TRANSIENT_MARKERS) and not any(m in low for m in _DAMAGED_LOG_MARKERS):
        return StorageUnavailableError(f"{where}: storage unavailable ({text})")
    if isinstance(exc, native.damaged) or any(m in low for m in _CORRUPT_MARKERS):
        return CorruptStorageError(f"{where}: files under the lake are damaged or not rhei_lake's ({text})")
    if any(m in low for m in _NOT_FOUND_MARKERS):
        return TableNotFoundError(f"{where}: {text}")
    if "arrow" in low:
        return CorruptStorageError(f"{where}: {text}")
    return StorageError(f"{where}: {text}")


# DataFusion reports failures of the files it scans inside its own errors.
_SCAN_MARKERS = ("object store error", "parquet error", "objectstore", "io error", "os error")


def translate_query_error(exc: BaseException, *, sql: str) -> QueryError | StorageError:
    """Map a DataFusion error to a QueryError carrying DataFusion's message.

    Failures of the files a query scans are storage errors: transient when the
    store is unreachable, CorruptStorageError when a file is missing or damaged.
    """
    if isinstance(exc, QueryError):
        return exc
    text = _message(exc)
    if any(m in text.lower() for m in _SCAN_MARKERS):
        # Not the SQL: the files behind a table (missing, damaged, or the store unreachable).
        return translate_storage_error(exc, where="query")
    for prefix in ("DataFusion error: ", "Execution error: "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    low = text.lower()
    if "ddl not supported" in low or "dml not supported" in low or "statement not supported" in low:
        return WriteRefusedError(f"the analytic path is read-only: {text}")
    snippet = " ".join(sql.split())
    if len(snippet) > 200:
        snippet = snippet[:197] + "..."
    return QueryError(f"{text} (in: {snippet})")


def raise_storage(exc: BaseException, *, where: str) -> NoReturn:
    """Raise :func:`translate_storage_error` of ``exc`` chained to it (a :class:`RheiError` as it is:
    it was mapped where it arose, and re-mapping would lose whether it is transient)."""
    if isinstance(exc, RheiError):
        raise exc
    raise translate_storage_error(exc, where=where) from exc
