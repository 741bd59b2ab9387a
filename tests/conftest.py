"""Shared fixtures: an isolated environment, a moto S3 server subprocess, storage tiers, HTAP lakes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import rhei_lake

from tests.support.moto_server import MotoServer, start_moto
from tests.support.postgres import REQUIRE_POSTGRES, PostgresServer, PostgresUnavailable, start_postgres

STORAGE_KINDS = ("memory", "local", "s3")
ENGINES = ("datafusion", "duckdb")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never see the AWS or rhei_lake settings of the person running them."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "RHEI_")):
            monkeypatch.delenv(key, raising=False)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto S3 server (a subprocess on a free loopback port) for the session."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (skipped when the server binaries are missing,
    unless RHEI_REQUIRE_POSTGRES=1, as CI sets, makes that a failure)."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"RHEI_REQUIRE_POSTGRES=1 but PostgreSQL is unavailable: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL server (owned by the test role)."""
    return postgres.create_database()


@pytest.fixture
def s3_lake(moto: MotoServer) -> tuple[str, dict[str, str]]:
    """A fresh bucket on the moto server: (URL, storage_options)."""
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(bucket)
    return f"s3://{bucket}/lake", moto.storage_options()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each query engine in turn (LakeConfig.engine)."""
    return request.param


@pytest.fixture(params=STORAGE_KINDS)
def storage(request: pytest.FixtureRequest, tmp_path) -> tuple[str, dict[str, str]]:
    """Each storage tier in turn: (URL, storage_options)."""
    kind = request.param
    if kind == "memory":
        return f"memory://{uuid.uuid4().hex}", {}
    if kind == "local":
        return str(tmp_path / "lake"), {}
    request.applymarker(pytest.mark.s3)
    return request.getfixturevalue("s3_lake")


@pytest.fixture(params=("local", "s3"))
def durable_storage(request: pytest.FixtureRequest, tmp_path) -> tuple[str, dict[str, str]]:
    """The durable tiers in turn: (URL, storage_options)."""
    if request.param == "local":
        return str(tmp_path / "lake"), {}
    request.applymarker(pytest.mark.s3)
    return request.getfixturevalue("s3_lake")


class HtapLakes:
    """Opens lakes that own a SQLite database (HTAP mode) for one test; closes every one at teardown."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self._request = request
        self._tmp_path = tmp_path
        param = getattr(request, "param", None)
        self._defaults: dict[str, Any] = dict(param) if isinstance(param, dict) else {}
        if isinstance(param, str):
            self._defaults["tier"] = param
        self._memory = f"memory://{uuid.uuid4().hex}"
        self.opened: list[rhei_lake.Lake] = []

    def storage(self, tier: str) -> tuple[str, dict[str, str]]:
        """The test's lake on ``tier`` (``memory``, ``local`` or ``s3``): (URL, storage_options)."""
        if tier == "memory":
            return self._memory, {}
        if tier == "local":
            return str(self._tmp_path / "lake"), {}
        if tier == "s3":
            return self._request.getfixturevalue("s3_lake")
        raise ValueError(f"unknown storage tier {tier!r}")

    def __call__(
        self,
        *,
        db: str | Path | None = None,
        storage: str | tuple[str, dict[str, str]] | None = None,
        tier: str | None = None,
        **config: Any,
    ) -> rhei_lake.Lake:
        """Open ``db`` (default ``app.db`` in ``tmp_path``) on ``storage``, a URL or the ``(URL, storage_options)``
        pair the tier fixtures give, else on the test's lake on ``tier`` (default: the fixture's parameter, else
        ``local``). ``config`` are :class:`rhei_lake.LakeConfig` fields, over the parameter's."""
        settings = {**self._defaults, **config}
        default_tier = settings.pop("tier", "local")
        if storage is None:
            url, options = self.storage(tier or default_tier)
        else:
            url, options = (storage, {}) if isinstance(storage, str) else storage
        oltp_path = str(self._tmp_path / "app.db") if db is None else str(db)
        lake = rhei_lake.open(oltp_path=oltp_path, storage=url, storage_options=options, **settings)
        self.opened.append(lake)
        return lake

    def close_all(self) -> None:
        for lake in reversed(self.opened):
            lake.close(final_sync=False)


@pytest.fixture
def htap_lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HtapLakes]:
    """A factory of HTAP lakes: ``htap_lake(**config)`` opens ``tmp_path/app.db`` on ``tmp_path/lake``.

    Parametrise it indirectly with a tier name (``"memory"``, ``"local"``, ``"s3"``) or a dict of
    ``LakeConfig`` overrides (``tier`` among them) to change its defaults. Every lake it opened and the
    test left open is closed at teardown, without a final sync.
    """
    lakes = HtapLakes(request, tmp_path)
    try:
        yield lakes
    finally:
        lakes.close_all()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "moto" in getattr(item, "fixturenames", ()) or "s3_lake" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.s3)
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "s3" in callspec.params.values():
            item.add_marker(pytest.mark.s3)
        if callspec is not None and "postgresql" in callspec.params.values():
            item.add_marker(pytest.mark.postgres)
