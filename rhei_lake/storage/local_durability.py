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
import os
import sys
import threading
from collections.abc import Callable
from urllib.parse import unquote

LOG_DIR = "_delta_log"


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
    back, without waiting and without taking an error from the fsync that follows; ``None`` elsewhere."""
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
    """While a long local write runs, start writing the new data files to disk as they appear.

    delta-rs writes a streamed append as data files of ~100 MB (its target
    file size), each once it is complete, and the commit is fsynced after the
    write returns (:func:`sync_commits`): hundreds of megabytes written, then
    all of them flushed at once, after the last row is read. A background
    thread here starts the writeback of each file in ``table_dir`` that is new
    since the write began (under a staging name too) and grew since its last
    look, every ``interval`` seconds, so each finished file goes to disk while
    the next is encoded. Only a head start, on Linux only:

    * it waits for nothing and collects no error: Linux reports a failed
      writeback (EIO, ENOSPC) once, to the first fsync that asks, so a flush
      here that took the error would let the commit's own fsync succeed
      although the pages never reached the disk. :func:`sync_commits` still
      fsyncs every file of the commit, waits for the writes started here and
      reports their errors;
    * an error starting a writeback is raised when the write ends (a file
      renamed or removed under it is passed over).
    """

    def __init__(self, table_dir: str, *, interval: float = 0.05) -> None:
        self.table_dir = table_dir
        self.interval = interval
        self._before: set[str] = set()
        self._sizes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: OSError | None = None  # the first error starting a writeback met

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

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is not None and exc_type is None:
            raise self.error

    def _new_files(self) -> dict[str, int]:
        """The files written since the write began, with their sizes (one stat per new file only)."""
        sizes = {}
        try:
            with os.scandir(self.table_dir) as entries:
                for entry in entries:
                    if entry.name in self._before:
                        continue
                    try:
                        if entry.is_file(follow_symlinks=False):
                            sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            pass
        return sizes

    def _run(self) -> None:
        assert _start_writeback is not None
        while not self._stop.wait(self.interval):
            for name, size in self._new_files().items():
                if self._sizes.get(name) == size:
                    continue
                try:
                    fd = os.open(os.path.join(self.table_dir, name), os.O_RDONLY)
                except OSError:  # renamed or removed since the scan
                    continue
                try:
                    _start_writeback(fd)
                except OSError as exc:
                    if self.error is None:
                        self.error = exc
                    continue
                finally:
                    os.close(fd)
                self._sizes[name] = size
