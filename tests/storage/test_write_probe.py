"""Opening a lake to write on S3 first proves that the store refuses a create of an existing object.

moto enforces ``If-None-Match: *`` and passes, at one request per open (two the
first time); s3rver accepts it and overwrites, and is refused with an error
that names the store, what is missing and what would follow.
"""

from __future__ import annotations

import uuid

import pytest

import rhei_lake
from rhei_lake.errors import StorageAccessError
from rhei_lake.storage.write_probe import PROBE_KEY, verify_conditional_writes
from tests.support.s3_fault_proxy import Rule, S3FaultProxy
from tests.support.s3rver import BUCKET, start_s3rver


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory):
    server = start_s3rver(tmp_path_factory.mktemp("s3rver"))
    try:
        yield server
    finally:
        server.stop()


class _Blobs:
    """A store whose creates succeed or fail as scripted."""

    where = "s3://fake/lake"

    def __init__(self, *outcomes: bool) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def create(self, key: str, data: bytes) -> bool:
        assert key == PROBE_KEY
        self.calls += 1
        return self.outcomes.pop(0)


@pytest.mark.parametrize(("outcomes", "calls"), [((False,), 1), ((True, False), 2)], ids=["exists", "first-open"])
def test_a_refused_create_proves_the_store(outcomes, calls):
    blobs = _Blobs(*outcomes)
    verify_conditional_writes(blobs, endpoint=None)
    assert blobs.calls == calls


def test_a_store_that_accepts_both_creates_is_refused():
    with pytest.raises(StorageAccessError) as caught:
        verify_conditional_writes(_Blobs(True, True), endpoint="http://gateway:9000")
    text = str(caught.value)
    assert "s3://fake/lake (endpoint http://gateway:9000)" in text
    assert "does not enforce conditional writes" in text and "If-None-Match" in text
    assert "two writers" in text and "exactly-once" in text and "single_writer" in text


def test_moto_passes_with_one_request_per_open(moto, s3_lake, tmp_path):
    url, options = s3_lake
    proxy = S3FaultProxy(moto.endpoint)
    try:
        for method in ("PUT", "GET", "HEAD", "POST", "DELETE"):
            proxy.add(Rule("delay", method=method, path=".*_rhei/probe/.*", times=1000, seconds=0))
        routed = {**options, "AWS_ENDPOINT_URL": proxy.endpoint}
        counts = []
        for _ in range(3):
            before = proxy.injected().get("delay", 0)
            rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=routed).close()
            counts.append(proxy.injected().get("delay", 0) - before)
        assert counts == [2, 1, 1], counts
    finally:
        proxy.close()


def test_s3rver_is_refused_at_open_and_nothing_is_written(s3rver, tmp_path):
    url = f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StorageAccessError, match="does not enforce conditional writes") as caught:
        rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=s3rver.storage_options())
    assert s3rver.endpoint in str(caught.value) and url in str(caught.value)
    assert "S3RVER" not in str(caught.value)  # no credentials in the message


def test_s3rver_single_writer_opt_out_syncs(s3rver, tmp_path):
    url = f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:8]}"
    options = s3rver.storage_options()
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, conditional_writes="single_writer"
    ) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        lake.sync_now()
        assert lake.query("SELECT * FROM t").to_pylist() == [{"id": 1, "v": "a"}]
    with rhei_lake.open(storage=url, storage_options=options) as reader:  # opening to read needs no proof
        with pytest.raises(StorageAccessError, match="does not enforce"):
            reader.compact()  # but writing does, from a read-only lake too


def test_the_opt_out_is_not_the_default():
    assert rhei_lake.LakeConfig().conditional_writes == "verify"
