"""Fixtures of the query tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3_latency_proxy import LatencyProxy


@pytest.fixture
def proxied_lake(moto, s3_lake) -> Iterator[tuple[str, dict[str, str], LatencyProxy]]:
    """An S3 lake reached through a proxy that counts requests: (URL, storage_options, proxy)."""
    url, options = s3_lake
    proxy = LatencyProxy(moto.endpoint)
    try:
        yield url, {**options, "AWS_ENDPOINT_URL": proxy.endpoint}, proxy
    finally:
        proxy.close()
