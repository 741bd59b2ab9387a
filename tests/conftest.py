"""Shared fixtures: an isolated environment, a moto S3 server subprocess, storage tiers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

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
