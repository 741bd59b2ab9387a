"""Bearer-token authentication and TLS, through the real ADBC driver."""

from __future__ import annotations

import datetime
import ipaddress
import logging

import adbc_driver_flightsql
import adbc_driver_manager
import pyarrow.flight as flight
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import rhei_lake
from rhei_lake.flight import serve_flight
from tests.flight.flight_clients import RawClient, adbc_connect, pb, query

TOKEN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def guarded(shop_lake):
    """The shop lake served with a bearer token."""
    with shop_lake.open() as lake, serve_flight(lake, token=TOKEN) as server:
        yield lake, server


def test_the_right_token_is_admitted(guarded):
    _lake, server = guarded
    assert server.auth
    assert query(server, "SELECT count(*) AS n FROM orders", token=TOKEN).num_rows == 1
    with adbc_connect(server, token=TOKEN) as conn:
        assert [
            t["table_name"]
            for t in conn.adbc_get_objects(depth="tables")
            .read_all()
            .to_pylist()[0]["catalog_db_schemas"][0]["db_schema_tables"]
        ] == ["orders", "orders_changes", "orders_history"]


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", TOKEN[:-1], ""])
def test_a_missing_or_wrong_token_is_unauthenticated(guarded, token, caplog):
    _lake, server = guarded
    caplog.set_level(logging.DEBUG)
    with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED") as excinfo:
        query(server, "SELECT count(*) FROM orders", token=token)
    assert "bearer token" in str(excinfo.value)
    with RawClient(server, token=token or None) as raw:  # every RPC, not only queries
        for call in (
            lambda: raw.fetch(pb.CommandGetTables()),
            lambda: raw.action("ClosePreparedStatement", pb.ActionClosePreparedStatementRequest()),
            lambda: list(raw.client.list_actions(raw.options)),
        ):
            with pytest.raises(flight.FlightUnauthenticatedError):
                call()
    assert TOKEN not in caplog.text


def test_other_authorization_schemes_are_refused(guarded):
    _lake, server = guarded
    with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED"):
        query(
            server, "SELECT 1", **{adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Basic {TOKEN}"}
        )


def test_the_token_can_come_from_the_lake_config(shop_lake):
    with rhei_lake.open(storage=shop_lake.url, storage_options=shop_lake.options, flight_token=TOKEN) as lake:
        assert TOKEN not in repr(lake.config)
        with serve_flight(lake) as server:
            assert query(server, "SELECT 1 AS x", token=TOKEN).to_pylist() == [{"x": 1}]
            with pytest.raises(adbc_driver_manager.Error, match="UNAUTHENTICATED"):
                query(server, "SELECT 1 AS x")


def test_without_a_token_no_authentication_is_asked(served):
    _lake, server = served
    assert not server.auth
    assert query(server, "SELECT 1 AS x", token="anything").to_pylist() == [{"x": 1}]


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_with_a_token(shop_lake, tmp_path):
    cert, key = _self_signed(tmp_path)
    roots = {adbc_driver_flightsql.DatabaseOptions.TLS_ROOT_CERTS.value: cert.read_text()}
    with (
        rhei_lake.open(
            storage=shop_lake.url,
            storage_options=shop_lake.options,
            flight_tls_cert=str(cert),
            flight_tls_key=str(key),
        ) as lake,
        serve_flight(lake, token=TOKEN) as server,
    ):
        assert server.location.startswith("grpc+tls://127.0.0.1:")
        assert query(server, "SELECT count(*) AS n FROM orders", token=TOKEN, **roots).num_rows == 1
        with pytest.raises(adbc_driver_manager.Error):  # the client does not trust an unknown certificate
            query(server, "SELECT 1", token=TOKEN)
        plain = server.location.replace("grpc+tls://", "grpc://")
        with pytest.raises(adbc_driver_manager.Error):  # no plaintext on a TLS port
            query(plain, "SELECT 1", token=TOKEN)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {
                "tls_cert": b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
                "tls_key": b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
            },
            "cannot serve Flight SQL",
        ),
        ({"tls_cert": "/no/such/cert.pem", "tls_key": "/no/such/key.pem"}, "flight_tls_cert: cannot read"),
        ({"tls_cert": b"not pem", "tls_key": b"not pem"}, "not a PEM file"),
        ({"tls_cert": "/x.pem"}, "set both or neither"),
        ({"token": "  "}, "flight_token"),
        ({"port": 70000}, "flight_port"),
        ({"compression": "gzip"}, "flight_compression"),
    ],
)
def test_bad_server_settings_are_config_errors(kwargs, message):
    with rhei_lake.open(storage="memory://") as lake:
        with pytest.raises(rhei_lake.ConfigError, match=message):
            serve_flight(lake, **kwargs)


def test_a_busy_port_is_a_config_error(served):
    lake, server = served
    with pytest.raises(rhei_lake.ConfigError, match=f"cannot serve Flight SQL on 127.0.0.1:{server.port}"):
        serve_flight(lake, port=server.port)
