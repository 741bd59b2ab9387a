"""The columnar SQLite reader process (``python -P -S reader_child.py FOLDER...``).

ADBC reads SQLite into Arrow an order of magnitude faster than the ``sqlite3``
module, but it links its own copy of SQLite; two copies in one process can
corrupt a database (closing one copy's file descriptor drops the other's POSIX
locks). So ADBC runs here, alone, and streams Arrow IPC to the parent.

Protocol: JSON commands, one per line, on stdin; on stdout, for each command a
frame ``kind(1) + length(4, big-endian) + JSON`` where kind is ``K`` (ok) or
``E`` (error), except ``query``, which answers ``S`` followed by an Arrow IPC
stream and then an ``K``/``E`` trailer frame (``K`` carries the rows sent and
the seconds spent reading SQLite and sending batches, which overlap: SQLite
steps the next batch while this one is sent).

Commands: ``{"op": "open", "path": ..., "readonly": bool, "busy_timeout_ms": n}``, ``{"op": "begin"}``
(a read transaction: the next query pins its snapshot), ``{"op": "query",
"sql": ..., "params": [...], "batch_rows": n}``, ``{"op": "rollback"}``,
``{"op": "close"}``.
"""

from __future__ import annotations

import json
import os
import queue
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import pyarrow as pa
    from adbc_driver_manager import AdbcConnection


class ProtocolError(Exception):
    """A command this process cannot carry out in its state (reported as an ``E`` frame)."""


def _opened(conn: AdbcConnection | None) -> AdbcConnection:
    if conn is None:
        raise ProtocolError("no database is open: send an open command first")
    return conn


def _frame(out: BinaryIO, kind: bytes, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    out.write(kind + struct.pack(">I", len(data)) + data)
    out.flush()


def _query(conn: AdbcConnection, cmd: dict[str, Any], out: BinaryIO) -> None:
    import adbc_driver_manager
    import pyarrow as pa

    stmt = adbc_driver_manager.AdbcStatement(conn)
    try:
        stmt.set_options(**{"adbc.sqlite.query.batch_rows": str(cmd.get("batch_rows", 65536))})
        stmt.set_sql_query(cmd["sql"])
        params = cmd.get("params") or []
        if params:
            stmt.bind(pa.record_batch([[value] for value in params], names=[str(i) for i in range(len(params))]))
        started = time.perf_counter()
        handle, _ = stmt.execute_query()
        reader = pa.RecordBatchReader._import_from_c(handle.address)
        out.write(b"S")
        rows = 0
        # seconds in SQLite (ADBC) and in handing batches over (the pipe's back-pressure too)
        read, sent = time.perf_counter() - started, 0.0
        try:
            with pa.ipc.new_stream(out, reader.schema) as writer:
                for batch, seconds in _read_ahead(reader):
                    read += seconds
                    done = time.perf_counter()
                    writer.write_batch(batch)
                    sent += time.perf_counter() - done
                    rows += batch.num_rows
        except Exception as exc:  # the stream is closed; report after it
            _frame(out, b"E", {"type": type(exc).__name__, "message": str(exc)})
            return
        _frame(out, b"K", {"rows": rows, "read_seconds": read, "send_seconds": sent})
    finally:
        stmt.close()


def _read_ahead(reader: pa.RecordBatchReader) -> Iterator[tuple[pa.RecordBatch, float]]:
    """``(batch, seconds SQLite took for it)``: SQLite steps the next batch (in a thread, without
    the GIL) while this one is written to the pipe. At most one batch waits."""
    ready: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def produce() -> None:
        try:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    ready.put(None)
                    return
                ready.put((batch, time.perf_counter() - started))
        except BaseException as exc:
            ready.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting to put, then let it finish its batch
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def _busy_timeout(conn: AdbcConnection, ms: int) -> None:
    """Wait up to ``ms`` for a lock another connection holds (a rollback-journal writer committing),
    as the parent's sqlite3 connections do, instead of failing at once."""
    import adbc_driver_manager
    import pyarrow as pa

    stmt = adbc_driver_manager.AdbcStatement(conn)
    try:
        stmt.set_sql_query(f"PRAGMA busy_timeout = {max(ms, 0)}")
        handle, _ = stmt.execute_query()
        pa.RecordBatchReader._import_from_c(handle.address).read_all()
    finally:
        stmt.close()


def serve(commands, out: BinaryIO) -> None:
    # The driver manager's low-level API, not its DB-API layer: that one imports
    # pyarrow.dataset and pyarrow.compute, a third of this process's start-up.
    import adbc_driver_manager
    import adbc_driver_sqlite

    database = conn = None
    for line in commands:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "close":
                break
            if op == "open":
                uri = cmd["path"]
                if cmd.get("readonly"):
                    uri = f"file:{uri}?mode=ro"
                database = adbc_driver_sqlite.connect(uri)
                conn = adbc_driver_manager.AdbcConnection(database)
                _busy_timeout(conn, int(cmd.get("busy_timeout_ms", 0)))
                _frame(out, b"K", {})
            elif op == "begin":
                _opened(conn).set_autocommit(False)
                _frame(out, b"K", {})
            elif op == "rollback":
                connection = _opened(conn)
                connection.rollback()
                connection.set_autocommit(True)
                _frame(out, b"K", {})
            elif op == "query":
                _query(_opened(conn), cmd, out)
            else:
                raise ProtocolError(f"unknown op {op!r}")
        except Exception as exc:
            _frame(out, b"E", {"type": type(exc).__name__, "message": str(exc)})
    if conn is not None:
        conn.close()
    if database is not None:
        database.close()


def main() -> None:
    # Started without the site module (``-S``: its .pth files cost a third of this process's
    # start-up), with the folders holding pyarrow and the ADBC packages as arguments.
    sys.path[:0] = sys.argv[1:]
    # pyarrow imports numpy when it is installed, two thirds of its import time; this
    # process only moves Arrow data from C to an IPC stream and needs none of it.
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
    # pyarrow.lib takes cloudpickle when installed (~10 ms, an eighth of this process's start),
    # else the standard pickle: only for pickling Arrow objects, which this process never does.
    sys.modules.setdefault("cloudpickle", None)  # type: ignore[arg-type]
    # Import everything now, while the parent prepares: its first query (the one that
    # pins a snapshot, under the parent's write lock) then waits for SQLite alone.
    import adbc_driver_manager  # noqa: F401
    import adbc_driver_sqlite  # noqa: F401
    import pyarrow  # noqa: F401

    serve(sys.stdin, sys.stdout.buffer)
    sys.stdout.flush()
    # The database is closed and every reply written: skip the interpreter's teardown
    # (unloading pyarrow alone takes ~15 ms, which the parent would wait for).
    os._exit(0)


if __name__ == "__main__":
    main()
