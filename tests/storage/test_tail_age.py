"""How long events wait in the hot-path tail, outside Delta: measured from their commit, across processes."""

from __future__ import annotations

import time

import pytest

from rhei_lake.storage.tail import Segment, decode_segment, encode_segment
from tests.storage.test_changelog import SPEC, events


@pytest.fixture
def durable_storage_only(lake_storage):
    if lake_storage.location.scheme == "memory":
        pytest.skip("memory:// has no tail: events go straight to the table")
    return lake_storage


def _log(storage, interval: float | None):
    store = storage.table_store("t", "changes")
    if not store.exists():
        store.create(SPEC.changes_schema, properties={})
    log = storage.changelog("t", flush_segments=1000, flush_rows=10**9, flush_interval=interval, discard_grace=0.0)
    log.load()
    return log


def test_a_segment_records_when_it_was_committed():
    segment = Segment(0, 3, events(1, 2, 3), "c", written_at=1_700_000_000.123456)
    back = decode_segment(0, encode_segment(segment), "k")
    assert back.written_at == pytest.approx(1_700_000_000.123456, abs=1e-6) and back.cursor == "c"
    legacy = decode_segment(0, encode_segment(Segment(0, 3, events(1, 2, 3))), "k")
    assert legacy.written_at is None


def test_the_tail_comes_due_after_the_interval_and_not_before(durable_storage_only):
    log = _log(durable_storage_only, interval=0.4)
    assert log.tail_age() == 0.0 and not log.needs_flush
    log.commit(events(1))
    time.sleep(0.2)
    log.commit(events(2))  # a newer event does not reset the clock of the oldest one
    assert 0.15 < log.tail_age() < 0.4 and not log.needs_flush
    time.sleep(0.25)
    assert log.tail_age() >= 0.4 and log.needs_flush
    assert log.flush() == 2
    assert log.tail_age() == 0.0 and not log.needs_flush


def test_another_process_sees_the_age_of_the_oldest_waiting_event(durable_storage_only, second_lake_storage):
    writer = _log(durable_storage_only, interval=None)
    writer.commit(events(1, 2))
    time.sleep(0.3)
    writer.commit(events(3))
    reader = _log(second_lake_storage, interval=0.25)
    assert reader.tail_age() >= 0.3 and reader.needs_flush  # the age came with the segment, not the load
    writer.flush()
    reader.load()
    assert reader.tail_age() == 0.0


def test_without_an_interval_only_the_size_thresholds_count(durable_storage_only):
    log = _log(durable_storage_only, interval=None)
    log.commit(events(1))
    assert log.tail_age(now=time.time() + 10**6) > 0 and not log.needs_flush
