"""Blob stores: the few object operations rhei_lake needs beside Delta.

Hot-path changelog segments, leases and catalog listing use a :class:`BlobStore`.
Its contract, the same for every tier (tested by one suite):

* ``put_if_absent(key, data)`` creates ``key`` atomically, or raises
  :class:`~rhei_lake.errors.CommitConflictError` if it exists with other
  content. A reader never sees a partial object. It returns only once the
  object is durable on that tier. If ``key`` already holds exactly ``data``
  it succeeds: that is our own write, retried after its reply was lost (a
  timeout on S3 after the server stored the object), and reporting a conflict
  would make the caller treat its own commit as someone else's.
* ``get(key)`` returns the bytes, or ``None`` if there is no such key;
  ``exists(key)`` says whether there is one without fetching it (one stat, one request).
* ``list(prefix)`` returns every key below ``prefix`` (sorted), ``list_dirs(prefix)``
  the immediate sub-directories.
* ``delete(keys)`` removes keys; missing keys are not an error.
* Transient faults raise :class:`~rhei_lake.errors.StorageUnavailableError`.
"""

from __future__ import annotations

import builtins
import errno
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from rhei_lake import faults
from rhei_lake.errors import CommitConflictError, StorageUnavailableError, raise_storage


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int


class BlobStore(Protocol):
    """Atomic create, get, list, delete of small objects below one root."""

    def put_if_absent(self, key: str, data: bytes) -> None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[BlobInfo]: ...

    def list_dirs(self, prefix: str) -> builtins.list[str]: ...

    def delete(self, keys: Iterable[str]) -> None: ...


class MemoryBlobs:
    """Blobs in a dict: volatile, process-local."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put_if_absent(self, key: str, data: bytes) -> None:
        with self._lock:
            if key in self._data and self._data[key] != data:
                raise CommitConflictError(f"memory blob {key!r} already exists")
            self._data[key] = bytes(data)

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._data[key] = bytes(data)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def list(self, prefix: str) -> list[BlobInfo]:
        with self._lock:
            return [BlobInfo(k, len(v)) for k, v in sorted(self._data.items()) if k.startswith(prefix)]

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        with self._lock:
            dirs = {
                k[len(prefix) :].split("/", 1)[0]
                for k in self._data
                if k.startswith(prefix) and "/" in k[len(prefix) :]
            }
        return sorted(dirs)

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)


class LocalBlobs:
    """Blobs as files below a local directory.

    ``put_if_absent`` writes a temporary file, fsyncs it, hard-links it to its
    name (which fails if the name exists: the atomic create) and fsyncs the
    directory, so a created blob survives a crash of the process or the machine.
    """

    def __init__(self, root: str, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._made: set[str] = set()

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return os.path.join(self.root, *key.split("/"))

    def _ensure_dir(self, directory: str) -> None:
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)

    def _fsync_dir(self, directory: str) -> None:
        if not self.fsync:
            return
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_temp(self, directory: str, data: bytes) -> str:
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        return tmp

    def put_if_absent(self, key: str, data: bytes) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        try:
            self._ensure_dir(directory)
            tmp = self._write_temp(directory, data)
            try:
                faults.point("blob.after_data_before_commit")
                os.link(tmp, path)
            except FileExistsError:
                if not _holds(path, data):
                    raise CommitConflictError(f"{path} already exists: another writer committed first") from None
            finally:
                _unlink_quietly(tmp)
            self._fsync_dir(directory)
        except CommitConflictError:
            raise
        except OSError as exc:
            _raise_os(exc, path)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        try:
            self._ensure_dir(directory)
            tmp = self._write_temp(directory, data)
            os.replace(tmp, path)
            self._fsync_dir(directory)
        except OSError as exc:
            _raise_os(exc, path)

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            _raise_os(exc, path)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def list(self, prefix: str) -> list[BlobInfo]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        out: list[BlobInfo] = []
        try:
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if name.startswith(".tmp-"):
                        continue
                    full = os.path.join(dirpath, name)
                    rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                    try:
                        out.append(BlobInfo(rel, os.path.getsize(full)))
                    except FileNotFoundError:
                        continue
        except OSError as exc:
            _raise_os(exc, base)
        return sorted(out, key=lambda b: b.key)

    def list_dirs(self, prefix: str) -> builtins.list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        try:
            return sorted(e.name for e in os.scandir(base) if e.is_dir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            _raise_os(exc, base)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            _unlink_quietly(self._path(key))


def _holds(path: str, data: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``data`` (our own earlier write of it)."""
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as fh:
            return fh.read() == data
    except FileNotFoundError:
        return False


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _raise_os(exc: OSError, path: str) -> NoReturn:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN):
        raise StorageUnavailableError(f"{path}: {exc.strerror or exc}") from exc
    raise_storage(exc, where=path)
