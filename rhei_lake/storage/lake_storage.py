"""A lake's root on one tier, and the one place where a URL scheme picks a backend.

On-store layout (part of the public contract, see docs/storage.md, "On-store layout")::

    <storage>/<table>/changes   Delta: the change feed
    <storage>/<table>/history   Delta: SCD2 versions (temporal mode)
    <storage>/<table>/current   Delta: current rows (mirror mode)
    <storage>/<table>/_tail/    Arrow IPC segments committed but not yet flushed into changes
    <storage>/_rhei/            leases and other coordination objects

Table names are used as directory names; characters outside ``[A-Za-z0-9_.-]``
are written as ``~HH`` (their UTF-8 bytes in hex).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from rhei_lake.errors import ConfigError
from rhei_lake.storage.base import TableStore
from rhei_lake.storage.blobs import BlobStore, LocalBlobs, MemoryBlobs
from rhei_lake.storage.changelog import DISCARD_GRACE_SECONDS, Changelog
from rhei_lake.storage.location import StorageLocation
from rhei_lake.storage.tail import SegmentTail

TableKind = Literal["changes", "history", "current"]
TABLE_KINDS: tuple[TableKind, ...] = ("changes", "history", "current")
TAIL_DIR = "_tail"
INTERNAL_DIR = "_rhei"

_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def encode_table_dir(name: str) -> str:
    """The directory name of table ``name`` (reversible, portable across tiers)."""
    out = []
    for i, ch in enumerate(name):
        if ch in _SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"~{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def decode_table_dir(directory: str) -> str | None:
    """Inverse of :func:`encode_table_dir`; ``None`` if ``directory`` is not such a name."""
    raw = bytearray()
    i = 0
    try:
        while i < len(directory):
            ch = directory[i]
            if ch == "~":
                raw.append(int(directory[i + 1 : i + 3], 16))
                i += 3
            elif ch in _SAFE:
                raw.extend(ch.encode())
                i += 1
            else:
                return None
        return raw.decode("utf-8")
    except (ValueError, UnicodeDecodeError, IndexError):
        return None


@dataclass(frozen=True)
class BlobDeltaLog:
    """:class:`~rhei_lake.storage.delta.DeltaLog` through the lake's blob store."""

    blobs: BlobStore
    prefix: str  # "<table dir>/<kind>/_delta_log/"

    def read(self, name: str) -> bytes | None:
        return self.blobs.get(self.prefix + name)

    def empty(self) -> bool:
        return not self.blobs.list(self.prefix)

    def delete_files(self, paths: list[str]) -> None:
        self.blobs.delete(self._root + path for path in paths)

    def read_data(self, path: str) -> bytes | None:
        return self.blobs.get(self._root + path)

    @property
    def _root(self) -> str:
        return self.prefix.removesuffix("_delta_log/")


class LakeStorage:
    """The root of one lake: hands out table stores, tails and changelogs."""

    def __init__(
        self,
        location: StorageLocation,
        blobs: BlobStore,
        store_factory: Callable[[str, str], TableStore],
        *,
        has_tail: bool,
        table_lister: Callable[[], list[str]] | None = None,
    ) -> None:
        self.location = location
        self.blobs = blobs
        self._store_factory = store_factory
        self._has_tail = has_tail
        self._table_lister = table_lister
        self._stores: dict[tuple[str, str], TableStore] = {}
        self._lock = threading.Lock()

    @property
    def durable(self) -> bool:
        return self.location.scheme != "memory"

    def table_store(self, table: str, kind: TableKind) -> TableStore:
        """The (cached) store of one of ``table``'s Delta tables."""
        key = (table, kind)
        with self._lock:
            store = self._stores.get(key)
            if store is None:
                directory = encode_table_dir(table)
                store = self._stores[key] = self._store_factory(
                    self.location.table_uri(directory, kind), f"{directory}/{kind}/"
                )
            return store

    def forget(self, table: str) -> None:
        """Drop cached stores of ``table`` (after it is removed or recreated)."""
        with self._lock:
            for kind in TABLE_KINDS:
                self._stores.pop((table, kind), None)

    def tail(self, table: str) -> SegmentTail | None:
        if not self._has_tail:
            return None
        return SegmentTail(self.blobs, f"{encode_table_dir(table)}/{TAIL_DIR}")

    def changelog(
        self,
        table: str,
        *,
        flush_segments: int,
        flush_rows: int,
        flush_interval: float | None = None,
        discard_grace: float = DISCARD_GRACE_SECONDS,
    ) -> Changelog:
        return Changelog(
            self.table_store(table, "changes"),
            self.tail(table),
            flush_segments=flush_segments,
            flush_rows=flush_rows,
            flush_interval=flush_interval,
            discard_grace=discard_grace,
        )

    def list_tables(self, *, known: Collection[str] = ()) -> list[str]:
        """Names of the tables that have a change feed in this lake.

        Tables in ``known`` are taken to be there still (tables are never
        removed), so only new directories cost a look each.
        """
        if self._table_lister is not None:
            return self._table_lister()
        names = []
        for directory in self.blobs.list_dirs(""):
            name = decode_table_dir(directory)
            if name is None or directory == INTERNAL_DIR:
                continue
            if name in known or self.blobs.list(f"{directory}/changes/_delta_log/"):
                names.append(name)
        return sorted(names)


def _memory_storage(location: StorageLocation) -> LakeStorage:
    from rhei_lake.storage.memory import MemoryLakeRegistry

    blobs = _memory_blobs(location.root)
    prefix = f"memory://{location.root}/"

    def lister() -> list[str]:
        names = set()
        for uri, store in list(MemoryLakeRegistry._stores.items()):
            if uri.startswith(prefix) and uri.endswith("/changes") and store.exists():
                name = decode_table_dir(uri[len(prefix) : -len("/changes")])
                if name is not None:
                    names.add(name)
        return sorted(names)

    def factory(uri: str, _blob_dir: str) -> TableStore:
        return MemoryLakeRegistry.store(uri)

    return LakeStorage(location, blobs, factory, has_tail=False, table_lister=lister)


_memory_blob_lock = threading.Lock()
_memory_blob_stores: dict[str, MemoryBlobs] = {}


def _memory_blobs(root: str) -> MemoryBlobs:
    with _memory_blob_lock:
        blobs = _memory_blob_stores.get(root)
        if blobs is None:
            blobs = _memory_blob_stores[root] = MemoryBlobs()
        return blobs


def _local_storage(location: StorageLocation) -> LakeStorage:
    from rhei_lake.storage.delta import DeltaTableStore

    blobs = LocalBlobs(location.root)

    def factory(uri: str, blob_dir: str) -> TableStore:
        return DeltaTableStore(uri, location.options, remote=False, log=BlobDeltaLog(blobs, f"{blob_dir}_delta_log/"))

    return LakeStorage(location, blobs, factory, has_tail=True)


def _s3_storage(location: StorageLocation) -> LakeStorage:
    from rhei_lake.storage.delta import DeltaTableStore
    from rhei_lake.storage.s3_blobs import S3Blobs

    blobs = S3Blobs(location.bucket, location.prefix, location.options)

    def factory(uri: str, blob_dir: str) -> TableStore:
        return DeltaTableStore(uri, location.options, remote=True, log=BlobDeltaLog(blobs, f"{blob_dir}_delta_log/"))

    return LakeStorage(location, blobs, factory, has_tail=True)


_BACKENDS: dict[str, Callable[[StorageLocation], LakeStorage]] = {
    "memory": _memory_storage,
    "file": _local_storage,
    "s3": _s3_storage,
}


def open_storage(location: StorageLocation) -> LakeStorage:
    """The :class:`LakeStorage` for ``location``, by its scheme."""
    try:
        factory = _BACKENDS[location.scheme]
    except KeyError:
        raise ConfigError(f"storage: no backend for scheme {location.scheme!r}") from None
    return factory(location)
