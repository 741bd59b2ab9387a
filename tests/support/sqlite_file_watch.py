"""What this process does to a SQLite database file, seen from the file's side, not through rhei_lake's objects.

:func:`connections_to` notes every connection opened to the file (Python's
``sqlite3.connect`` audit events name the database and hand over the new
connection, whoever opens it), and traces the statements they run on demand;
:func:`descriptors` lists the file descriptors this process holds on the file
and which of them may write (Linux's ``/proc/self/fdinfo``).
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

_watches: list[Connections] = []
_hook_lock = threading.Lock()
_hooked = False
_opening = threading.local()  # the file a connection is being opened to, between the two audit events


class Connections:
    """The connections opened to one file while it is watched (held until the watch ends: no weak references)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: list[sqlite3.Connection] = []

    def _opened(self, conn: sqlite3.Connection) -> None:
        self._seen.append(conn)

    @contextmanager
    def statements(self) -> Iterator[list[str]]:
        """The statements the open connections to the file run within the block (through their trace callbacks).

        A connection that only its opening thread may use is not traced (the lake opens its own for any thread).
        """
        statements: list[str] = []
        traced = []
        for conn in self._seen:
            try:
                conn.set_trace_callback(statements.append)
            except sqlite3.ProgrammingError:  # closed, or bound to another thread
                continue
            traced.append(conn)
        try:
            yield statements
        finally:
            for conn in traced:
                try:
                    conn.set_trace_callback(None)
                except sqlite3.ProgrammingError:
                    pass


def _database_file(database: object) -> str | None:
    if isinstance(database, bytes):
        database = database.decode()
    if not isinstance(database, str | os.PathLike):
        return None
    name = os.fspath(database)
    if name.startswith("file:"):
        name = unquote(name[len("file:") :].split("?", 1)[0])
    return os.path.realpath(name) if name and name != ":memory:" else None


def _on_audit(event: str, args: tuple[object, ...]) -> None:
    if event == "sqlite3.connect":
        _opening.path = _database_file(args[0]) if _watches else None
    elif event == "sqlite3.connect/handle":
        path, _opening.path = getattr(_opening, "path", None), None
        conn = args[0]
        if path is not None and isinstance(conn, sqlite3.Connection):
            for watch in _watches:
                if watch.path == path:
                    watch._opened(conn)


@contextmanager
def connections_to(path: str | os.PathLike[str]) -> Iterator[Connections]:
    """Note the connections opened to ``path`` (by anyone in this process) within the block."""
    global _hooked
    with _hook_lock:
        if not _hooked:  # an audit hook stays for the process's life: one, serving every watch
            sys.addaudithook(_on_audit)
            _hooked = True
    watch = Connections(os.path.realpath(path))
    _watches.append(watch)
    try:
        yield watch
    finally:
        _watches.remove(watch)
        watch._seen.clear()


def descriptors(path: str | os.PathLike[str]) -> dict[int, bool]:
    """The descriptors this process holds open on ``path``, each with whether it may write (``O_WRONLY``, ``O_RDWR``)."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        raise OSError("no /proc/self/fd: open descriptors cannot be listed on this system")
    target = os.path.realpath(path)
    found = {}
    for entry in fds.iterdir():
        try:
            if os.path.realpath(os.readlink(entry)) != target:
                continue
            info = Path(f"/proc/self/fdinfo/{entry.name}").read_text().splitlines()
        except FileNotFoundError:  # closed meanwhile (iterdir's own descriptor among them)
            continue
        flags = int(next(line for line in info if line.startswith("flags:")).split()[1], 8)
        found[int(entry.name)] = flags & os.O_ACCMODE != os.O_RDONLY
    return found
