"""Make local Delta commits survive an OS crash or a power loss, not only a crash of the process.

delta-rs writes a commit's data files and its log entry on the local file
system without ``fsync``: a process crash loses nothing (the kernel has the
pages), an OS crash or a power cut can. rhei_lake deletes things that a commit
replaces (the hot-path segments a flush folds in, the CDC log rows a snapshot
covers) only after the commit returned, so on the local tier each commit is
made durable before it is reported: its data files, its log entry, any
checkpoint, and the directories that name them.

A long write (a snapshot streamed into a table) also starts writing each of its
data files to disk while it writes the next (:class:`EarlyWriteback`), so that
its commit's fsync waits for the last file, not for all of them.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import stat
import sys
import threading
from collections.abc import Callable
from urllib.parse import unquote

LOG_DIR = "_delta_log"

log = logging.getLogger(__name__)


def newest_version(table_dir: str) -> int:
    """The highest commit version in the table's log (-1 when there is none yet)."""
    try:
        names = os.listdir(os.path.join(table_dir, LOG_DIR))
    except FileNotFoundError:
        return -1
    versions = [int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()]
    return max(versions, default=-1)


def sync_commits(table_dir: str, *, after: int) -> list[str]:
    """fsync every file of the commits after version ``after``; returns the paths synced."""
    log_dir = os.path.join(table_dir, LOG_DIR)
    synced: list[str] = []
    directories = {table_dir, log_dir}
    for name in sorted(os.listdir(log_dir)):
        stem = name.split(".", 1)[0]
        if not stem.isdigit():
            if name == "_last_checkpoint":
                synced.append(fsync_path(os.path.join(log_dir, name)))
            continue
        version = int(stem)
        path = os.path.join(log_dir, name)
        if name.endswith(".json") and version > after:
            for data_file in _added_files(table_dir, path):
                synced.append(fsync_path(data_file))
                directories.add(os.path.dirname(data_file))
            synced.append(fsync_path(path))
        elif ".checkpoint" in name and version >= after:
            synced.append(fsync_path(path))
    for directory in sorted(directories):
        fsync_path(directory)
    return synced


def _added_files(table_dir: str, commit: str) -> list[str]:
    files = []
    with open(commit, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            action = json.loads(line)
            if "add" in action:
                files.append(os.path.join(table_dir, *unquote(action["add"]["path"]).split("/")))
    return files


def fsync_path(path: str) -> str:
    """fsync the file or directory at ``path``; returns ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def _writeback_starter() -> Callable[[int], None] | None:
    """Linux's ``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``: start writing a file's dirty pages
    back (it may block while the device's queue is full, not for the writes to complete), leaving any
    error they meet to the fsync that follows; ``None`` elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int

    def start(fd: int) -> None:
        if call(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return start


_SYNC_FILE_RANGE_WRITE = 2
_start_writeback = _writeback_starter()


class EarlyWriteback:
    """While a long local write runs, start writing its new data files to disk as they appear.

    delta-rs writes a streamed append as data files of ~100 MB (its target
    file size), each once it is complete, and the commit is fsynced after the
    write returns (:func:`sync_commits`): hundreds of megabytes written, then
    all of them flushed at once, after the last row is read. A background
    thread here starts the writeback of each file new since the write began
    (under a staging name too) whenever it grew, looking every ``interval``
    seconds, so each finished file goes to disk while the next is encoded.
    Only a head start, on Linux only; :func:`sync_commits` stays the judge:

    * it does not wait for the writes it starts, and takes no error from
      them: Linux reports a failed writeback (EIO, ENOSPC) once, to the first
      fsync that asks, so a flush here that took it would let the commit's own
      fsync succeed over pages that never reached the disk;
    * where starting a writeback fails (a sandbox without the call, say), it
      stops starting them; the write goes on and its commit is fsynced as any.
    """

    def __init__(self, table_dir: str, *, interval: float = 0.05) -> None:
        self.table_dir = table_dir
        self.interval = interval
        self._before: set[str] = set()
        self._new: dict[str, int] = {}  # file written since the write began -> its size at its last writeback
        self._listed_at: int | None = None  # the directory's mtime when it was last listed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EarlyWriteback:
        if _start_writeback is None:
            return self
        try:
            self._before = set(os.listdir(self.table_dir))  # files there before the write are not its own
        except OSError:
            self._before = set()
        self._thread = threading.Thread(target=self._run, name="rhei-early-writeback", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _look_for_new_files(self) -> None:
        """List the directory again only when an entry was added, renamed or removed since the last look
        (a big table's thousands of files are not read every tick)."""
        try:
            changed = os.stat(self.table_dir).st_mtime_ns
        except OSError:
            return
        if changed == self._listed_at:
            return
        self._listed_at = changed
        try:
            names = set(os.listdir(self.table_dir)) - self._before
        except OSError:
            return
        self._new = {name: self._new.get(name, -1) for name in names}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._look_for_new_files()
            for name, written in list(self._new.items()):
                path = os.path.join(self.table_dir, name)
                try:
                    found = os.stat(path)
                    size = found.st_size
                    if size == written or not stat.S_ISREG(found.st_mode):
                        continue
                    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                except OSError:  # renamed or removed since: the next listing drops it
                    continue
                try:
                    assert _start_writeback is not None
                    _start_writeback(fd)
                    self._new[name] = size
                except OSError as exc:
                    log.debug("early writeback of %s stopped: %s", self.table_dir, exc)
                    return
                finally:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
