"""Make local Delta commits survive an OS crash or a power loss, not only a crash of the process.

delta-rs writes a commit's data files and its log entry on the local file
system without ``fsync``: a process crash loses nothing (the kernel has the
pages), an OS crash or a power cut can. rhei_lake deletes things that a commit
replaces (the hot-path segments a flush folds in, the CDC log rows a snapshot
covers) only after the commit returned, so on the local tier each commit is
made durable before it is reported: its data files, its log entry, any
checkpoint, and the directories that name them.
"""

from __future__ import annotations

import json
import os
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
