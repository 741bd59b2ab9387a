"""The changelog's exactly-once rules, on every tier."""

from __future__ import annotations

import itertools
import time
from contextlib import contextmanager

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rhei_lake.catalog import Column, TableSpec
from rhei_lake.errors import CorruptStorageError, StorageError
from rhei_lake.storage import changelog as changelog_module
from rhei_lake.storage.tail import Segment, SegmentTail, decode_segment, encode_segment

SPEC = TableSpec("t", (Column("id", "INTEGER", pa.int64()), Column("v", "TEXT", pa.string())), ("id",))


def events(*seqs: int) -> pa.Table:
    return pa.Table.from_pylist(
        [{"id": s, "v": f"v{s}", "_rhei_seq": s, "_rhei_op": "I", "_rhei_ts": 1_000 * s} for s in seqs],
        schema=SPEC.changes_schema,
    )


def open_log(lake_storage, **kw):
    store = lake_storage.table_store("t", "changes")
    if not store.exists():
        store.create(SPEC.changes_schema, properties={})
    log = lake_storage.changelog(
        "t", flush_segments=kw.get("flush_segments", 1000), flush_rows=10**9, discard_grace=kw.get("discard_grace", 0.0)
    )
    log.load()
    return log


def seqs(log) -> list[int]:
    return log.to_arrow().column("_rhei_seq").to_pylist()


def test_commit_drops_what_is_already_there(lake_storage):
    log = open_log(lake_storage)
    assert log.commit(events(1, 2, 3)) == 3
    assert log.commit(events(2, 3, 4, 5)) == 2
    assert log.commit(events(1, 2)) == 0
    assert log.watermark == 5
    assert seqs(log) == [1, 2, 3, 4, 5]


def test_cursor_travels_with_the_commit(lake_storage, second_lake_storage):
    log = open_log(lake_storage)
    log.commit(events(1), cursor="c1")
    log.commit(events(2), cursor="c2")
    log.flush()
    log.commit(events(3), cursor="c3")
    other = open_log(second_lake_storage)
    assert other.watermark == 3
    assert other.cursor == "c3"


def test_two_writers_never_duplicate(lake_storage, second_lake_storage):
    first = open_log(lake_storage)
    second = open_log(second_lake_storage)
    first.commit(events(1, 2))
    # The second writer has a stale view (watermark 0): it must learn, drop 1-2 and commit 3 only.
    assert second.commit(events(1, 2, 3)) == 1
    first.load()
    assert seqs(first) == [1, 2, 3]


def test_flush_moves_the_tail_into_the_table(lake_storage, second_lake_storage):
    log = open_log(lake_storage)
    for s in range(1, 6):
        log.commit(events(s))
    moved = log.flush()
    assert log.tail_segments == 0
    assert log.stored_watermark == 5
    assert seqs(log) == [1, 2, 3, 4, 5]
    if log.tail is not None:
        assert moved == 5
        assert log.tail.starts() == []
    reopened = open_log(second_lake_storage)
    assert seqs(reopened) == [1, 2, 3, 4, 5]


def test_flushed_segments_outlive_the_flush_by_the_grace_period(lake_storage, second_lake_storage):
    if not lake_storage.durable:
        pytest.skip("memory has no tail")
    log = open_log(lake_storage, discard_grace=60.0)
    reader = open_log(second_lake_storage)  # took the watermark before the flushes
    for s in range(1, 4):
        log.commit(events(s))
    log.flush()
    log.commit(events(4))
    log.flush()
    assert log.tail.starts() == [0, 1, 2, 3], "a reader following the chain from 0 must still find it"
    assert [seg.end for seg in reader.tail.load_chain(0)] == [1, 2, 3, 4]
    reader.load()
    assert seqs(reader) == [1, 2, 3, 4] and reader.tail_segments == 0
    log.discard_grace = 0.0
    log.commit(events(5))
    log.flush()
    assert log.tail.starts() == []


def test_a_reader_overtaken_by_flushes_still_loads_one_committed_state(lake_storage, second_lake_storage):
    if not lake_storage.durable:
        pytest.skip("memory has no tail")
    log = open_log(lake_storage)  # grace 0: segments vanish right after each flush
    reader = open_log(second_lake_storage)
    for s in range(1, 4):
        log.commit(events(s))
    chain = reader.tail.load_chain

    def chain_overtaken_once(base):  # a flush lands between the reader's watermark and its chain read
        reader.tail.load_chain = chain
        log.flush()
        log.commit(events(4))
        return chain(base)

    reader.tail.load_chain = chain_overtaken_once
    reader.load()
    assert seqs(reader) == [1, 2, 3, 4]
    assert reader.stored_watermark == 3 and reader.tail_segments == 1


def test_concurrent_flushes_do_not_double(lake_storage, second_lake_storage):
    a = open_log(lake_storage)
    for s in range(1, 4):
        a.commit(events(s))
    b = open_log(second_lake_storage)  # sees the same three segments
    a.flush()
    b.flush()
    a.load()
    assert seqs(a) == [1, 2, 3]


def test_segments_round_trip_and_reject_garbage():
    seg = Segment(7, 9, events(8, 9), cursor="x")
    back = decode_segment(7, encode_segment(seg), "k")
    assert (back.start, back.end, back.cursor) == (7, 9, "x")
    assert back.rows.equals(seg.rows)
    with pytest.raises(CorruptStorageError):
        decode_segment(0, b"not arrow", "k")


def test_stale_segments_are_ignored(lake_storage):
    if not lake_storage.durable:
        pytest.skip("memory has no tail")
    tail = SegmentTail(lake_storage.blobs, "t/_tail")
    tail.write(Segment(0, 2, events(1, 2)))
    tail.write(Segment(2, 4, events(3, 4)))
    tail.write(Segment(1, 9, events(5)))  # off the chain: never read
    assert [s.end for s in tail.load_chain(0)] == [2, 4]
    assert [s.end for s in tail.load_chain(2)] == [4]


def _stored_seqs(log) -> list[int]:
    log.store.refresh()
    return sorted(log.store.to_arrow().column("_rhei_seq").to_pylist())


def test_a_flush_after_a_compaction_job_flushed_moves_only_the_rest(lake_storage, second_lake_storage):
    syncer = open_log(lake_storage)
    syncer.commit(events(1, 2))
    syncer.commit(events(3))
    job = open_log(second_lake_storage)  # a compaction job: it flushes the syncer's segments
    assert job.flush() == (3 if lake_storage.durable else 0)
    syncer.commit(events(4, 5))
    syncer.flush()  # its view of the table is stale: refused, reloaded, then only 4-5 go in
    assert _stored_seqs(syncer) == [1, 2, 3, 4, 5]
    assert syncer.watermark == 5 and seqs(syncer) == [1, 2, 3, 4, 5]
    assert seqs(open_log(second_lake_storage)) == [1, 2, 3, 4, 5]


def test_load_is_not_fooled_by_a_concurrent_flush(lake_storage, second_lake_storage):
    """A flush that commits and deletes its segments while load() reads the chain: load retries."""
    if not lake_storage.durable:
        pytest.skip("memory lakes have no segment tail")
    syncer = open_log(lake_storage)
    syncer.commit(events(1, 2))
    syncer.commit(events(3))
    job = open_log(second_lake_storage)
    real_load_chain = syncer.tail.load_chain
    raced = []

    def load_chain_racing_a_flush(base: int):
        if not raced:
            raced.append(base)
            job.flush()  # commits 1-3 into the table, then deletes their segment files
        return real_load_chain(base)

    syncer.tail.load_chain = load_chain_racing_a_flush
    syncer.load()
    assert raced == [0]
    assert syncer.watermark == 3, "a stale watermark would let the next segment overwrite the chain"
    syncer.commit(events(3, 4))
    syncer.flush()
    assert _stored_seqs(syncer) == [1, 2, 3, 4]


def test_the_tail_never_repeats_what_the_loaded_table_holds(lake_storage, second_lake_storage):
    syncer = open_log(lake_storage)
    syncer.commit(events(1, 2))
    open_log(second_lake_storage).flush()
    syncer.store.refresh()  # the table now holds 1-2 while the syncer still keeps their segment
    assert seqs(syncer) == [1, 2]


_FOLLOW_STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["commit", "stream", "flush", "compaction's discard", "look at the table", "a look whose table read fails"]
        ),
        st.integers(0, 3),
        st.booleans(),  # whether the reader looks right after the step
    ),
    max_size=14,
)
_followed = itertools.count()


@pytest.mark.parametrize("grace", [0.0, 60.0], ids=["segments deleted at once", "segments kept a while"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_FOLLOW_STEPS)
def test_a_reader_that_looks_only_at_the_tail_sees_every_commit(lake_storage, second_lake_storage, grace, steps):
    """Reads of the next segment alone (``poll(table=False)``) see commits, flushes, snapshots and discards.

    With the grace the reader and writer share: at 0 the reader must look at
    the table every time (a segment it has not read may be gone already).
    """
    name = f"t{next(_followed)}"
    store = lake_storage.table_store(name, "changes")
    store.create(SPEC.changes_schema, properties={})
    writer = lake_storage.changelog(name, flush_segments=1000, flush_rows=10**9, discard_grace=grace)
    writer.load()
    reader = second_lake_storage.changelog(name, flush_segments=1000, flush_rows=10**9, discard_grace=grace)
    reader.load()
    for step, n, look in [*steps, ("look", 0, True)]:
        last = writer.watermark
        fresh = list(range(last + 1, last + n + 1))
        if step == "commit" and n:
            writer.commit(events(*fresh))
        elif step == "stream":
            writer.commit_stream(
                pa.RecordBatchReader.from_batches(SPEC.changes_schema, events(*fresh).to_batches()), watermark=last + n
            )
        elif step == "flush":
            writer.flush()
        elif step == "compaction's discard":
            writer.discard_flushed_segments()
        elif step == "a look whose table read fails":
            with _table_reads_failing(reader):
                try:
                    reader.poll(table=False)
                except StorageError:
                    pass
        if look:
            reader.poll(table=step == "look at the table")
            assert reader.watermark == writer.watermark
            assert seqs(reader) == list(range(1, writer.watermark + 1))


@contextmanager
def _table_reads_failing(log):
    """Every look ``log`` takes at its Delta table fails meanwhile (a flaky store); its tail reads go through."""

    def fail():
        raise StorageError("the store did not answer")

    log.store.poll = fail
    try:
        yield
    finally:
        del log.store.poll


def _tail_follower(lake_storage, second_lake_storage, *, writer_grace: float, reader_grace: float):
    """A writer and a reader (another process's handle) of a fresh table, both loaded, on a durable tier; its name."""
    name = f"t{next(_followed)}"
    store = lake_storage.table_store(name, "changes")
    store.create(SPEC.changes_schema, properties={})
    writer = lake_storage.changelog(name, flush_segments=1000, flush_rows=10**9, discard_grace=writer_grace)
    writer.load()
    if writer.tail is None:
        pytest.skip("a tier without a tail: every look reloads the table")
    reader = second_lake_storage.changelog(name, flush_segments=1000, flush_rows=10**9, discard_grace=reader_grace)
    reader.load()
    return writer, reader, name


def test_a_reader_paused_in_the_middle_of_its_look_still_sees_the_sync(lake_storage, second_lake_storage, monkeypatch):
    """The reader stops (GC, SIGSTOP, a slow request) after its look began and before it reads the segment.

    Meanwhile the segment is flushed and, the grace over, deleted: what the
    look finds missing says nothing then, since the look took longer than
    half the grace. It must look at the table.
    """
    grace = 0.6
    writer, reader, name = _tail_follower(lake_storage, second_lake_storage, writer_grace=grace, reader_grace=grace)
    reader.poll(table=False)
    writer.commit(events(1, 2))
    read = reader.tail.read
    paused = []

    def read_after_a_pause(start: int):
        if not paused:
            paused.append(start)
            writer.flush()
            time.sleep(grace + 0.05)
            assert writer.discard_flushed_segments() == 1  # the segment the reader is about to look for
        return read(start)

    monkeypatch.setattr(reader.tail, "read", read_after_a_pause)
    reader.poll(table=False)
    assert paused == [0]
    assert reader.watermark == 2
    assert seqs(reader) == [1, 2]


def test_a_reader_whose_machine_slept_still_sees_the_sync(lake_storage, second_lake_storage, monkeypatch):
    """The reader's machine is suspended for an hour: its monotonic clock stands still, the wall clock does not.

    The writer (another machine) deleted the flushed segment long ago (here: at
    once, its grace as the hour it waited); the reader's monotonic clock says
    its last look was a moment ago. It must look at the table all the same.
    """
    writer, reader, name = _tail_follower(lake_storage, second_lake_storage, writer_grace=0.0, reader_grace=60.0)
    reader.poll(table=False)
    writer.commit(events(1, 2))
    writer.flush()  # and deletes the segment: for the writer the grace is over
    real_time = time.time
    monkeypatch.setattr(changelog_module.time, "time", lambda: real_time() + 3600.0)
    reader.poll(table=False)
    assert reader.watermark == 2
    assert seqs(reader) == [1, 2]


def test_a_process_whose_load_stalled_does_not_delete_segments_a_reader_still_needs(
    lake_storage, second_lake_storage, monkeypatch
):
    """A compaction job (or a restarting writer) loads the changelog; its read of the table stalls (a slow store).

    Meanwhile the writer commits a segment and flushes it. The loading
    process learns of that flush only when its read returns, so its grace for
    those segments runs from then, not from when its load began: else it
    deletes a segment that a reader, which looked at the tail during the
    stall, still expects to find (and, finding none, takes for nothing new).
    """
    grace = 2.0
    writer, reader, name = _tail_follower(lake_storage, second_lake_storage, writer_grace=grace, reader_grace=grace)
    compactor = second_lake_storage.changelog(name, flush_segments=1000, flush_rows=10**9, discard_grace=grace)
    poll = compactor.store.poll
    stalled = []

    def stalled_poll():
        if not stalled:
            stalled.append(True)
            time.sleep(0.7 * grace)
            reader.poll(table=False)  # finds nothing yet
            writer.commit(events(1, 2))
            writer.flush()
        return poll()

    monkeypatch.setattr(compactor.store, "poll", stalled_poll)
    began = time.monotonic()
    compactor.load()
    time.sleep(max(0.0, began + grace + 0.02 - time.monotonic()))
    compactor.discard_flushed_segments()
    reader.poll(table=False)  # within half the grace of its last look: the tail alone
    assert reader.watermark == 2
    assert seqs(reader) == [1, 2]


def test_a_look_that_failed_after_reading_a_segment_looks_at_the_table_next_time(
    lake_storage, second_lake_storage, monkeypatch
):
    """The reader reads the bridge an initial snapshot left, then its request for the table fails (a flaky store).

    The bridge is in its chain now (it holds the snapshot's watermark), the
    snapshot's rows are not: its next look, finding no further segment, must
    still look at the table.
    """
    writer, reader, _name = _tail_follower(lake_storage, second_lake_storage, writer_grace=60.0, reader_grace=60.0)
    reader.poll(table=False)
    writer.commit_stream(pa.RecordBatchReader.from_batches(SPEC.changes_schema, events(1, 2).to_batches()), watermark=2)
    poll = reader.store.poll
    failed = []

    def flaky_poll():
        if not failed:
            failed.append(True)
            raise StorageError("the store did not answer")
        return poll()

    monkeypatch.setattr(reader.store, "poll", flaky_poll)
    with pytest.raises(StorageError):
        reader.poll(table=False)
    reader.poll(table=False)
    assert reader.watermark == 2
    assert seqs(reader) == [1, 2]


def test_a_snapshot_whose_bridge_a_crash_left_unwritten_reaches_the_reader_at_its_next_look_at_the_table(
    lake_storage, second_lake_storage, monkeypatch
):
    """The writer dies between an initial snapshot's Delta commit and its bridge segment; the next writer syncs on.

    Its segments start at the snapshot's watermark, past the reader's, so a
    reader looking only at the tail keeps its last state, whole (the limit
    docs/time-travel-and-compaction.md states), until it looks at the table.
    """
    writer, reader, name = _tail_follower(lake_storage, second_lake_storage, writer_grace=60.0, reader_grace=60.0)
    writer.commit(events(1))
    reader.poll(table=False)

    def crash(start: int, end: int) -> None:
        raise KeyboardInterrupt  # stands for the SIGKILL: nothing after the Delta commit runs

    monkeypatch.setattr(writer, "_bridge", crash)
    with pytest.raises(KeyboardInterrupt):
        writer.commit_stream(
            pa.RecordBatchReader.from_batches(SPEC.changes_schema, events(2, 3).to_batches()), watermark=3
        )
    restarted = lake_storage.changelog(name, flush_segments=1000, flush_rows=10**9, discard_grace=60.0)
    restarted.load()
    restarted.commit(events(4))
    reader.poll(table=False)
    assert (reader.watermark, seqs(reader)) == (1, [1])
    reader.poll(table=True)
    assert (reader.watermark, seqs(reader)) == (4, [1, 2, 3, 4])
