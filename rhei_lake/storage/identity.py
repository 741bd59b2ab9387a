"""A lake's identity: who it is, whatever URL it is reached by.

``_rhei/lake.json`` holds a random id, written once with put-if-absent, so two
processes creating a lake at once agree on one id and a lake keeps it when its
directory or bucket prefix moves. A database records the id of the lake it
feeds (see :mod:`rhei_lake.sync.binding`); a lake deleted and recreated at the
same URL is a different lake. ``memory://`` lakes live in one process, so their
identity does too: each process (each private ``memory://`` lake) gets a fresh one.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from rhei_lake.errors import CommitConflictError, CorruptStorageError
from rhei_lake.storage.lake_storage import INTERNAL_DIR, LakeStorage

IDENTITY_KEY = f"{INTERNAL_DIR}/lake.json"
IDENTITY_FORMAT = 1


@dataclass(frozen=True)
class LakeIdentity:
    """One lake: its id, the URL it was opened by (no secrets) and whether it is volatile (``memory://``)."""

    lake_id: str
    url: str
    volatile: bool


def lake_identity(storage: LakeStorage) -> LakeIdentity:
    """The identity of the lake at ``storage``, created on first use."""
    raw = storage.blobs.get(IDENTITY_KEY)
    if raw is None:
        created = json.dumps(
            {"format": IDENTITY_FORMAT, "lake_id": uuid.uuid4().hex, "created": datetime.now(UTC).isoformat()}
        ).encode()
        try:
            storage.blobs.put_if_absent(IDENTITY_KEY, created)
            raw = created
        except CommitConflictError:  # another process created it first: theirs is the lake's
            raw = storage.blobs.get(IDENTITY_KEY)
    return LakeIdentity(_parse(raw, storage), storage.location.url, not storage.durable)


def _parse(raw: bytes | None, storage: LakeStorage) -> str:
    where = f"{storage.location.url}/{IDENTITY_KEY}"
    try:
        lake_id = json.loads(raw)["lake_id"] if raw is not None else None
    except (ValueError, TypeError, KeyError):
        lake_id = None
    if not isinstance(lake_id, str) or not lake_id:
        raise CorruptStorageError(f"{where} is not a lake identity rhei_lake wrote; restore it from a backup")
    return lake_id
