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


class ViewTypeScan:
    """Finds the data files of one Delta table whose embedded Arrow schema has view types.

    Files are immutable, so a file once seen to be plain is never read again.
    """

    def __init__(self, filesystem: Callable[[], Any]) -> None:
        self._filesystem = filesystem
        self._plain: set[str] = set()

    def view_typed(self, paths: Iterable[str]) -> list[str]:
        """Those of ``paths`` (relative to the table) whose embedded Arrow schema has view types."""
        import pyarrow.parquet as pq

        found = []
        for path in paths:
            if path in self._plain:
                continue
            with self._filesystem().open_input_file(path) as handle:
                schema = pq.read_schema(handle)
            if has_view_types(schema):
                found.append(path)
            else:
                self._plain.add(path)
        return found
