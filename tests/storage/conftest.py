"""Fixtures giving each storage tier's TableStore, BlobStore and LakeStorage."""

from __future__ import annotations

import pytest

from rhei_lake.storage.lake_storage import LakeStorage, open_storage
from rhei_lake.storage.location import parse_storage_url


@pytest.fixture
def lake_storage(storage) -> LakeStorage:
    url, options = storage
    return open_storage(parse_storage_url(url, options))


@pytest.fixture
def second_lake_storage(storage) -> LakeStorage:
    """Another handle on the same lake, as a second process would have."""
    url, options = storage
    return open_storage(parse_storage_url(url, options))


from tests.query.conftest import proxied_lake  # noqa: E402,F401 - the same proxied S3 lake for the stores' counts
