"""Produce a stream in a background thread, a bounded number of items ahead of its consumer.

A first read streams rows from a reader (a process, a socket) into a Delta
writer that pulls them: produced in the consumer's thread, reading and writing
take turns. Here the reading (and converting) runs in its own thread while the
writer encodes, and at most ``depth`` items wait between them, so memory stays
bounded whatever the table's size.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int, *, name: str, abandon: Callable[[], None] | None = None) -> Iterator[T]:
    """``items``, produced by a thread up to ``depth`` ahead.

    What the producer raises is raised to the consumer where it occurred in
    the stream. A consumer that stops early (closes the iterator, or raises
    into it) stops the producer: the producer closes ``items`` in its own
    thread after the item at hand; ``abandon`` (say, killing a reader process)
    runs first, to unblock a producer waiting for input that will not come.
    Either way the producer has stopped when this iterator is closed.
    """
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer
            put(_Raised(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and stop.is_set():
                try:
                    close()
                except Exception:  # the consumer is gone; nothing to report to
                    pass

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            item = out.get()
            if item is _END:
                finished = True
                return
            if isinstance(item, _Raised):
                finished = True
                raise item.error
            yield item
    finally:
        stop.set()
        if not finished and abandon is not None:
            abandon()
        thread.join()
