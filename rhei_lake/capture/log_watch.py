"""Reading a SQLite database's CDC log without touching it: how far a read-only lake lags behind.

A lake opened ``read_only`` with an ``oltp_path`` never installs, prunes or
snapshots anything there; it only counts the captured events its tables have
not committed yet, on a ``query_only`` connection (no write can slip through).
"""

from __future__ import annotations

import os
import sqlite3
import threading

from rhei_lake.capture import cdc_log
from rhei_lake.capture.sqlite_db import connect, translate_sqlite_error
from rhei_lake.capture.triggers import LOG_TABLE

TABLES_SQL = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!' "
    "AND name NOT LIKE '!_rhei!_%' ESCAPE '!' ORDER BY name"
)
"""The application's own tables: neither SQLite's internal ones nor rhei_lake's ``_rhei_*``."""


class LogWatch:
    """Lag of each table behind the CDC log of the SQLite database at ``path``, read only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not os.path.exists(self.path):
                return None
            conn = connect(self.path, create=False)
            conn.execute("PRAGMA query_only = ON")
            self._conn = conn
        return self._conn

    def table_lag(self, table: str, after: int) -> tuple[int, int | None]:
        """Events of ``table`` captured after ``after`` and the oldest one's timestamp (micros)."""
        with self._lock:
            conn = self._connection()
            if conn is None or not _has_log(conn):
                return 0, None
            try:
                return cdc_log.pending_count(conn, after, table=table)
            except sqlite3.Error as exc:
                raise translate_sqlite_error(exc, self.path) from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _has_log(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (LOG_TABLE,)).fetchone()
        is not None
    )


def application_tables(conn: sqlite3.Connection) -> list[str]:
    """The tables of the database that an application made (not SQLite's, not rhei_lake's)."""
    return [row[0] for row in conn.execute(TABLES_SQL)]
