"""A reader process started ahead of need, so that its start overlaps other work.

A first read of a big table (a sidecar's first sync, a trigger-mode snapshot
retaken at open) waits for the reader process (:mod:`rhei_lake.capture.reader_process`)
to start: a Python process loading the ADBC SQLite driver, ~15 ms on a quiet
machine, several times that on a loaded one. A lake that knows at open that it
will read such a table starts a :class:`SpareReader` then; the read takes its
process, which by then has done most or all of that work while the lake opened
its Delta tables.

A spare started for a database (``path``) opens it as soon as it has started,
so the read that takes it waits for neither. It opens it in autocommit and pins
nothing: the read sees the database as it is when the read begins, and the
application's writes and checkpoints do not wait for an idle spare.

A spare is stopped, never left behind: by :meth:`SpareReader.close` (the
lake's close, which kills it: an idle child holds no lock or transaction), by
its parent's death (its stdin closes, and a reader child ends at the end of
its input), and in a process forked from its parent, which drops its copy of
the spare's pipes (its parent keeps the spare) instead of taking or stopping a
child it does not own.
"""

from __future__ import annotations

import os
import subprocess
import threading
import weakref

from rhei_lake.capture.reader_process import ReaderProcess, encoded, open_command, start_reader_child, stop_child

_spares: weakref.WeakSet[SpareReader] = weakref.WeakSet()


class SpareReader:
    """One reader child started now, for a later :class:`~rhei_lake.capture.reader_process.ReaderProcess`."""

    def __init__(self, path: str | None = None, *, readonly: bool = False) -> None:
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = start_reader_child()
        self._opening: tuple[str, bool] | None = None
        self._file: tuple[int, int] | None = None  # the database file the child opens (device, inode)
        if path is not None:
            self._send_open(path, readonly)
        _spares.add(self)

    def _send_open(self, path: str, readonly: bool) -> None:
        """Have the child open ``path`` as soon as it has started; its reply waits for the taker."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        self._file = _identity(path)  # before the open: a file replaced since, whenever, is seen at take
        try:
            proc.stdin.write(encoded(open_command(path, readonly=readonly)))
            proc.stdin.flush()
            self._opening = (path, readonly)
        except OSError:  # it died already: take() finds it dead and the read starts its own
            pass

    def reader(self, path: str, *, readonly: bool = False) -> ReaderProcess:
        """A :class:`ReaderProcess` on ``path``: this spare's child if it can be taken, else a new one.

        A child opening another database (or the same one otherwise), or a file since replaced at
        ``path`` (a restore renamed over it: the child holds the old one open), is stopped, not reused.
        """
        opening = self._opening
        proc = self.take()
        if proc is not None and opening is not None and (opening != (path, readonly) or self._file != _identity(path)):
            stop_child(proc)
            proc = None
        return ReaderProcess(path, readonly=readonly, process=proc, opening=proc is not None and opening is not None)

    @property
    def pid(self) -> int | None:
        """The spare child's process id (``None`` once taken or closed)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    def take(self) -> subprocess.Popen[bytes] | None:
        """The started child, handed over once (``None``: taken, closed, dead, or not this process's)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return None
        if os.getpid() != self._owner:  # a fork the hook below did not see: not ours to use or stop
            return None
        if proc.poll() is not None:
            stop_child(proc)
            return None
        return proc

    def close(self) -> None:
        """Stop the child unless it was taken."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and os.getpid() == self._owner:
            stop_child(proc)

    def _forget_after_fork(self) -> None:
        """In a forked child: close this copy of the pipes; the parent still owns the spare."""
        proc, self._proc = self._proc, None
        self._lock = threading.Lock()
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    # The raw file, once: a buffered close would first flush the parent's unsent bytes
                    # into the spare's stdin, and a bare os.close left the pipe object to close the
                    # same descriptor number again when freed.
                    try:
                        getattr(pipe, "raw", pipe).close()
                    except OSError:
                        pass
            proc.returncode = 0  # not this process's child: never waited for or signalled from here


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _after_fork_in_child() -> None:
    for spare in list(_spares):
        spare._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
