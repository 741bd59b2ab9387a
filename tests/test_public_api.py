"""The public API is small and deliberate: pinned here."""

from __future__ import annotations

import rhei_lake
from rhei_lake import errors


def test_public_names_are_pinned():
    assert sorted(rhei_lake.__all__) == sorted(
        [
            "__version__", "open", "Lake", "LakeConfig", "TableSpec", "Column", "SyncReport", "TableSyncReport",
            "SyncStatus", "TableStatus", "LoopStatus", "ErrorInfo", "Route", "RestoreReport",
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
