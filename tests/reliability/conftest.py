"""Reliability suite: writes the run's figures when RHEI_RELIABILITY_SUMMARY names a file."""

from __future__ import annotations

import uuid

import pytest

from tests.reliability import summary
from tests.support.s3_fault_proxy import S3FaultProxy


def pytest_terminal_summary(terminalreporter) -> None:
    for line in summary.LINES:
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if summary.TARGET and summary.FIGURES:
        summary.write(summary.TARGET, exit_status=int(exitstatus))


@pytest.fixture(scope="session")
def authed_moto():
    """A moto server that checks credentials: (endpoint, working storage options, bucket)."""
    import json

    import boto3

    from tests.support.moto_server import ACCESS_KEY, REGION, SECRET_KEY, start_moto

    # The first four requests (the setup below) are not checked; every later one is.
    server = start_moto(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        iam.create_user(UserName="lake")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="lake", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="lake")["AccessKey"]
        boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name=REGION,
        ).create_bucket(Bucket="authed")
        options = {
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_REGION": REGION,
        }
        yield server.endpoint, options, "authed"
    finally:
        server.stop()


@pytest.fixture
def proxy(moto):
    """A fault-injecting proxy in front of the session's moto server."""
    proxy = S3FaultProxy(moto.endpoint)
    yield proxy
    summary.count("faults.s3", sum(proxy.injected().values()))
    proxy.close()


@pytest.fixture
def faulty_s3(moto, proxy) -> tuple[str, dict[str, str]]:
    """A lake URL in a fresh bucket reached through :func:`proxy`, and its storage options."""
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    moto.create_bucket(bucket)
    return f"s3://{bucket}/lake", {**moto.storage_options(), "AWS_ENDPOINT_URL": proxy.endpoint}
