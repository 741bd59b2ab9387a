"""The Docker setup: the Dockerfile's shape, and docker/minio's configuration run against moto instead of MinIO.

No Docker engine runs here, so the compose file is read for what its services would run (the
``rhei`` service's command and environment, the ``shop`` service's program and the shared
volume) and those run as processes, with ``AWS_ENDPOINT_URL`` pointing at a moto S3 server.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

import rhei_lake
from tests.service.serve_process import ServeProcess, scrape, value
from tests.support.rh import ROOT

MINIO = ROOT / "docker" / "minio"
COMPOSE = yaml.safe_load((MINIO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _mounts(service: dict, data: Path) -> dict[str, Path]:
    """Container path -> host path, for the service's volumes (named volumes live under ``data``)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = MINIO / source if source.startswith(".") else data
    return out


def _on_host(path: str, mounts: dict[str, Path]) -> str:
    for target, host in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return str(host / path[len(target) :].lstrip("/")) if path != target else str(host)
    return path


def test_the_dockerfile_builds_in_stages_and_runs_rh_as_a_user():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, flags=re.MULTILINE)
    assert len(stages) == 2 and stages[0][1] == "build" and "slim" in stages[1][0]
    final = text[text.rindex("\nFROM ") :]
    assert "COPY --from=build /opt/rhei /opt/rhei" in final and "pip install" not in final
    user = re.search(r"^USER\s+(\S+)", final, flags=re.MULTILINE)
    assert user and user.group(1) not in ("root", "0")
    assert 'ENTRYPOINT ["rh"]' in final and 'CMD ["serve", "--headless", "--config", "/etc/rhei/config.toml"]' in final
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[0] == "*" and {"!pyproject.toml", "!README.md", "!rhei_lake"} <= set(ignored)


def test_compose_wires_minio_a_bucket_the_shop_and_rh_serve():
    assert set(SERVICES) == {"minio", "create-bucket", "shop", "rhei"}
    config = tomllib.loads((MINIO / "rhei.toml").read_text())
    bucket = config["storage"].removeprefix("s3://").split("/")[0]
    assert f"mb --ignore-existing local/{bucket}" in " ".join(SERVICES["create-bucket"]["command"])
    rhei = SERVICES["rhei"]
    assert rhei["command"] == ["serve", "--headless", "--config", "/etc/rhei/config.toml"]
    assert rhei["depends_on"] == {
        "create-bucket": {"condition": "service_completed_successfully"},
        "shop": {"condition": "service_healthy"},
    }
    env = rhei["environment"]
    assert (
        env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        and env["AWS_SECRET_ACCESS_KEY"] == SERVICES["minio"]["environment"]["MINIO_ROOT_PASSWORD"]
    )
    shop_db = SERVICES["shop"]["entrypoint"][2]
    assert config["source"] == f"sqlite://{shop_db}"  # the file the shop writes, on the shared volume
    assert _mounts(rhei, Path("/v"))["/data"] == _mounts(SERVICES["shop"], Path("/v"))["/data"]
    assert config["serve"]["compact_schedule"] and config["serve"]["metrics_port"] == 9108
    assert f"{config['serve']['metrics_port']}:9108" in rhei["ports"]


def _run_shop(data: Path, *extra: str) -> subprocess.Popen:
    shop = SERVICES["shop"]
    mounts = _mounts(shop, data)
    program = [_on_host(arg, mounts) for arg in shop["entrypoint"][1:]]
    return subprocess.Popen(
        [sys.executable, *program, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def test_the_compose_configuration_mirrors_the_shop_into_s3(moto, tmp_path):
    data = tmp_path / "data"  # the shared volume
    data.mkdir()
    rhei = SERVICES["rhei"]
    mounts = _mounts(rhei, data)
    config = tomllib.loads((MINIO / "rhei.toml").read_text())
    storage = config["storage"]
    try:
        moto.create_bucket(storage.removeprefix("s3://").split("/")[0])  # what create-bucket does
    except Exception as exc:  # noqa: BLE001 - the bucket of an earlier run in this session
        assert "BucketAlreadyOwnedByYou" in str(exc), exc

    first = _run_shop(data, "--changes", "200", "--rate", "0", "--seed", "1")
    assert first.wait(60) == 0, first.stderr.read()

    env = {
        **{k: str(v) for k, v in rhei["environment"].items()},
        "AWS_ENDPOINT_URL": moto.endpoint,  # moto instead of MinIO
        "RHEI_SOURCE": "sqlite://" + _on_host(config["source"].removeprefix("sqlite://"), mounts),
        "RHEI_METRICS_HOST": "127.0.0.1",  # loopback only, in a test
        "RHEI_METRICS_PORT": "0",
        "RHEI_HARD_DELETE_INTERVAL": "0",  # see every hard delete within the test's seconds
        "RHEI_COMPACT_SCHEDULE": "*/2 * * * * *",  # every two seconds instead of five minutes
        "RHEI_HEARTBEAT_INTERVAL": "1",
    }
    args = [_on_host(arg, mounts) for arg in rhei["command"]]
    assert args[:2] == ["serve", "--headless"]
    serve = ServeProcess(*args[2:], cwd=tmp_path, env=env)
    try:
        start = serve.event("start")
        assert start["storage"] == storage and start["mode"] == "sidecar"
        serve.event("sync")
        second = _run_shop(data, "--changes", "300", "--rate", "150", "--seed", "2")  # writes while it serves
        assert second.wait(60) == 0, second.stderr.read()
        compaction = serve.event("compaction", timeout=60)
        assert set(compaction["tables"]) == {"orders", "customers"}
        samples = scrape(start["metrics"])
        assert value(samples, "rhei_sync_events_total", table="orders") > 0
        assert value(samples, "rhei_compaction_runs_total", result="ok") >= 1
        assert serve.stop(signal.SIGTERM) == 0, serve.stderr
    finally:
        serve.kill()
    assert "rhei-demo-secret" not in serve.stderr + "".join(map(str, serve.lines))

    shop = sqlite3.connect(data / "shop.db")
    orders = shop.execute(
        "SELECT id, customer_id, status, total FROM orders WHERE deleted_at IS NULL ORDER BY id"
    ).fetchall()
    customers = shop.execute("SELECT id, name, city FROM customers ORDER BY id").fetchall()
    with rhei_lake.open(storage=storage, storage_options=moto.storage_options()) as lake:
        mirrored = lake.query("SELECT id, customer_id, status, total FROM orders ORDER BY id").to_pylist()
        assert [tuple(r.values()) for r in mirrored] == orders
        people = lake.query("SELECT id, name, city FROM customers ORDER BY id").to_pylist()
        assert [tuple(r.values()) for r in people] == customers
        status = lake.sync_status()
        assert status.tables["orders"].folded_seq is not None  # compacted: history written
