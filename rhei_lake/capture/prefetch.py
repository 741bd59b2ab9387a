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
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_END = object()


class StreamClosed(Exception):
    """A :class:`Prefetch` stream was read after it was closed, before its end."""


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetch(Generic[T]):
    """``items``, produced by a thread started now, up to ``depth`` ahead of :meth:`items`.

    What the producer raises is raised to the consumer where it occurred in
    the stream. A consumer that stops early (closes :meth:`items`, or raises
    into it) or never starts (:meth:`close`) stops the producer: the producer
    closes ``items`` in its own thread after the item at hand; ``abandon``
    (say, killing a reader process) runs first, to unblock a producer waiting
    for input that will not come. Either way the producer has stopped when
    :meth:`close` returns.
    """

    def __init__(self, items: Iterable[T], depth: int, *, name: str, abandon: Callable[[], None] | None = None) -> None:
        self._out: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._abandon = abandon
        self._closing = threading.Lock()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterable[T]) -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer
            self._put(_Raised(exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and self._stop.is_set():
                try:
                    close()
                except Exception:  # the consumer is gone; nothing to report to
                    pass

    def items(self) -> Iterator[T]:
        """The items, in order; closing this iterator stops the producer (:meth:`close`).

        A stream closed before its end (by :meth:`close`, from any thread) raises
        :class:`StreamClosed` here rather than end as if it were complete.
        """
        try:
            while True:
                try:
                    item = self._out.get(timeout=0.1)
                except queue.Empty:
                    if not self._stop.is_set() and self._thread.is_alive():
                        continue
                    try:  # what the producer put just before it stopped
                        item = self._out.get_nowait()
                    except queue.Empty:
                        raise StreamClosed("the stream was closed before its end") from None
                if item is _END:
                    self._finished = True
                    return
                if isinstance(item, _Raised):
                    self._finished = True
                    raise item.error
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer (after ``abandon``, unless the stream was read to its end) and wait for it."""
        self._stop.set()
        with self._closing:  # abandon runs once, whichever thread closes first
            abandon, self._abandon = self._abandon, None
        if abandon is not None and not self._finished:
            abandon()
        self._thread.join()


def prefetched(items: Iterable[T], depth: int, *, name: str, abandon: Callable[[], None] | None = None) -> Iterator[T]:
    """``items``, produced by a thread (started at the first ``next``) up to ``depth`` ahead: a
    :class:`Prefetch` read to its end or closed."""
    yield from Prefetch(items, depth, name=name, abandon=abandon).items()
