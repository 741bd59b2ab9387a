"""The public API is small and deliberate: pinned here."""

from __future__ import annotations

import rhei_lake
from rhei_lake import errors


def test_public_names_are_pinned():
    assert sorted(rhei_lake.__all__) == sorted(
        [
            "__version__",
            "open",
            "detach_database",
            "DetachReport",
            "Lake",
            "ReturnedRows",
            "LakeConfig",
            "PolledTable",
            "TableSpec",
            "Column",
            "SyncReport",
            "TableSyncReport",
            "SyncStatus",
            "TableStatus",
            "LoopStatus",
            "ErrorInfo",
            "Route",
            "RestoreReport",
            "CompactionReport",
            "TableCompactionReport",
            *errors.__all__,
        ]
    )
    for name in rhei_lake.__all__:
        assert hasattr(rhei_lake, name), name


def test_every_error_is_a_rhei_error_with_a_transient_marker():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.RheiError)
        assert isinstance(cls.transient, bool)
    assert errors.StorageUnavailableError.transient and errors.CommitConflictError.transient
    assert not errors.SchemaError.transient


def test_native_error_dumps_become_one_line():
    dump = Exception(
        "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/k in 299.495µs - HTTP error: error sending "
        'request\n\nDebug source:\nGeneric {\n    source: ConnectError(\n  Os {\n message: "Connection refused",\n }'
    )
    text = str(errors.translate_storage_error(dump, where="s3://b"))
    assert "\n" not in text and "Debug source" not in text and "µs" not in text
    assert "Connection refused" in text and isinstance(
        errors.translate_storage_error(dump, where="x"), errors.StorageUnavailableError
    )
    kernel = OSError(
        "Kernel error -> Generic S3 error\n  \x1b[31m↳\x1b[0m error sending request\n   \x1b[31m↳\x1b[0m Connection refused (os error 111)\n"
    )
    text = str(errors.translate_storage_error(kernel, where="s3://b"))
    assert (
        text
        == "s3://b: storage unavailable (Kernel error -> Generic S3 error: error sending request: Connection refused (os error 111))"
    )
