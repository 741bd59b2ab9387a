"""A small shop lake (built once per storage tier) and Flight SQL servers over it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import rhei_lake
from rhei_lake.flight import FlightService, serve_flight
from rhei_lake.timeutil import now_micros

ORDERS = 300


@dataclass(frozen=True)
class ShopLake:
    """Where the lake is, and the instant between its two syncs (``as_of`` sees the first only)."""

    url: str
    options: dict[str, str]
    before_updates: int  # UTC micros

    def open(self, **options: object) -> rhei_lake.Lake:
        return rhei_lake.open(storage=self.url, storage_options=self.options, **options)


def build_shop_lake(url: str, options: dict[str, str], db_path: str) -> ShopLake:
    """``orders``: 300 rows synced; then 10 updated and 5 deleted in a second sync."""
    with rhei_lake.open(oltp_path=db_path, storage=url, storage_options=options) as lake:
        lake.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, total REAL, day DATE)")
        lake.register_table("orders")
        for i in range(ORDERS):
            lake.execute(
                "INSERT INTO orders VALUES (?, ?, ?, ?)",
                (i, f"c{i % 7}", round(i * 1.25, 2), f"2026-01-{1 + i % 28:02d}"),
            )
        lake.sync_now()
        time.sleep(0.01)
        before = now_micros()
        time.sleep(0.01)
        lake.execute("UPDATE orders SET total = total + 1000 WHERE id < 10")
        lake.execute("DELETE FROM orders WHERE id >= 295")
        lake.sync_now()
    return ShopLake(url, options, before)


@pytest.fixture(scope="session", params=("local", "s3"))
def shop_lake(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ShopLake:
    """The shop lake on a local directory, then on a moto S3 bucket."""
    work = tmp_path_factory.mktemp("shop")
    if request.param == "local":
        return build_shop_lake(str(work / "lake"), {}, str(work / "shop.db"))
    moto = request.getfixturevalue("moto")
    bucket = f"shop-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    return build_shop_lake(f"s3://{bucket}/lake", moto.storage_options(), str(work / "shop.db"))


@pytest.fixture(scope="module", params=("datafusion", "duckdb"))
def served(request: pytest.FixtureRequest, shop_lake: ShopLake) -> Iterator[tuple[rhei_lake.Lake, FlightService]]:
    """The shop lake opened read-only and served without authentication, on each query engine."""
    with shop_lake.open(engine=request.param) as lake, serve_flight(lake) as server:
        yield lake, server
