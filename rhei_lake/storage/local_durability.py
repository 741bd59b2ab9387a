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
    """While a long local write runs, flush the data files it writes to disk as they grow.

    delta-rs writes a streamed append as data files of ~100 MB (its target
    file size), each once it is complete, and the commit is fsynced after the
    write returns (:func:`sync_commits`): hundreds of megabytes written, then
    all of them flushed at once, after the last row is read. A background
    thread here fdatasyncs each file in ``table_dir`` that is new or grew
    since its last look (under a staging name too), every ``interval``
    seconds, so each finished file goes to disk while the next is encoded.
    Only a head start: :func:`sync_commits` still syncs every file of the
    commit, and this thread never raises (a file renamed or removed under it
    is passed over).
    """

    def __init__(self, table_dir: str, *, interval: float = 0.05) -> None:
        self.table_dir = table_dir
        self.interval = interval
        self._sizes: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EarlyWriteback:
        self._sizes = self._files()  # what was there before the write is not its to flush
        self._thread = threading.Thread(target=self._run, name="rhei-early-writeback", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _files(self) -> dict[str, int]:
        sizes = {}
        try:
            with os.scandir(self.table_dir) as entries:
                for entry in entries:
                    try:
                        if entry.is_file(follow_symlinks=False):
                            sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            pass
        return sizes

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, size in self._files().items():
                if self._sizes.get(name) == size:
                    continue
                try:
                    fd = os.open(os.path.join(self.table_dir, name), os.O_RDONLY)
                    try:
                        _flush_data(fd)
                    finally:
                        os.close(fd)
                except OSError:
                    continue
                self._sizes[name] = size
