"""Keeping Delta tables cheap to read: expire old change rows, bin-pack, checkpoint, vacuum.

Each step is its own commit (or none), safe to repeat after a crash, and
retried when another writer (a sync flushing its tail, another compaction)
committed first. Only the steps go through the :class:`TableStore` contract, so
they behave the same on every tier.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from rhei_lake._shared.identifiers import quote_ident as q
from rhei_lake.catalog import SEQ, TS
from rhei_lake.errors import CommitConflictError
from rhei_lake.storage.base import MaintenanceResult, TableStore
from rhei_lake.timeutil import sql_timestamp, to_micros

log = logging.getLogger("rhei_lake.compaction")

_CONFLICT_RETRIES = 8
T = TypeVar("T")


def retrying(store: TableStore, what: str, step: Callable[[], T]) -> T:
    """Run ``step``; when another writer committed first, reload ``store`` and run it again."""
    for attempt in range(_CONFLICT_RETRIES + 1):
        try:
            return step()
        except CommitConflictError:
            if attempt == _CONFLICT_RETRIES:
                raise
            log.info("%s on %s conflicted with another writer; retrying", what, store.uri)
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
            store.refresh()
    raise AssertionError("unreachable")


def expiry_predicate(folded: int, retention: timedelta, now_micros: int) -> str:
    """Change rows that are folded and older than ``retention``."""
    cutoff = now_micros - int(retention.total_seconds() * 1_000_000)
    return f"{q(SEQ)} <= {int(folded)} AND {q(TS)} < {sql_timestamp(cutoff)}"


def expire_changes(
    changes: TableStore, *, folded: int, retention: timedelta, now_micros: int, dry_run: bool = False
) -> int:
    """Delete (or, in a dry run, count) folded change rows older than ``retention``."""
    if folded <= 0:
        return 0
    cutoff = now_micros - int(retention.total_seconds() * 1_000_000)
    oldest = changes.min_value(TS)  # from the log's file statistics: no data read
    if oldest is not None and to_micros(oldest) >= cutoff:
        return 0  # no row old enough: the scan that would find none reads every file (a request each on S3)
    predicate = expiry_predicate(folded, retention, now_micros)
    if dry_run:
        return changes.to_arrow(filter=predicate, columns=[SEQ]).num_rows
    return retrying(changes, "expiring change rows", lambda: changes.delete(predicate))


def optimize(store: TableStore, *, target_size: int) -> MaintenanceResult:
    """Bin-pack ``store``'s small files towards ``target_size`` bytes."""
    return retrying(store, "bin-packing", lambda: store.optimize(target_size=target_size))


def checkpoint(store: TableStore) -> None:
    retrying(store, "checkpointing", store.checkpoint)


def vacuum(store: TableStore, *, retention: timedelta, dry_run: bool = False) -> MaintenanceResult:
    """Delete (or list) files no snapshot younger than ``retention`` needs."""
    return retrying(store, "vacuuming", lambda: store.vacuum(retention=retention, dry_run=dry_run))
