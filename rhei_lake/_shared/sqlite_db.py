"""Opening SQLite connections the way rhei_lake needs them, and reading their text.

Capture (triggers, polling, first reads) and the OLTP read route both open
SQLite through :func:`connect`, whose ``text_factory`` keeps a TEXT value that
is not UTF-8 as :class:`InvalidText` instead of failing the whole read.
"""

from __future__ import annotations

import os
import sqlite3
from urllib.parse import quote

from rhei_lake.errors import ConfigError, SchemaError, SourceError, SourceUnavailableError

BUSY_TIMEOUT_MS = 10_000


class InvalidText(bytes):
    """A TEXT value whose bytes are not UTF-8 (SQLite stores whatever it is given).

    Kept as its raw bytes so that the one value is reported, by table, column
    and event, instead of the whole read failing on it.
    """

    def __repr__(self) -> str:
        return f"<TEXT that is not UTF-8: {bytes(self)!r}>"


def decode_text(raw: bytes) -> str | InvalidText:
    """SQLite ``text_factory``: UTF-8 text as ``str``, anything else as :class:`InvalidText`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidText(raw)


def connect(path: str, *, readonly: bool = False, create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable across threads.

    ``readonly`` opens with ``mode=ro`` so the engine cannot write to the file.
    """
    if path in (":memory:", "") or path.startswith("file::memory:"):
        raise ConfigError("oltp_path: an in-memory SQLite database cannot be shared between connections; use a file")
    if not readonly and not create and not os.path.exists(path):
        raise SourceError(f"SQLite database {path!r} does not exist")
    if readonly and not os.path.exists(path):
        raise SourceError(f"SQLite database {path!r} does not exist")
    try:
        if readonly:
            uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ConfigError(f"oltp_path: directory {parent!r} does not exist")
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.text_factory = decode_text  # one bad value is reported as such, not a failed read
        if not readonly:
            conn.execute("PRAGMA foreign_keys = ON")
        return conn
    except sqlite3.DatabaseError as exc:
        raise translate_sqlite_error(exc, path) from exc


def enable_wal(conn: sqlite3.Connection, path: str) -> None:
    """Switch the database to WAL: readers never block the writer, and snapshots are consistent."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise SourceError(f"{path}: could not switch SQLite to WAL journaling (got {mode!r}); rhei_lake needs WAL")
    conn.execute("PRAGMA synchronous = NORMAL")


def translate_sqlite_error(exc: BaseException, path: str) -> SourceError:
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low or "disk i/o" in low:
        return SourceUnavailableError(f"{path}: {text}")
    if "database or disk is full" in low:
        return SourceUnavailableError(f"{path}: the disk holding the SQLite database is full ({text})")
    if "readonly database" in low or "read-only" in low:
        return SourceError(
            f"{path}: SQLite cannot write the database; check the permissions of the file and its directory ({text})"
        )
    if "no such table" in low or "no such column" in low:
        return SchemaError(f"{path}: {text}")
    if "not a database" in low or "malformed" in low:
        return SourceError(f"{path}: not a usable SQLite database ({text})")
    if "unable to open" in low:
        return SourceError(f"{path}: cannot open the SQLite database ({text})")
    return SourceError(f"{path}: {text}")
