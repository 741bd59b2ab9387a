"""Configuration is validated at open() with messages naming the field; secrets never shown."""

from __future__ import annotations

import pytest

import rhei_lake
from rhei_lake.config import LakeConfig, build_config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"storage": "ftp://host/x"}, "unknown URL scheme"),
        ({"storage": "s3://"}, "names no bucket"),
        ({"storage": "s3://A_Bad_Bucket/x"}, "not a valid S3 bucket"),
        ({"storage": ""}, "storage"),
        ({"storage": "memory://a/b"}, "cannot contain '/'"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "many"}, "batch_size"),
        ({"sync_mode": "fast"}, "sync_mode"),
        ({"prune_interval": -1}, "prune_interval"),
        ({"oltp_path": "  "}, "oltp_path"),
        ({"bogus_option": 1}, "bogus_option: unknown option"),
    ],
)
def test_invalid_values_fail_at_open_naming_the_field(options, message):
    with pytest.raises(rhei_lake.ConfigError, match=message):
        rhei_lake.open(**options)


def test_config_object_and_overrides():
    base = LakeConfig(storage="memory://x", batch_size=10)
    merged = build_config(base, batch_size=20)
    assert (merged.storage, merged.batch_size) == ("memory://x", 20)
    with rhei_lake.open(base) as lake:
        assert lake.config.batch_size == 10


def test_secrets_are_masked_in_repr():
    cfg = LakeConfig(
        storage="s3://bucket/x",
        storage_options={"AWS_SECRET_ACCESS_KEY": "hunter2", "AWS_ACCESS_KEY_ID": "AKIA123", "AWS_REGION": "eu-west-1"},
    )
    text = repr(cfg) + str(cfg)
    assert "hunter2" not in text and "AKIA123" not in text
    assert "eu-west-1" in text
