"""Fixtures for the sidecar tests: an external source database of each kind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sidecar_source import ITEMS_DDL, SourceDB, postgres_source, sqlite_source


def make_source(request: pytest.FixtureRequest, kind: str, tmp_path) -> SourceDB:
    if kind == "sqlite":
        return sqlite_source(str(tmp_path / "external.db"))
    server = request.getfixturevalue("postgres")
    return postgres_source(server, server.create_database())


@pytest.fixture(params=["sqlite", "postgresql"])
def source_db(request: pytest.FixtureRequest, tmp_path) -> Iterator[SourceDB]:
    """An external database of each kind holding an empty ``items`` table."""
    source = make_source(request, request.param, tmp_path)
    source.execute(ITEMS_DDL[source.kind])
    try:
        yield source
    finally:
        source.close()
