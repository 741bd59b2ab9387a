"""The reader thread between a first read and its Delta writer: everything in order, bounded, stoppable."""

from __future__ import annotations

import threading
import time

import pytest

from rhei_lake.capture.prefetch import Prefetch, StreamClosed, prefetched


def test_every_item_arrives_once_in_order_with_a_slow_consumer():
    got = []
    for item in prefetched(iter(range(500)), 2, name="t"):
        got.append(item)
        if item % 97 == 0:
            time.sleep(0.01)
    assert got == list(range(500))


def test_the_producer_stays_at_most_depth_plus_one_ahead():
    produced = 0

    def items():
        nonlocal produced
        for i in range(50):
            produced += 1
            yield i

    for consumed, _ in enumerate(prefetched(items(), 3, name="t"), start=1):
        time.sleep(0.002)
        # depth items queued, one more in the producer's hand
        assert produced - consumed <= 3 + 1


def test_the_producers_error_comes_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad row")

    got = []
    with pytest.raises(ValueError, match="bad row"):
        for item in prefetched(items(), 2, name="t"):
            got.append(item)
    assert got == [1, 2]


@pytest.mark.parametrize("stop", ["consumer closes after one item", "closed unread, twice"])
def test_a_stream_stopped_early_abandons_and_closes_its_producer(stop):
    closed = threading.Event()
    abandoned = []

    def items():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    before = threading.active_count()
    if stop == "consumer closes after one item":
        stream = prefetched(items(), 2, name="t", abandon=lambda: abandoned.append(True))
        assert next(stream) == 0
        stream.close()
    else:
        ahead = Prefetch(items(), 2, name="t", abandon=lambda: abandoned.append(True))
        time.sleep(0.05)  # the producer has filled the queue and waits
        ahead.close()
        ahead.close()  # a second close (the consumer's iterator, collected later) does nothing more
    assert closed.is_set(), "the source was not closed"
    assert abandoned == [True]
    assert threading.active_count() == before, "the producer thread is still running"


def test_a_finished_stream_is_not_abandoned():
    abandoned = []
    assert list(prefetched(iter([1, 2]), 1, name="t", abandon=lambda: abandoned.append(True))) == [1, 2]
    assert abandoned == []


def test_a_started_prefetch_reads_ahead_before_it_is_consumed():
    produced = threading.Event()

    def items():
        yield 1
        produced.set()
        yield 2

    ahead = Prefetch(items(), 2, name="t")
    assert produced.wait(5), "nothing was read before the consumer came"
    assert list(ahead.items()) == [1, 2]


def test_a_producer_blocked_on_input_is_unblocked_by_abandon():
    release = threading.Event()

    def items():
        yield 1
        release.wait(30)  # a read from a process that sends nothing more
        yield 2

    ahead = Prefetch(items(), 2, name="t", abandon=release.set)
    stream = ahead.items()
    assert next(stream) == 1
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 5
    assert not ahead._thread.is_alive()


def test_a_stream_closed_from_another_thread_ends_its_consumer_with_an_error_not_as_complete():
    release = threading.Event()

    def items():
        yield 1
        release.wait(30)  # the next item is slow to come (a read from a process)
        yield 2

    ahead = Prefetch(items(), 2, name="t", abandon=release.set)
    stream = ahead.items()
    assert next(stream) == 1
    threading.Timer(0.2, ahead.close).start()
    started = time.monotonic()
    with pytest.raises(StreamClosed):
        next(stream)
    assert time.monotonic() - started < 5


def test_a_closed_stream_read_again_raises():
    ahead = Prefetch(iter(range(100)), 1, name="t")
    ahead.close()
    with pytest.raises(StreamClosed):
        list(ahead.items())


def test_what_was_produced_before_a_finished_producer_stopped_is_still_read():
    ahead = Prefetch(iter([1, 2]), 3, name="t")
    ahead._thread.join()  # the producer is done: its items and the end wait in the queue
    assert list(ahead.items()) == [1, 2]


def test_abandon_runs_once_when_two_threads_close():
    for _ in range(50):
        calls = []
        ahead = Prefetch(iter(range(10_000)), 1, name="t", abandon=lambda calls=calls: calls.append(1))
        closers = [threading.Thread(target=ahead.close) for _ in range(2)]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()
        assert calls == [1]
