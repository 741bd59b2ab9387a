"""Native errors become rhei_lake errors with the right class, transient marker and a readable line."""

from __future__ import annotations

import errno
import sqlite3

import pytest

from rhei_lake import errors
from rhei_lake.capture.sqlite_db import translate_sqlite_error
from rhei_lake.errors import (
    CommitConflictError,
    CorruptStorageError,
    QueryError,
    SchemaError,
    SourceError,
    SourceUnavailableError,
    StorageAccessError,
    StorageError,
    StorageUnavailableError,
    TableNotFoundError,
)


def _native(module: str, name: str, text: str) -> BaseException:
    """An exception of the native library's own class, as it raises it."""
    lib = __import__(module, fromlist=["x"])
    return getattr(lib, name)(text)


S3 = "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/k - Server returned non-2xx status code: "

STORAGE = [
    (_native("obstore.exceptions", "AlreadyExistsError", "Object at location k already exists"), CommitConflictError),
    (_native("obstore.exceptions", "PreconditionError", "Request precondition failure"), CommitConflictError),
    (_native("deltalake.exceptions", "CommitFailedError", "Concurrent transaction failed."), CommitConflictError),
    (_native("deltalake.exceptions", "TableNotFoundError", "no log files"), TableNotFoundError),
    (_native("obstore.exceptions", "NotFoundError", "Object at location k not found"), TableNotFoundError),
    (_native("obstore.exceptions", "PermissionDeniedError", "denied"), StorageAccessError),
    (_native("obstore.exceptions", "UnauthenticatedError", "no credentials"), StorageAccessError),
    (OSError(S3 + "403 Forbidden: <Code>InvalidAccessKeyId</Code>"), StorageAccessError),
    (OSError(S3 + "403 Forbidden: <Code>SignatureDoesNotMatch</Code>"), StorageAccessError),
    (OSError(S3 + "400 Bad Request: <Code>ExpiredToken</Code>"), StorageAccessError),
    (OSError(S3 + "403 Forbidden: <Code>RequestTimeTooSkewed</Code>"), StorageAccessError),
    (OSError(S3 + "404 Not Found: <Code>NoSuchBucket</Code>"), StorageAccessError),
    (OSError(S3 + "503 Service Unavailable: <Code>SlowDown</Code>"), StorageUnavailableError),
    (OSError(S3 + "500 Internal Server Error: <Code>InternalError</Code>"), StorageUnavailableError),
    (OSError(S3 + "429 Too Many Requests"), StorageUnavailableError),
    (OSError("Generic S3 error: error sending request: operation timed out"), StorageUnavailableError),
    (OSError("Generic S3 error: HTTP error: error sending request (Connection refused)"), StorageUnavailableError),
    (OSError(errno.ENOSPC, "No space left on device"), StorageUnavailableError),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), StorageUnavailableError),
    (
        OSError("Generic LocalFileSystem error: Unable to copy data to file: No space left on device (os error 28)"),
        StorageUnavailableError,
    ),
    (PermissionError(errno.EACCES, "Permission denied"), StorageAccessError),
    (OSError(errno.EROFS, "Read-only file system"), StorageAccessError),
    (
        _native(
            "deltalake.exceptions",
            "DeltaError",
            "Kernel error: Json error: unexpected 'h'\n   0: <unknown>\n"
            "   1: start_thread\n             at ./nptl/pthread_create.c:442:8\n",
        ),
        CorruptStorageError,
    ),
    (
        _native(
            "deltalake.exceptions", "DeltaError", "Kernel error: No table metadata or protocol found in delta log."
        ),
        CorruptStorageError,
    ),
    (_native("deltalake.exceptions", "DeltaProtocolError", "unsupported reader features"), CorruptStorageError),
    (_native("deltalake.exceptions", "SchemaMismatchError", "cannot cast"), CorruptStorageError),
    (_native("deltalake.exceptions", "DeltaError", "something nobody expected"), StorageError),
]


@pytest.mark.parametrize(
    ("native", "expected"), STORAGE, ids=[f"{type(n).__name__}-{i}" for i, (n, _) in enumerate(STORAGE)]
)
def test_storage_errors_are_classified(native, expected):
    translated = errors.translate_storage_error(native, where="s3://bucket/lake")
    assert type(translated) is expected, str(translated)
    text = str(translated)
    assert text.startswith("s3://bucket/lake: ") and "\n" not in text and "<unknown>" not in text
    assert "pthread_create" not in text
    assert translated.transient == (expected in (StorageUnavailableError, CommitConflictError))


def test_access_errors_say_what_to_fix():
    denied = errors.translate_storage_error(OSError(S3 + "403 Forbidden: InvalidAccessKeyId"), where="s3://b")
    assert "AWS_ACCESS_KEY_ID" in str(denied) and "AWS_SECRET_ACCESS_KEY" in str(denied)
    bucket = errors.translate_storage_error(OSError(S3 + "404 NoSuchBucket"), where="s3://b")
    assert "create it or fix the bucket name" in str(bucket)
    local = errors.translate_storage_error(PermissionError(errno.EACCES, "Permission denied"), where="/data/lake")
    assert "permissions of the lake directory" in str(local)


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        (Exception("DataFusion error: Error during planning: table 'x' not found"), QueryError),
        (
            Exception("External error: Parquet error: Object Store error: Object at location /l/t/p.parquet not found"),
            CorruptStorageError,
        ),
        (
            Exception("FFI error: Parquet error: Object Store error: Generic S3 error: error sending request"),
            StorageUnavailableError,
        ),
    ],
)
def test_query_errors_separate_bad_sql_from_bad_storage(native, expected):
    assert type(errors.translate_query_error(native, sql="SELECT 1")) is expected


@pytest.mark.parametrize(
    ("message", "expected", "transient"),
    [
        ("database is locked", SourceUnavailableError, True),
        ("disk I/O error", SourceUnavailableError, True),
        ("database or disk is full", SourceUnavailableError, True),
        ("attempt to write a readonly database", SourceError, False),
        ("no such table: orders", SchemaError, False),
        ("no such column: totl", SchemaError, False),
        ("file is not a database", SourceError, False),
        ('near "SELEC": syntax error', SourceError, False),
    ],
)
def test_sqlite_errors_are_classified(message, expected, transient):
    translated = translate_sqlite_error(sqlite3.OperationalError(message), "app.db")
    assert type(translated) is expected and translated.transient is transient
    assert str(translated).startswith("app.db: ")


def test_status_codes_are_not_matched_inside_port_numbers():
    refused = OSError("Generic S3 error: Error performing GET http://127.0.0.1:40312/b - error sending request")
    assert type(errors.translate_storage_error(refused, where="s3://b")) is StorageUnavailableError
    bad = OSError("Generic S3 error: Error performing GET http://127.0.0.1:50399/b - 400 Bad Request: InvalidArgument")
    assert type(errors.translate_storage_error(bad, where="s3://b")) is StorageError


def test_native_errors_are_told_apart_by_class_not_name():
    """A look-alike class of the same name is not the native error: only deltalake's and obstore's own match."""
    from obstore.exceptions import AlreadyExistsError, NotFoundError

    class NotFoundErrorLookalike(Exception):
        pass

    NotFoundErrorLookalike.__name__ = "NotFoundError"
    assert errors.is_missing_object(NotFoundError("k")) and errors.is_missing_object(FileNotFoundError("k"))
    assert not errors.is_missing_object(NotFoundErrorLookalike("k"))
    assert errors.is_refused_create(AlreadyExistsError("k")) and not errors.is_refused_create(NotFoundError("k"))
    assert type(errors.translate_storage_error(NotFoundErrorLookalike("gone"), where="x")) is StorageError


def test_a_closed_lake_says_so_with_its_own_class(tmp_path):
    import pyarrow.flight as flight

    import rhei_lake
    from rhei_lake.flight.status import to_flight_error

    lake = rhei_lake.open(storage=str(tmp_path / "lake"))
    lake.close()
    with pytest.raises(errors.LakeClosedError, match="closed") as raised:
        lake.query("SELECT 1")
    assert isinstance(raised.value, errors.RheiError) and not raised.value.transient
    assert isinstance(to_flight_error(raised.value), flight.FlightUnavailableError)
