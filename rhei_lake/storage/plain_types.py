"""Parquet every reader can read: plain Arrow types in every data file of a lake's Delta tables.

rhei_lake writes every data file with the table's plain types: appends and
predicate overwrites through delta-rs, and merges through
:mod:`rhei_lake.storage.delta_rewrite` (delta-rs's own MERGE, DELETE and
UPDATE would write ``string_view`` / ``binary_view``, which Daft 0.7 and other
readers that trust the embedded Arrow schema refuse). This module finds files
that carry view types all the same: those an earlier rhei_lake wrote through
delta-rs's MERGE, or another writer's. ``optimize`` rewrites them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

PLAIN_TYPES_KEY = "rhei.plain_types"
"""Commit metadata of ``optimize``'s rewrite of view-typed files: how many it rewrote."""

_VIEW_TYPES = (pa.string_view(), pa.binary_view())


def has_view_types(schema: pa.Schema) -> bool:
    """Whether any field of ``schema`` (nested ones included) is a view type."""
    return any(_is_view(field.type) for field in schema)


def _is_view(data_type: pa.DataType) -> bool:
    if data_type in _VIEW_TYPES or pa.types.is_list_view(data_type) or pa.types.is_large_list_view(data_type):
        return True
    return any(_is_view(data_type.field(i).type) for i in range(data_type.num_fields))


SMALL_FILE_BYTES = 1024 * 1024
"""Files up to this size are fetched whole to read their schema (one request; the file handler makes two)."""

_SCAN_CONCURRENCY = 16


class ViewTypeScan:
    """Finds the data files of one Delta table whose embedded Arrow schema has view types.

    Files are immutable, so a file once seen to be plain is never read again,
    nor is one this process wrote itself with plain types (:meth:`known_plain`).
    """

    def __init__(self, filesystem: Callable[[], Any]) -> None:
        self._filesystem = filesystem
        self._plain: set[str] = set()

    def known_plain(self, paths: Iterable[str]) -> None:
        """Note files written with plain types: they are never read to find out."""
        self._plain.update(paths)

    def view_typed(
        self, files: Iterable[tuple[str, int]], *, fetch: Callable[[str], bytes | None] | None = None
    ) -> list[str]:
        """The paths of ``files`` (path relative to the table, size) whose embedded Arrow schema has view types.

        ``fetch`` (a path to the file's bytes in one request, ``None`` when missing)
        reads the small ones whole, where the file handler asks for the size first;
        the files are read concurrently.
        """
        import pyarrow.parquet as pq

        def schema_of(path: str, size: int) -> pa.Schema:
            if fetch is not None and size <= SMALL_FILE_BYTES and "%" not in path:
                data = fetch(path)
                if data is not None and len(data) == size:
                    return pq.read_schema(pa.BufferReader(data))
            with self._filesystem().open_input_file(path) as handle:
                return pq.read_schema(handle)

        unseen = [(path, size) for path, size in files if path not in self._plain]
        if len(unseen) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(len(unseen), _SCAN_CONCURRENCY)) as pool:
                schemas = list(pool.map(lambda file: schema_of(*file), unseen))
        else:
            schemas = [schema_of(*file) for file in unseen]
        found = []
        for (path, _), schema in zip(unseen, schemas, strict=True):
            if has_view_types(schema):
                found.append(path)
            else:
                self._plain.add(path)
        return found
