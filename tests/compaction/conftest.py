"""Fixtures of the compaction tests."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def durable_lake(request: pytest.FixtureRequest, tmp_path) -> tuple[str, dict[str, str]]:
    """A local lake, and (in the slow set) one on moto S3: (URL, storage_options)."""
    if request.param == "local":
        return str(tmp_path / "lake"), {}
    return request.getfixturevalue("s3_lake")


from tests.query.conftest import proxied_lake  # noqa: E402,F401 - the same proxied S3 lake for compaction's counts
