"""Before writing to an S3-compatible store: prove that it enforces put-if-absent.

Every guarantee about concurrent writers and retries rests on one primitive:
a create that the store refuses when the object exists (``If-None-Match: *``).
The writer lease, the hot-path segments and the Delta commits all use it. Some
S3-compatible servers and gateways accept the header and overwrite anyway; on
them two writers can both take the lease, and a retried write can land twice.

The probe creates ``_rhei/probe/put-if-absent`` and then creates it again: the
second create must be refused. Once the object exists (every open after the
first), the first create is already the refused one: one request per open,
two the first time. A store that accepts both is refused with
:class:`~rhei_lake.errors.StorageAccessError`, unless the configuration says
``conditional_writes = "single_writer"``.
"""

from __future__ import annotations

import uuid

from rhei_lake.errors import StorageAccessError
from rhei_lake.storage.s3_blobs import S3Blobs

PROBE_KEY = "_rhei/probe/put-if-absent"


def verify_conditional_writes(blobs: S3Blobs, *, endpoint: str | None) -> None:
    """Raise StorageAccessError unless the store behind ``blobs`` refuses a create on an existing object."""
    if not blobs.create(PROBE_KEY, _payload()):
        return  # the object exists and the create was refused: enforced
    if not blobs.create(PROBE_KEY, _payload()):
        return  # this open made it; the second create was refused
    store = f"{blobs.where} (endpoint {endpoint})" if endpoint else blobs.where
    raise StorageAccessError(
        f"{store}: the store accepted a create-if-absent (PUT with If-None-Match: *) of {PROBE_KEY}, which "
        "already existed, so it does not enforce conditional writes. rhei_lake's writer lease, hot-path "
        "segments and Delta commits rely on them: on this store two writers could both take the lease and "
        "overwrite each other's commits, and a retried write could land twice (no exactly-once). Use a store "
        "that enforces If-None-Match (AWS S3 and MinIO do), or, if exactly one process ever writes this lake "
        "(no concurrent compaction job either), set conditional_writes = 'single_writer'."
    )


def _payload() -> bytes:
    return uuid.uuid4().hex.encode()
