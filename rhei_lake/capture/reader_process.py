"""The parent side of :mod:`rhei_lake.capture.reader_child`: Arrow from SQLite, fast and safely."""

from __future__ import annotations

import functools
import importlib.util
import io
import marshal
import os
import struct
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from rhei_lake._shared.sqlite_db import BUSY_TIMEOUT_MS, translate_sqlite_error
from rhei_lake.capture.prefetch import prefetched
from rhei_lake.errors import SourceError


def fast_reader_available() -> bool:
    """Whether the ADBC SQLite driver is installed and this Python has ctypes, which the reader
    child calls it through (otherwise rhei_lake reads with sqlite3)."""
    return _driver_library() is not None and importlib.util.find_spec("_ctypes") is not None


_CHILD_SCRIPT = Path(__file__).with_name("reader_child.py")

# Rows per batch of a table read whole into a writer (a snapshot, a first sync), at most: the
# writer starts on the first batch as soon as SQLite has stepped through it, and after the
# last one only that batch is left to write. 1M narrow rows took ~10% less time than in
# batches of 50,000 (docs/performance.md), and no shape took more.
STREAM_BATCH_ROWS = 16_384


# Runs the child's script from its cached bytecode (``__pycache__``, written on first use where
# allowed): a script named on the command line is compiled at every start (~2.5 ms of its ~13).
# The importer's loader is built in (frozen), so this costs no import.
_RUN_SCRIPT = (
    "import sys, _frozen_importlib_external as b; p = sys.argv.pop(1); sys.argv[0] = p; "
    "exec(b.SourceFileLoader('__main__', p).get_code('__main__'), {'__name__': '__main__', '__file__': p})"
)


@functools.cache
def _child_command() -> list[str]:
    """How to start the child: a plain script (``-P``: no folder of it or of the working directory on
    ``sys.path``), not part of the package (importing rhei_lake would triple its start-up), without the
    site module (``-S``: it imports only the standard library), given the SQLite driver's shared library."""
    library = _driver_library()
    if library is None:
        raise SourceError("the ADBC SQLite driver is not installed (pip install adbc-driver-sqlite)")
    return [sys.executable, "-P", "-S", "-c", _RUN_SCRIPT, str(_CHILD_SCRIPT), library]


@functools.cache
def _driver_library() -> str | None:
    """The ADBC SQLite driver's shared library (the child calls its functions directly), found
    without importing the driver's package (it imports ADBC's driver manager, which nothing here
    uses), or ``None`` when the driver is not installed."""
    spec = importlib.util.find_spec("adbc_driver_sqlite")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        for name in ("libadbc_driver_sqlite.so", "libadbc_driver_sqlite.dylib"):
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    try:  # installed without the library beside it (a system package): it knows where it went
        import adbc_driver_sqlite

        return str(adbc_driver_sqlite._driver_path())
    except Exception:
        return None


def start_reader_child() -> subprocess.Popen[bytes]:
    """A reader child, started: it loads the SQLite driver, then waits for its first command.

    It ends when its stdin closes (its parent closed it, or died) or when killed.
    """
    try:
        proc = subprocess.Popen(
            _child_command(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        raise SourceError(f"could not start the SQLite reader process: {exc}") from exc
    assert proc.stdout is not None
    widen_pipe(proc.stdout.fileno())
    return proc


# The child's batches cross one pipe. Through Linux's default 64 KiB the two processes took turns
# every 64 KiB (1M narrow rows: ~550 wake-ups each way, and the child spent ~0.10 s blocked in
# writes); through 1 MiB, the most an unprivileged process may ask for by default, ~0.05 s.
PIPE_BYTES = 1 << 20


def widen_pipe(fd: int) -> None:
    """Give the pipe at ``fd`` :data:`PIPE_BYTES` of buffer where the system allows it (Linux);
    elsewhere, or past the system's limit, it keeps its size."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """Kill ``proc``, reap it and close the parent's ends of its pipes."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # a killed child: buffered bytes have nowhere to go
                pass


def open_command(path: str, *, readonly: bool) -> dict[str, Any]:
    """The command that opens ``path`` in a reader child (its first)."""
    return {"op": "open", "uri": sqlite_uri(path, readonly=readonly), "busy_timeout_ms": BUSY_TIMEOUT_MS}


def sqlite_uri(path: str, *, readonly: bool) -> bytes:
    """``path`` as a SQLite URI filename, escaped: a ``?``, ``#`` or ``%`` in it is part of the name
    (written into ``file:{path}?mode=ro`` as it was, they opened another file, read-write)."""
    if path in ("", ":memory:"):  # SQLite's names for a private temporary and an in-memory database
        return path.encode()
    quoted = urllib.parse.quote(os.fsencode(path))
    uri = ("file://" if quoted.startswith("/") else "file:") + quoted  # file:///abs: no authority
    return (uri + ("?mode=ro" if readonly else "")).encode()


def encoded(command: dict[str, Any]) -> bytes:
    """``command`` as the child reads it: its length (4 bytes, big-endian), then itself, marshalled."""
    data = marshal.dumps(command)
    return struct.pack(">I", len(data)) + data


def reader_error(path: str, payload: dict[str, Any]) -> SourceError:
    """The error the child reported, classified as the same SQLite error from a ``sqlite3`` connection is
    (a lock held past the busy timeout: transient; a table or column gone: SchemaError)."""
    return translate_sqlite_error(RuntimeError(f"{payload.get('message')} ({payload.get('type')})"), path)


_TYPES = {"n": pa.null(), "l": pa.int64(), "g": pa.float64(), "u": pa.string(), "z": pa.binary()}
_TYPES |= {"U": pa.large_string(), "Z": pa.large_binary()}
_BYTES = {pa.string(): pa.binary(), pa.binary(): pa.binary(), pa.large_string(): pa.large_binary()}
_BYTES[pa.large_binary()] = pa.large_binary()


def result_schema(header: dict[str, Any]) -> pa.Schema:
    """The schema of a query's result, from the child's column frame."""
    return pa.schema(
        pa.field(name, _TYPES[fmt], nullable)
        for name, fmt, nullable in zip(header["names"], header["formats"], header["nullable"], strict=True)
    )


def _padded(size: int, align: int) -> int:
    return -(-size // align) * align


def body_size(header: dict[str, Any]) -> int:
    """The bytes of a batch's buffers as the child sends them (each padded to ``header["align"]``)."""
    align = header["align"]
    if align < 64 or align % 64:  # Arrow's alignment, which Rust readers (delta-rs) rely on
        raise ValueError(f"buffers aligned to {align} bytes")
    sizes = [size for _, column in header["columns"] for size in column]
    if any(size < 0 for size in sizes):
        raise ValueError(f"a buffer of negative size in {header['columns']}")
    return sum(_padded(size, align) for size in sizes)


def received_batch(schema: pa.Schema, header: dict[str, Any], body: pa.Buffer) -> pa.RecordBatch:
    """A batch from its ``B`` frame and its buffers (slices of ``body``, not copies)."""
    rows, arrays, at = header["rows"], [], 0
    for field, (null_count, sizes) in zip(schema, header["columns"], strict=True):
        buffers: list[pa.Buffer | None] = []
        for size in sizes:
            buffers.append(body.slice(at, size) if size else None)
            at += _padded(size, header["align"])
        if pa.types.is_null(field.type):
            arrays.append(pa.nulls(rows))
            continue
        if buffers[1] is None:  # an empty column's values (or offsets): a buffer still
            buffers[1] = pa.py_buffer(b"")
        if len(buffers) == 3 and buffers[2] is None:
            buffers[2] = pa.py_buffer(b"")
        array = pa.Array.from_buffers(field.type, rows, buffers, null_count=null_count)
        if len(buffers) == 3:  # offsets in order and within the bytes (not the text's UTF-8: kept as stored)
            array.view(_BYTES[field.type]).validate(full=True)
        arrays.append(array)
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    batch.validate()
    return batch


class ReaderProcess:
    """A child process reading one SQLite database into Arrow with ADBC.

    Start it before taking any lock (it needs a fraction of a second to start),
    or hand it a child started earlier (``process``, see
    :mod:`rhei_lake.capture.spare_reader`); ``begin()`` + a first ``query()``
    pin a read snapshot for later queries.
    """

    def __init__(
        self,
        path: str,
        *,
        readonly: bool = False,
        process: subprocess.Popen[bytes] | None = None,
        opening: bool = False,
    ) -> None:
        """``opening``: ``process`` was already sent :func:`open_command` for ``path`` (a spare, see
        :mod:`rhei_lake.capture.spare_reader`); only its reply is awaited."""
        self.path = path
        self._lock = threading.Lock()
        self._in_transaction = False
        self.last_query_times: dict[str, float] = {}  # the child's seconds on its last finished query
        self._proc = process if process is not None else start_reader_child()
        try:
            if process is not None and opening:
                with self._lock:
                    self._frame_after(self._read_exact(1))
            else:
                self._call(open_command(path, readonly=readonly))
        except BaseException:
            stop_child(self._proc)  # a database it cannot open: no child left waiting for a parent
            raise

    def _send(self, command: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(encoded(command))
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SourceError(f"the SQLite reader process for {self.path} died ({exc})") from exc

    def _read_exact(self, size: int) -> bytes:
        assert self._proc.stdout is not None
        data = self._proc.stdout.read(size)
        if data is None or len(data) < size:
            code = self._proc.poll()
            raise SourceError(f"the SQLite reader process for {self.path} stopped (exit code {code})")
        return data

    def _frame_after(self, kind: bytes) -> dict[str, Any]:
        (length,) = struct.unpack(">I", self._read_exact(4))
        payload = marshal.loads(self._read_exact(length))
        if kind == b"E":
            raise reader_error(self.path, payload)
        return payload

    def _call(self, command: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._send(command)
            return self._frame_after(self._read_exact(1))

    def begin(self) -> None:
        """Start a read transaction: the next query pins the snapshot every later query sees."""
        self._call({"op": "begin"})
        self._in_transaction = True

    def rollback(self) -> None:
        """End the read transaction."""
        self._call({"op": "rollback"})
        self._in_transaction = False

    def query(self, sql: str, *, batch_rows: int = 65_536, prefetch: int = 0) -> pa.RecordBatchReader:
        """Run ``sql`` in the child; its rows stream back as Arrow record batches.

        With ``prefetch`` > 0 a thread reads up to that many batches ahead, so
        the child keeps reading while the consumer (say, a Delta writer) works.
        An error raised by the child mid-stream is raised at the end of the stream.
        """
        schema = self._start(sql, batch_rows)
        batches = self._prefetched(schema, prefetch) if prefetch > 0 else self._stream(schema)
        return pa.RecordBatchReader.from_batches(schema, batches)

    def batches(self, sql: str, *, batch_rows: int = 65_536) -> Generator[pa.RecordBatch, None, None]:
        """:meth:`query` as a generator: closing it mid-way (``close()``) stops the child's stream at once.

        A RecordBatchReader's own ``close()`` does not let go of the stream: one
        abandoned by an exception lives on with the exception's traceback,
        holding this reader until it is collected.
        """
        return self._stream(self._start(sql, batch_rows))

    def _start(self, sql: str, batch_rows: int) -> pa.Schema:
        """Send a query and read its columns; its stream holds the protocol (``_lock``) until it ends
        or is abandoned."""
        self._lock.acquire()
        try:
            self._send({"op": "query", "sql": sql, "batch_rows": batch_rows})
            kind = self._read_exact(1)
            if kind == b"S":
                return result_schema(self._frame_after(self._read_exact(1)))
            if kind in (b"E", b"K"):
                self._frame_after(kind)  # raises the child's error
            self.abort()  # the protocol is lost
            raise SourceError(f"{self.path}: unexpected reply {kind!r} from the reader process")
        except BaseException:
            self._lock.release()
            raise

    def _stream(self, schema: pa.Schema) -> Generator[pa.RecordBatch, None, None]:
        finished = False
        try:
            yield from self._read(schema)
            finished = True
            self._finished(self._frame_after(self._read_exact(1)))
        finally:
            if not finished:  # abandoned mid-stream: the pipe holds unread data, the protocol is lost
                self.abort()
            self._lock.release()

    def _prefetched(self, schema: pa.Schema, depth: int) -> Iterator[pa.RecordBatch]:
        def batches() -> Iterator[pa.RecordBatch]:
            yield from self._read(schema)
            self._finished(self._frame_after(self._read_exact(1)))

        # An error the child reported leaves the protocol intact; an abandoned stream does not.
        try:
            yield from prefetched(batches(), depth, name="rhei-reader-prefetch", abandon=self.abort)
        finally:
            self._lock.release()

    def abort(self) -> None:
        """Stop the child at once (a stream abandoned mid-way: the pipe holds unread data)."""
        self._proc.kill()

    def _read(self, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        """The batches of the child's stream, until its end marker; a stream cut short (the child
        died) is a SourceError."""
        while True:
            kind = self._read_exact(1)
            if kind == b".":
                return
            try:
                if kind != b"B":
                    raise ValueError(f"unexpected frame {kind!r}")
                header = self._frame_after(kind)
                batch = received_batch(schema, header, self._read_body(body_size(header)))
            except (ValueError, KeyError, TypeError, IndexError, pa.ArrowException) as exc:
                self.abort()  # whatever follows on the pipe cannot be read
                raise SourceError(
                    f"the SQLite reader process for {self.path} sent a batch that does not hold together ({exc})"
                ) from exc
            except BaseException:
                self.abort()
                raise
            yield batch

    def _read_body(self, size: int) -> pa.Buffer:
        """``size`` bytes of the pipe, into memory aligned as Arrow aligns its own."""
        stdout = self._proc.stdout
        assert isinstance(stdout, io.BufferedReader)
        body = pa.allocate_buffer(size)
        view, got = memoryview(body), 0
        while got < size:
            n = stdout.readinto(view[got:])
            if not n:
                code = self._proc.poll()
                raise SourceError(f"the SQLite reader process for {self.path} stopped mid-stream (exit code {code})")
            got += n
        return body

    def _finished(self, trailer: dict[str, Any]) -> None:
        self.last_query_times = {
            "SQLite read": float(trailer.get("read_seconds", 0.0)),
            "send": float(trailer.get("send_seconds", 0.0)),
        }

    def close(self) -> None:
        """End any read transaction, stop the child (politely if it is idle, else by killing it)
        and release its pipes."""
        if self._proc.poll() is None:
            try:
                if self._lock.locked():  # a stream holds the protocol (abandoned, not collected yet)
                    raise SourceError("busy")
                if self._in_transaction:
                    self.rollback()
                self._send({"op": "close"})
                self._proc.wait(timeout=5)
            except (SourceError, subprocess.TimeoutExpired):
                pass
        stop_child(self._proc)

    def __enter__(self) -> ReaderProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
