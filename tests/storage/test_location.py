"""Storage URLs and S3 option resolution."""

from __future__ import annotations

import os
import string

import pytest

import rhei_lake
from rhei_lake.storage.lake_storage import decode_table_dir, encode_table_dir
from rhei_lake.storage.location import parse_storage_url, resolve_s3_options


def test_url_kinds(tmp_path):
    assert parse_storage_url("memory://").scheme == "memory"
    assert parse_storage_url("memory://shared").url == "memory://shared"
    local = parse_storage_url(str(tmp_path / "lake"))
    assert (local.scheme, local.root) == ("file", str(tmp_path / "lake"))
    assert parse_storage_url(f"file://{tmp_path}/lake").root == str(tmp_path / "lake")
    assert parse_storage_url("./lake").root == os.path.abspath("lake")
    s3 = parse_storage_url("s3://bucket/some/prefix/")
    assert (s3.scheme, s3.bucket, s3.prefix) == ("s3", "bucket", "some/prefix")
    assert s3.table_uri("t", "changes") == "s3://bucket/some/prefix/t/changes"
    # delta-rs panics on these, or decodes the escape and looks elsewhere (measured)
    for bad in ("s3://bucket/a[b", "s3://bucket/x/%5E", "s3://bucket/a|b/c", "s3://bucket/x%41y"):
        with pytest.raises(rhei_lake.ConfigError, match="cannot take"):
            parse_storage_url(bad)


def test_s3_options_from_environment_under_explicit_ones():
    env = {
        "AWS_ACCESS_KEY_ID": "env-key",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_ENDPOINT_URL": "http://minio:9000",
    }
    opts = resolve_s3_options({"aws_access_key_id": "explicit"}, env)
    assert opts["AWS_ACCESS_KEY_ID"] == "explicit"
    assert opts["AWS_SECRET_ACCESS_KEY"] == "env-secret"
    assert opts["AWS_ALLOW_HTTP"] == "true"
    assert opts["AWS_REGION"] == "us-east-1"


def test_table_directory_names_round_trip():
    for name in ("orders", "Orders.v2", "we\"ird ta'ble", "漢字", "a~b", ".hidden", "x y/z"):
        encoded = encode_table_dir(name)
        assert "/" not in encoded and not encoded.startswith(".")
        assert decode_table_dir(encoded) == name
    assert decode_table_dir("bad dir") is None


def test_a_local_lake_works_in_any_directory_name_or_is_refused_at_open(tmp_path):
    """Every printable ASCII character in the lake's directory: the lake round-trips or open() says why not.

    delta-rs panics on some (a PanicException, not even an Exception): that must never reach a user.
    """
    refused = []
    for ch in sorted(set(string.printable) - set(string.whitespace) - {"/"}) + [" "]:
        where = tmp_path / f"lake{ord(ch)}"
        where.mkdir()
        url = str(where / f"a{ch}b")
        try:
            lake = rhei_lake.open(oltp_path=str(where / "app.db"), storage=url)
        except rhei_lake.ConfigError as exc:
            assert "cannot take" in str(exc)
            refused.append(ch)
            continue
        with lake:
            lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            lake.execute("INSERT INTO t VALUES (1, 'x')")
            lake.register_table("t")
            lake.execute("INSERT INTO t VALUES (2, 'y')")
            lake.sync_now()
            lake.flush()
        with rhei_lake.open(storage=url) as reader:
            assert reader.query("SELECT id, v FROM t ORDER BY id").to_pylist() == [
                {"id": 1, "v": "x"},
                {"id": 2, "v": "y"},
            ], repr(ch)
    assert refused == sorted("[\\]^|")
    percent = tmp_path / "x%41y"  # a percent escape: delta-rs would look in xAy
    with pytest.raises(rhei_lake.ConfigError, match="'%41'"):
        rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(percent))
    for i, plain in enumerate(("x%y", "x%4")):  # not escapes: they work
        with rhei_lake.open(oltp_path=str(tmp_path / f"plain{i}.db"), storage=str(tmp_path / plain)) as lake:
            lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            lake.execute("INSERT INTO t VALUES (1)")
            lake.register_table("t")
            lake.flush()
            assert lake.query("SELECT count(*) AS n FROM t").to_pylist() == [{"n": 1}]
