"""The BlobStore contract, the same on every tier."""

from __future__ import annotations

import pytest

from rhei_lake.errors import CommitConflictError


@pytest.fixture
def blobs(lake_storage):
    return lake_storage.blobs


def test_put_if_absent_is_exclusive(blobs):
    blobs.put_if_absent("a/b/one", b"1")
    with pytest.raises(CommitConflictError):
        blobs.put_if_absent("a/b/one", b"other")
    assert blobs.get("a/b/one") == b"1"


def test_missing_get_is_none_and_delete_is_idempotent(blobs):
    assert blobs.get("nothing/here") is None
    blobs.delete(["nothing/here"])


def test_exists_without_fetching(blobs):
    assert not blobs.exists("a/x")
    blobs.put_if_absent("a/x", b"1")
    assert blobs.exists("a/x")
    assert not blobs.exists("a")  # a prefix is not an object
    blobs.delete(["a/x"])
    assert not blobs.exists("a/x")


def test_list_and_dirs(blobs):
    for key in ("t1/_tail/2", "t1/_tail/1", "t2/x", "top"):
        blobs.put_if_absent(key, key.encode())
    assert [b.key for b in blobs.list("t1/_tail/")] == ["t1/_tail/1", "t1/_tail/2"]
    assert blobs.list("t1/_tail/")[0].size == len(b"t1/_tail/1")
    assert {"t1", "t2"} <= set(blobs.list_dirs(""))
    blobs.delete(["t1/_tail/1"])
    assert [b.key for b in blobs.list("t1/")] == ["t1/_tail/2"]


def test_put_overwrites(blobs):
    blobs.put("lease", b"a")
    blobs.put("lease", b"b")
    assert blobs.get("lease") == b"b"


def test_put_if_absent_of_the_same_bytes_is_our_own_retry(blobs):
    """A retried create whose first reply was lost finds its own object: a success, not a conflict."""
    blobs.put_if_absent("seg/0001", b"events 1..5")
    blobs.put_if_absent("seg/0001", b"events 1..5")
    with pytest.raises(CommitConflictError):
        blobs.put_if_absent("seg/0001", b"events 1..6")
    with pytest.raises(CommitConflictError):
        blobs.put_if_absent("seg/0001", b"events 1..")
    assert blobs.get("seg/0001") == b"events 1..5"
