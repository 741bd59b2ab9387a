"""The lake's change marker: a new token after commits, once per batch, and owed (never lost) when a write fails."""

from __future__ import annotations

import pytest

from rhei_lake.errors import StorageUnavailableError
from rhei_lake.storage.blobs import MemoryBlobs
from rhei_lake.storage.change_marker import MARKER_KEY, ChangeMarker


class FlakyBlobs(MemoryBlobs):
    """Memory blobs whose puts fail while ``down`` is set; counts puts that landed."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.puts = 0

    def put(self, key: str, data: bytes) -> None:
        if self.down:
            raise StorageUnavailableError("the store is down")
        self.puts += 1
        super().put(key, data)


def test_no_marker_reads_none_and_every_touch_writes_a_new_token():
    marker = ChangeMarker(FlakyBlobs())
    assert marker.read() is None
    marker.touch()
    first = marker.read()
    marker.touch()
    assert first is not None and marker.read() not in (None, first)


def test_a_batch_writes_once_at_its_end_and_nothing_when_nothing_was_committed():
    blobs = FlakyBlobs()
    marker = ChangeMarker(blobs)
    with marker.batch():
        with marker.batch():
            marker.touch()
            marker.touch()
        assert blobs.puts == 0  # not before the outermost batch ends
        marker.touch()
    assert blobs.puts == 1
    with marker.batch():
        pass
    assert blobs.puts == 1


def test_a_batch_whose_work_failed_still_announces_what_it_committed():
    blobs = FlakyBlobs()
    marker = ChangeMarker(blobs)
    with pytest.raises(ValueError), marker.batch():
        marker.touch()
        raise ValueError("the second table failed")
    assert blobs.puts == 1 and blobs.get(MARKER_KEY) is not None


def test_a_failed_write_is_owed_until_one_succeeds():
    blobs = FlakyBlobs()
    marker = ChangeMarker(blobs)
    blobs.down = True
    marker.touch()  # after a commit that stands: logged, not raised
    with pytest.raises(StorageUnavailableError), marker.batch():
        marker.touch()
    blobs.down = False
    with marker.batch():
        pass  # nothing committed in it, but the token is owed
    assert blobs.puts == 1
    with marker.batch():
        pass
    assert blobs.puts == 1
