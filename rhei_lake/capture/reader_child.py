"""The columnar SQLite reader process (``python -P -S -c RUN reader_child.py DRIVER``: run from its cached bytecode).

ADBC reads SQLite into Arrow an order of magnitude faster than the ``sqlite3``
module, but it links its own copy of SQLite; two copies in one process can
corrupt a database (closing one copy's file descriptor drops the other's POSIX
locks). So ADBC runs here, alone, and streams Arrow buffers to the parent.

The parent waits for this process's start at every snapshot and first sync, so
it imports only what is built into the interpreter or small: not pyarrow nor
ADBC's driver manager (importing them took ~35 ms of a ~50 ms start), not json
(through ``re``, a quarter of what is left). It calls the SQLite driver's own
ADBC functions (``DRIVER``, the shared library exports them) through
:mod:`ctypes` and writes the buffers of each Arrow array the driver hands over
through the C data interface; the parent rebuilds the arrays around them
(:func:`rhei_lake.capture.reader_process.received_batch`).

Protocol: every message is a :mod:`marshal` dict (parent and child run the same
interpreter). On stdin, commands, each ``length(4, big-endian) + dict``. On
stdout, for each command a frame ``kind(1) + length(4, big-endian) + dict``,
where kind is ``K`` (ok) or ``E`` (error), except ``query``, which answers ``S``,
an ``H`` frame of the result's columns (``{"names": [...], "formats": [...],
"nullable": [...]}``, formats as the C data interface spells them), then each
batch as a ``B`` frame (``{"rows": n, "columns": [[null_count, [buffer sizes]],
...], "align": ALIGN}``) followed by its buffers, each padded to :data:`ALIGN` bytes
(the parent does not import this module: ctypes may be missing there), then ``.``
(the end) and a ``K``/``E`` trailer frame (``K`` carries the rows sent and the
seconds spent reading SQLite and sending batches, which overlap: SQLite steps
the next batch while this one is sent). A validity buffer is sent only when the
column has nulls (else its size is 0); a string or binary column sends its
offsets and its bytes.

Commands: ``{"op": "open", "uri": ..., "busy_timeout_ms": n}`` (a SQLite URI filename), ``{"op": "begin"}``
(a read transaction: the next query pins its snapshot), ``{"op": "query",
"sql": ..., "batch_rows": n}``, ``{"op": "rollback"}``, ``{"op": "close"}``.
"""

from __future__ import annotations

import _thread
import ctypes
import marshal
import os
import struct
import sys
import time
from ctypes import POINTER, byref, c_char_p, c_int, c_int32, c_int64, c_uint8, c_void_p

TYPE_CHECKING = False  # typing costs ~2 ms of this process's start; only checkers need it
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, BinaryIO

ALIGN = 64  # each buffer starts at a multiple of this in a batch's body (Arrow's own alignment)

# Fixed-width formats the SQLite driver produces, by bytes per value; "n" (null) has no buffers.
_FIXED = {"l": 8, "g": 8}
# Variable-width ones, by bytes per offset.
_VARIABLE = {"u": 4, "z": 4, "U": 8, "Z": 8}

_NULLABLE = 2  # ARROW_FLAG_NULLABLE
_STATUS = (
    "OK UNKNOWN NOT_IMPLEMENTED NOT_FOUND ALREADY_EXISTS INVALID_ARGUMENT INVALID_STATE "
    "INVALID_DATA INTEGRITY INTERNAL IO CANCELLED TIMEOUT UNAUTHENTICATED UNAUTHORIZED"
).split()


class ProtocolError(Exception):
    """A command this process cannot carry out in its state (reported as an ``E`` frame)."""


class AdbcFailure(Exception):
    """An ADBC call or an Arrow stream of the driver failed; the message is the driver's."""


# -- the ADBC and Arrow C structures ------------------------------------------------------
class _Error(ctypes.Structure):
    pass


_Error._fields_ = [
    ("message", c_void_p),
    ("vendor_code", c_int32),
    ("sqlstate", ctypes.c_char * 5),
    ("release", ctypes.CFUNCTYPE(None, POINTER(_Error))),
    ("private_data", c_void_p),  # ADBC 1.1 (read only when vendor_code says so; zeroed here)
    ("private_driver", c_void_p),
]


class _Handle(ctypes.Structure):
    """``AdbcDatabase``, ``AdbcConnection`` and ``AdbcStatement`` share this layout."""

    _fields_ = [("private_data", c_void_p), ("private_driver", c_void_p)]


class _Schema(ctypes.Structure):
    pass


_Schema._fields_ = [
    ("format", c_char_p),
    ("name", c_char_p),
    ("metadata", c_void_p),
    ("flags", c_int64),
    ("n_children", c_int64),
    ("children", POINTER(POINTER(_Schema))),
    ("dictionary", POINTER(_Schema)),
    ("release", ctypes.CFUNCTYPE(None, POINTER(_Schema))),
    ("private_data", c_void_p),
]


class _Array(ctypes.Structure):
    pass


_Array._fields_ = [
    ("length", c_int64),
    ("null_count", c_int64),
    ("offset", c_int64),
    ("n_buffers", c_int64),
    ("n_children", c_int64),
    ("buffers", POINTER(c_void_p)),
    ("children", POINTER(POINTER(_Array))),
    ("dictionary", POINTER(_Array)),
    ("release", ctypes.CFUNCTYPE(None, POINTER(_Array))),
    ("private_data", c_void_p),
]


class _Stream(ctypes.Structure):
    pass


_Stream._fields_ = [
    ("get_schema", ctypes.CFUNCTYPE(c_int, POINTER(_Stream), POINTER(_Schema))),
    ("get_next", ctypes.CFUNCTYPE(c_int, POINTER(_Stream), POINTER(_Array))),
    ("get_last_error", ctypes.CFUNCTYPE(c_void_p, POINTER(_Stream))),
    ("release", ctypes.CFUNCTYPE(None, POINTER(_Stream))),
    ("private_data", c_void_p),
]


class Driver:
    """The SQLite driver's ADBC functions, called directly (the library exports them)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        handle, error, text = POINTER(_Handle), POINTER(_Error), c_char_p
        signatures: dict[str, list[Any]] = {
            "AdbcDatabaseNew": [handle, error],
            "AdbcDatabaseSetOption": [handle, text, text, error],
            "AdbcDatabaseInit": [handle, error],
            "AdbcDatabaseRelease": [handle, error],
            "AdbcConnectionNew": [handle, error],
            "AdbcConnectionInit": [handle, handle, error],
            "AdbcConnectionSetOption": [handle, text, text, error],
            "AdbcConnectionRollback": [handle, error],
            "AdbcConnectionRelease": [handle, error],
            "AdbcStatementNew": [handle, handle, error],
            "AdbcStatementSetOption": [handle, text, text, error],
            "AdbcStatementSetSqlQuery": [handle, text, error],
            "AdbcStatementExecuteQuery": [handle, POINTER(_Stream), POINTER(c_int64), error],
            "AdbcStatementRelease": [handle, error],
        }
        for name, argtypes in signatures.items():
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = c_uint8
            setattr(self, name, function)

    def call(self, name: str, *args: Any) -> None:
        """Call ADBC function ``name`` (its last argument, the error, is added); raise what it reports."""
        error = _Error()
        status = getattr(self, name)(*args, byref(error))
        if status:
            message = ctypes.string_at(error.message).decode("utf-8", "replace") if error.message else ""
            if error.release:
                error.release(byref(error))
            label = _STATUS[status] if status < len(_STATUS) else str(status)
            raise AdbcFailure(f"{label}: {message}" if message else f"{label}: {name} failed")


def _stream_error(stream: _Stream, code: int) -> AdbcFailure:
    message = stream.get_last_error(byref(stream)) if stream.get_last_error else None
    text = ctypes.string_at(message).decode("utf-8", "replace") if message else os.strerror(code)
    return AdbcFailure(text)


class Connection:
    """One ADBC connection on one SQLite database (and its database handle)."""

    def __init__(self, driver: Driver, uri: bytes, busy_timeout_ms: int) -> None:
        self.driver = driver
        self.database: _Handle | None = None
        self.connection: _Handle | None = None
        try:
            database = _Handle()
            driver.call("AdbcDatabaseNew", byref(database))
            self.database = database
            driver.call("AdbcDatabaseSetOption", byref(database), b"uri", uri)
            driver.call("AdbcDatabaseInit", byref(database))
            connection = _Handle()
            driver.call("AdbcConnectionNew", byref(connection))
            self.connection = connection
            driver.call("AdbcConnectionInit", byref(connection), byref(database))
            # Wait up to busy_timeout_ms for a lock another connection holds (a rollback-journal
            # writer committing), as the parent's sqlite3 connections do, instead of failing at once.
            with self.execute(f"PRAGMA busy_timeout = {max(busy_timeout_ms, 0)}", 1) as stream:
                for array in _arrays(stream):
                    _release(array)
        except BaseException:
            self.close()
            raise

    def set_autocommit(self, on: bool) -> None:
        assert self.connection is not None
        value = b"true" if on else b"false"
        self.driver.call("AdbcConnectionSetOption", byref(self.connection), b"adbc.connection.autocommit", value)

    def rollback(self) -> None:
        assert self.connection is not None
        self.driver.call("AdbcConnectionRollback", byref(self.connection))

    def execute(self, sql: str, batch_rows: int) -> Query:
        """Run ``sql``: a context manager yielding its Arrow stream, released (with the statement) on exit."""
        return Query(self, sql, batch_rows)

    def close(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            self.driver.call("AdbcConnectionRelease", byref(connection))
        if self.database is not None:
            database, self.database = self.database, None
            self.driver.call("AdbcDatabaseRelease", byref(database))


class Query:
    """A statement and the stream of its result (``with``: both released at the end)."""

    def __init__(self, connection: Connection, sql: str, batch_rows: int) -> None:
        self.driver = connection.driver
        self.connection = connection
        self.sql = sql.encode()
        self.batch_rows = batch_rows
        self.statement: _Handle | None = None
        self.stream = _Stream()

    def __enter__(self) -> _Stream:
        driver, statement = self.driver, _Handle()
        assert self.connection.connection is not None
        try:
            driver.call("AdbcStatementNew", byref(self.connection.connection), byref(statement))
            self.statement = statement
            option = str(self.batch_rows).encode()
            driver.call("AdbcStatementSetOption", byref(statement), b"adbc.sqlite.query.batch_rows", option)
            driver.call("AdbcStatementSetSqlQuery", byref(statement), self.sql)
            driver.call("AdbcStatementExecuteQuery", byref(statement), byref(self.stream), byref(c_int64()))
        except BaseException:
            self.__exit__()
            raise
        return self.stream

    def __exit__(self, *exc: object) -> None:
        if self.stream.release:
            self.stream.release(byref(self.stream))
        if self.statement is not None:
            statement, self.statement = self.statement, None
            self.driver.call("AdbcStatementRelease", byref(statement))


def _arrays(stream: _Stream) -> Iterator[_Array]:
    """The stream's arrays (each a struct of columns), to be released by the caller."""
    while True:
        array = _Array()
        code = stream.get_next(byref(stream), byref(array))
        if code:
            _release(array)  # the driver may have started filling it
            raise _stream_error(stream, code)
        if not array.release:  # the end of the stream
            return
        yield array


def _release(array: _Array) -> None:
    if array.release:
        array.release(byref(array))


def _columns(stream: _Stream) -> dict[str, list[Any]]:
    """The result's column names, Arrow formats and whether each is nullable."""
    schema = _Schema()
    code = stream.get_schema(byref(stream), byref(schema))
    if code:
        raise _stream_error(stream, code)
    try:
        names, formats, nullable = [], [], []
        for i in range(schema.n_children):
            child = schema.children[i].contents
            names.append((child.name or b"").decode("utf-8", "replace"))
            nullable.append(bool(child.flags & _NULLABLE))
            fmt = (child.format or b"").decode()
            if fmt != "n" and fmt not in _FIXED and fmt not in _VARIABLE:
                raise AdbcFailure(
                    f"the SQLite driver returned column {names[-1]!r} as Arrow format {fmt!r}, unknown here"
                )
            formats.append(fmt)
        return {"names": names, "formats": formats, "nullable": nullable}
    finally:
        if schema.release:
            schema.release(byref(schema))


def _buffers(column: _Array, fmt: str, name: str) -> list[tuple[int | None, int]]:
    """``(address, size)`` of each buffer ``column`` (an array of format ``fmt``) sends; address
    ``None``: that many zero bytes."""
    if column.offset:
        raise AdbcFailure(f"the SQLite driver returned an array with offset {column.offset}, unsupported here")
    length, buffers = column.length, column.buffers
    if fmt == "n":
        return []
    validity: tuple[int | None, int] = (
        (buffers[0], (length + 7) // 8) if column.null_count and buffers[0] else (None, 0)
    )
    if fmt in _FIXED:
        if length and not buffers[1]:
            raise AdbcFailure(f"the SQLite driver returned column {name!r} without its values")
        return [validity, (buffers[1], length * _FIXED[fmt])]
    width = _VARIABLE[fmt]
    offsets = buffers[1]
    if not offsets:
        if length:
            raise AdbcFailure(f"the SQLite driver returned column {name!r} without its offsets")
        return [validity, (None, width), (None, 0)]  # an empty array may leave them out: one zero offset
    kind = c_int32 if width == 4 else c_int64
    start, end = kind.from_address(offsets).value, kind.from_address(offsets + width * length).value
    if end < start:  # the driver's 32-bit offsets wrapped (a wrap back past zero the parent's check finds)
        raise AdbcFailure(
            f"column {name!r} holds more than 2 GiB of text or bytes in one batch of {length} rows, more "
            "than an Arrow string column can; lower the lake's batch_size"
        )
    if end and not buffers[2]:
        raise AdbcFailure(f"the SQLite driver returned column {name!r} without its bytes")
    return [validity, (offsets, width * (length + 1)), (buffers[2], end)]


def _send_batch(out: BinaryIO, array: _Array, names: list[str], formats: list[str]) -> None:
    if array.offset or array.n_children != len(formats):
        raise AdbcFailure("the SQLite driver returned a batch that does not match its schema")
    columns, parts = [], []
    for i, (name, fmt) in enumerate(zip(names, formats)):
        column = array.children[i].contents
        buffers = _buffers(column, fmt, name)
        columns.append([column.null_count, [size for _, size in buffers]])
        parts.extend(buffers)
    _frame(out, b"B", {"rows": array.length, "columns": columns, "align": ALIGN})
    try:
        for address, size in parts:
            if size:
                out.write((ctypes.c_char * size).from_address(address) if address is not None else bytes(size))
                if size % ALIGN:
                    out.write(bytes(ALIGN - size % ALIGN))
    except BaseException:
        # Part of a body is on the pipe and no frame can follow it: end here, and the parent reads a
        # stream cut short (its error names this process's exit).
        os._exit(1)


def _frame(out: BinaryIO, kind: bytes, payload: dict[str, Any]) -> None:
    data = marshal.dumps(payload)
    out.write(kind + struct.pack(">I", len(data)) + data)


def _query(conn: Connection, cmd: dict[str, Any], out: BinaryIO) -> None:
    started = time.perf_counter()
    with conn.execute(cmd["sql"], int(cmd.get("batch_rows", 65536))) as stream:
        columns = _columns(stream)
        names, formats = columns["names"], columns["formats"]
        out.write(b"S")
        _frame(out, b"H", columns)
        rows = 0
        # seconds in SQLite (ADBC) and in handing batches over (the pipe's back-pressure too)
        read, sent = time.perf_counter() - started, 0.0
        try:
            for array, seconds in _read_ahead(stream):
                try:
                    read += seconds
                    done = time.perf_counter()
                    _send_batch(out, array, names, formats)
                    sent += time.perf_counter() - done
                    rows += array.length
                finally:
                    _release(array)
        except Exception as exc:  # the stream ends here; report after it
            out.write(b".")
            _frame(out, b"E", {"type": type(exc).__name__, "message": str(exc)})
            return
        out.write(b".")
        _frame(out, b"K", {"rows": rows, "read_seconds": read, "send_seconds": sent})


class _Handover:
    """One item at a time from a producer thread to its consumer, on ``_thread``'s locks: ``queue`` and
    ``threading`` import ``collections`` and ``functools``, ~3.5 ms of this process's start, which the
    parent waits for."""

    def __init__(self) -> None:
        self._item: Any = None
        self._full = _thread.allocate_lock()  # free while an item waits
        self._full.acquire()
        self._empty = _thread.allocate_lock()  # free while none does

    def put(self, item: Any) -> None:
        """Hand ``item`` over once the one before it is taken."""
        self._empty.acquire()
        self._item = item
        self._full.release()

    def take(self, timeout: float = -1) -> tuple[bool, Any]:
        """``(True, item)``, or ``(False, None)`` if none came within ``timeout`` seconds (-1: wait)."""
        if not self._full.acquire(True, timeout):
            return False, None
        item, self._item = self._item, None
        self._empty.release()
        return True, item


def _read_ahead(stream: _Stream) -> Iterator[tuple[_Array, float]]:
    """``(array, seconds SQLite took for it)``: SQLite steps the next batch (in a thread; ctypes lets go
    of the GIL) while this one is written to the pipe. At most one batch waits."""
    ready = _Handover()
    stopped: list[bool] = []
    running = _thread.allocate_lock()  # held by the producer until it returns
    running.acquire()

    def produce() -> None:
        try:
            arrays = _arrays(stream)
            while not stopped:
                started = time.perf_counter()
                array = next(arrays, None)
                if array is None:
                    ready.put(None)
                    return
                ready.put((array, time.perf_counter() - started))
        except BaseException as exc:
            ready.put(exc)
        finally:
            running.release()

    _thread.start_new_thread(produce, ())
    try:
        while True:
            _, item = ready.take()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.append(True)
        finished = False
        while True:  # unblock a producer waiting to hand a batch over, then let it finish its batch
            finished = finished or running.acquire(False)
            taken, item = ready.take(0 if finished else 0.05)
            if taken and isinstance(item, tuple):
                _release(item[0])
            if finished and not taken:
                break


def _opened(conn: Connection | None) -> Connection:
    if conn is None:
        raise ProtocolError("no database is open: send an open command first")
    return conn


def _commands(source: BinaryIO) -> Iterator[bytes]:
    """Each command's bytes, until the parent closes this process's stdin."""
    while True:
        head = source.read(4)
        if len(head) < 4:
            return
        (length,) = struct.unpack(">I", head)
        data = source.read(length)
        if len(data) < length:
            return
        yield data


def serve(driver: Driver, commands: BinaryIO, out: BinaryIO) -> None:
    conn: Connection | None = None
    try:
        for data in _commands(commands):
            try:
                cmd = marshal.loads(data)
                op = cmd["op"]
                if op == "close":
                    break
                if op == "open":
                    if conn is not None:
                        raise ProtocolError("a database is open already")
                    conn = Connection(driver, cmd["uri"], int(cmd.get("busy_timeout_ms", 0)))
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
            out.flush()
    finally:
        if conn is not None:
            conn.close()


def main() -> None:
    # Started without the site module (``-S``), with the driver's shared library as argument.
    driver = Driver(sys.argv[1])
    serve(driver, sys.stdin.buffer, sys.stdout.buffer)
    sys.stdout.flush()
    os._exit(0)  # every reply is written and the database closed: skip the interpreter's teardown


if __name__ == "__main__":
    main()
