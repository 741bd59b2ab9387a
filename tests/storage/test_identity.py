"""A lake's identity: created once, the same for every process and URL that reaches it."""

from __future__ import annotations

import threading

import pytest

from rhei_lake.errors import CorruptStorageError
from rhei_lake.storage.identity import IDENTITY_KEY, lake_identity
from rhei_lake.storage.lake_storage import open_storage
from rhei_lake.storage.location import parse_storage_url


def test_storage_identity_survives_reopen_and_is_per_lake(tmp_path):
    first = open_storage(parse_storage_url(str(tmp_path / "a")))
    again = open_storage(parse_storage_url(str(tmp_path / "a")))
    other = open_storage(parse_storage_url(str(tmp_path / "b")))
    assert lake_identity(first) == lake_identity(again) != lake_identity(other)
    assert lake_identity(first).volatile is False
    memory = [open_storage(parse_storage_url("memory://")) for _ in range(2)]
    assert lake_identity(memory[0]).lake_id != lake_identity(memory[1]).lake_id
    assert lake_identity(memory[0]).volatile


def test_lakes_created_at_once_agree_on_one_identity(tmp_path):
    url = str(tmp_path / "lake")
    barrier = threading.Barrier(8)
    seen = []

    def create():
        storage = open_storage(parse_storage_url(url))
        barrier.wait()
        seen.append(lake_identity(storage).lake_id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8 and len(set(seen)) == 1


def test_an_unreadable_identity_is_reported_not_replaced(tmp_path):
    storage = open_storage(parse_storage_url(str(tmp_path / "lake")))
    storage.blobs.put(IDENTITY_KEY, b"not json")
    with pytest.raises(CorruptStorageError, match="_rhei/lake.json is not a lake identity"):
        lake_identity(storage)
    assert storage.blobs.get(IDENTITY_KEY) == b"not json"
