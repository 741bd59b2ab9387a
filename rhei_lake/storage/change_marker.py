"""One small object per lake that says something in it moved, so a reader with nothing new pays one request.

A reader following a lake on S3 would otherwise ask each table it reads
whether its tail or its change feed moved: two requests per table per
``refresh_interval`` (see :mod:`rhei_lake.query.followed_tables`). Instead,
writers rewrite ``_rhei/changed`` with a fresh token after every commit a
reader could see (a tail segment, any Delta commit: flush, initial snapshot,
fold, bin-pack, expiry, schema change), and a reader that finds the token it
saw before its last look knows nothing was committed since that look began.

The order is what makes it safe: the data is committed first and the token
written after, so a reader that reads a new token (and only then looks) finds
the data. A writer that dies between the two leaves data no token announces;
a writer that opens the lake rewrites the token (it holds the writer lease, so
the one that died is gone), and readers look at every table regardless every
:data:`~rhei_lake.query.followed_tables.FULL_LOOK_EVERY` intervals. A write of
the token that fails is owed and made at the next commit or at the end of the
operation (which then raises). Lakes written only by versions without the
marker have no token: their readers look at each table every interval.

Several commits of one operation (a ``sync_now()`` of many tables) write
the token once, at its end, with :meth:`ChangeMarker.batch`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from rhei_lake.errors import StorageError
from rhei_lake.storage.blobs import BlobStore

log = logging.getLogger("rhei_lake.storage")

MARKER_KEY = "_rhei/changed"
"""The marker's key below the lake root (in the lake's internal directory)."""


class ChangeMarker:
    """The lake's change marker: written after commits (:meth:`touch`), read by followers (:meth:`read`)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._local = threading.local()  # per thread: batch depth, and whether the batch committed anything
        self._owed = False  # a write failed: made at the next touch or batch end
        self._lock = threading.Lock()

    def read(self) -> str | None:
        """The token last written (one request); ``None`` when no writer maintains the marker."""
        data = self.blobs.get(MARKER_KEY)
        return None if data is None else data.decode("utf-8", "replace")

    def touch(self) -> None:
        """Say that something was committed: now, or at the end of the enclosing :meth:`batch`.

        Called after the commit returned. Never raises: the commit it follows
        stands, and a failed write is owed (see the module docstring).
        """
        if getattr(self._local, "depth", 0):
            self._local.dirty = True
            return
        try:
            self._write()
        except StorageError as exc:
            log.warning("the lake's change marker is owed (readers may see the last commit late): %s", exc)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Write the token once when the outermost batch on this thread ends, if anything was committed in it.

        Written also when the work raised (what it committed before stands);
        a failed write then raises :class:`~rhei_lake.errors.StorageError` if the work did not.
        """
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        if depth == 0:
            self._local.dirty = False
        try:
            yield
        except BaseException:
            self._local.depth = depth
            if depth == 0 and (self._local.dirty or self._owed):
                self._local.dirty = False
                self.touch()  # logs, not raises: the work's own error is the one to see
            raise
        self._local.depth = depth
        if depth == 0 and (self._local.dirty or self._owed):
            self._local.dirty = False
            self._write()

    def _write(self) -> None:
        token = f"{uuid.uuid4().hex} {time.time():.6f}".encode()
        try:
            self.blobs.put(MARKER_KEY, token)
        except StorageError:
            with self._lock:
                self._owed = True
            raise
        with self._lock:
            self._owed = False
