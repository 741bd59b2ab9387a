"""The polling cursor: the ``(updated_at, primary key)`` of the last row committed.

It is stored beside the synced watermark in the same commit (see
:meth:`~rhei_lake.storage.changelog.Changelog.commit`), so a sidecar started
anywhere resumes from the lake alone. Values are kept exactly as the source
returned them (an ISO string stays a string, a PostgreSQL ``timestamptz`` a
datetime), because the next poll compares them in the source's own order.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

from rhei_lake.errors import CorruptStorageError, SchemaError

CURSOR_FORMAT = 1


def _tag(value: Any) -> list[Any]:
    if value is None:
        return ["null"]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", value.hex()]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ["bytes", base64.b64encode(bytes(value)).decode()]
    if isinstance(value, Decimal):
        return ["decimal", str(value)]
    if isinstance(value, datetime):
        return ["datetime", value.isoformat()]
    if isinstance(value, date):
        return ["date", value.isoformat()]
    if isinstance(value, time):
        return ["time", value.isoformat()]
    if isinstance(value, UUID):
        return ["uuid", str(value)]
    raise SchemaError(f"a polling cursor cannot hold a {type(value).__name__} value ({value!r})")


_UNTAG: dict[str, Callable[..., Any]] = {
    "null": lambda: None,
    "bool": bool,
    "int": int,
    "float": float.fromhex,
    "str": str,
    "bytes": lambda v: base64.b64decode(v),
    "decimal": Decimal,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "uuid": UUID,
}


def _untag(item: list[Any]) -> Any:
    kind = item[0]
    return _UNTAG[kind](*item[1:])


@dataclass(frozen=True)
class PollCursor:
    """Rows after ``(updated_at, key)`` in the source's order are not yet in the lake."""

    updated_at: Any
    key: tuple[Any, ...]

    def encode(self) -> str:
        return json.dumps(
            {"format": CURSOR_FORMAT, "updated_at": _tag(self.updated_at), "key": [_tag(v) for v in self.key]},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str | None, *, table: str) -> PollCursor | None:
        """The cursor committed for ``table`` (``None`` when nothing was polled yet)."""
        if text is None:
            return None
        try:
            raw = json.loads(text)
            if raw.get("format") != CURSOR_FORMAT:
                raise ValueError(f"unknown cursor format {raw.get('format')!r}")
            return cls(_untag(raw["updated_at"]), tuple(_untag(v) for v in raw["key"]))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise CorruptStorageError(f"table {table!r}: the stored polling cursor is unreadable ({exc})") from exc

    @property
    def params(self) -> tuple[Any, ...]:
        return (self.updated_at, *self.key)
