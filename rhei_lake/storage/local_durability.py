"""Make local Delta commits survive an OS crash or a power loss, not only a crash of the process.

delta-rs writes a commit's data files and its log entry on the local file
system without ``fsync``: a process crash loses nothing (the kernel has the
pages), an OS crash or a power cut can. rhei_lake deletes things that a commit
replaces (the hot-path segments a flush folds in, the CDC log rows a snapshot
covers) only after the commit returned, so on the local tier each commit is
made durable before it is reported: its data files, its log entry, any
checkpoint, and the directories that name them.

A long write (a snapshot streamed into a table) also flushes each of its data
files while it writes the next (:class:`EarlyWriteback`), so that its commit's
fsync waits for the last file, not for all of them.
"""

from __future__ import annotations

import json
import os
import stat
import threading
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


def _flush_data(fd: int) -> None:
    """The file's data on disk: fdatasync where there is one (not macOS), else fsync."""
    getattr(os, "fdatasync", os.fsync)(fd)


class EarlyWriteback:
    """While a long local write runs, flush its new data files to disk as they appear.

    delta-rs writes a streamed append as data files of ~100 MB (its target
    file size), each once it is complete, and the commit is fsynced after the
    write returns (:func:`sync_commits`): hundreds of megabytes written, then
    all of them flushed at once, after the last row is read. A background
    thread here fdatasyncs each file new since the write began (under a
    staging name too) whenever it grew, looking every ``interval`` seconds, so
    each finished file reaches the disk while the next is encoded. Starting
    the writeback without waiting (Linux's ``sync_file_range``) is not enough:
    on a virtual disk the expensive part is the cache flush only a sync asks
    for. :func:`sync_commits` still fsyncs every file of the commit.

    An error a flush here reports (EIO, ENOSPC) is raised when the write ends,
    unless the write raised its own: Linux reports a failed writeback once, to
    the first sync that asks, so the commit's fsync on a descriptor opened
    later would succeed over pages that never reached the disk.
    """

    def __init__(self, table_dir: str, *, interval: float = 0.05) -> None:
        self.table_dir = table_dir
        self.interval = interval
        self._before: set[str] = set()
        self._new: dict[str, int] = {}  # file written since the write began -> its size at its last flush
        self._listed_at: int | None = None  # the directory's mtime when it was last listed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: OSError | None = None  # the first error a flush reported

    def __enter__(self) -> EarlyWriteback:
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
        while not self._stop.wait(self.interval) and self.error is None:
            self._look_for_new_files()
            for name, flushed in list(self._new.items()):
                path = os.path.join(self.table_dir, name)
                try:
                    found = os.stat(path)
                    if found.st_size == flushed or not stat.S_ISREG(found.st_mode):
                        continue
                    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                except OSError:  # renamed or removed since: the next listing drops it
                    continue
                try:
                    _flush_data(fd)
                    self._new[name] = found.st_size
                except OSError as exc:
                    self.error = exc
                    return
                finally:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
