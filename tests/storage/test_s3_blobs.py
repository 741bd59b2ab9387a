"""rhei_lake's AWS_* options as obstore's S3 configuration (the requests themselves run in the contract suite)."""

from __future__ import annotations

import pytest

from rhei_lake.errors import StorageError
from rhei_lake.storage.s3_blobs import S3Blobs, obstore_s3_config


def test_each_aws_option_reaches_its_obstore_key_whatever_its_case():
    config, client = obstore_s3_config(
        {
            "aws_access_key_id": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_SESSION_TOKEN": "token",
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": "http://minio:9000",
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "on",
            "AWS_ALLOW_HTTP": "TRUE",
            "AWS_S3_LOCKING_PROVIDER": "dynamodb",  # delta-rs's business, not obstore's
        }
    )
    assert config == {
        "access_key_id": "key",
        "secret_access_key": "secret",
        "session_token": "token",
        "region": "eu-west-1",
        "endpoint": "http://minio:9000",
        "virtual_hosted_style_request": "on",
    }
    assert client == {"timeout": "30s", "connect_timeout": "5s", "allow_http": True}
    assert obstore_s3_config({"AWS_ALLOW_HTTP": "0"})[1]["allow_http"] is False


@pytest.mark.parametrize(("text", "accepted"), [("true", True), ("yes", True), ("0", True), ("maybe", False)])
def test_virtual_hosted_style_is_parsed_by_object_store(text, accepted):
    options = {"AWS_REGION": "us-east-1", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": text}
    if accepted:
        S3Blobs("bucket", "lake", options)  # no request is sent until the first operation
    else:
        with pytest.raises(StorageError, match='failed to parse "maybe" as boolean'):
            S3Blobs("bucket", "lake", options)
