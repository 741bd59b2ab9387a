"""What a folder holds, to prove that a command wrote nothing."""

from __future__ import annotations

import hashlib
import os


def tree_digest(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Every file below ``folder`` (a database with its -wal and -shm, a lake), by relative path and content hash."""
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out
