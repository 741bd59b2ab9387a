"""The flight_* options of LakeConfig: validated at open(), the token never shown."""

from __future__ import annotations

import pytest

import rhei_lake
from rhei_lake.cli.common import resolve_options
from rhei_lake.config import LakeConfig, build_config
from rhei_lake.flight import serve_flight
from tests.flight.flight_clients import query
from tests.support.moto_server import free_port

SECRET = "s3cr3t-flight-token"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"flight_port": -1}, "flight_port"),
        ({"flight_port": 65536}, "flight_port"),
        ({"flight_port": "http"}, "flight_port"),
        ({"flight_host": ""}, "flight_host"),
        ({"flight_token": "   "}, "flight_token: must not be empty"),
        ({"flight_tls_cert": "server.crt"}, "flight_tls_cert and flight_tls_key go together"),
        ({"flight_tls_key": "server.key"}, "flight_tls_cert and flight_tls_key go together"),
        ({"flight_compression": "gzip"}, "flight_compression"),
    ],
)
def test_invalid_flight_options_fail_at_open_naming_the_field(options, message):
    with pytest.raises(rhei_lake.ConfigError, match=message) as excinfo:
        rhei_lake.open(**options)
    assert SECRET not in str(excinfo.value)


def test_the_token_is_masked_everywhere():
    cfg = LakeConfig(flight_token=SECRET, flight_port=50051)
    assert cfg.flight_token.get_secret_value() == SECRET
    for text in (repr(cfg), str(cfg), cfg.model_dump_json(), str(cfg.model_dump())):
        assert SECRET not in text
    assert build_config(cfg, batch_size=5).flight_token.get_secret_value() == SECRET
    with pytest.raises(rhei_lake.ConfigError) as excinfo:
        build_config(cfg, flight_port=-5)
    assert SECRET not in str(excinfo.value)


def test_defaults_bind_loopback_and_leave_the_server_off():
    cfg = LakeConfig()
    assert (cfg.flight_host, cfg.flight_port, cfg.flight_token, cfg.flight_compression) == (
        "127.0.0.1",
        None,
        None,
        "zstd",
    )


def test_serve_flight_takes_its_settings_from_the_config_file(tmp_path):
    port = free_port()
    config = tmp_path / "rhei.toml"
    config.write_text(
        f'storage = "memory://cfg"\nflight_port = {port}\nflight_token = "{SECRET}"\nflight_compression = "lz4"\n'
    )
    with rhei_lake.open(**resolve_options(config=config)) as lake, serve_flight(lake) as server:
        assert (server.host, server.port, server.auth) == ("127.0.0.1", port, True)
        assert query(server, "SELECT 1 AS x", token=SECRET).to_pylist() == [{"x": 1}]


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_every_compression_reads_back(compression):
    with rhei_lake.open(storage="memory://", flight_compression=compression) as lake, serve_flight(lake) as server:
        got = query(server, "SELECT value, repeat('ab', 50) AS pad FROM range(50000)")
        assert got.num_rows == 50000 and set(got.column("pad").to_pylist()) == {"ab" * 50}
