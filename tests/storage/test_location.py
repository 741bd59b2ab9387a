"""Storage URLs and S3 option resolution."""

from __future__ import annotations

import os

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
