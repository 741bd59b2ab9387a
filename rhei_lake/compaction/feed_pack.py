"""Packing the change feed's small files before the fold, each read once, and folding from the rows read.

Between two compactions a table's change feed gains one small file per flush,
all of them past the folded watermark. The fold reads them, and the bin-pack
after it read them again (on S3, five requests or so per file and run). When
every file holding unfolded events is small (and with the feed's other small
files, up to :data:`PACK_MAX_BYTES`), one conditional commit swaps the small
files for one file of the same rows, each read once, and the fold takes its
events from those rows in memory: the feed's bin-pack then finds one small
file and reads nothing.

The commit changes no rows (``dataChange`` false) and is made on the snapshot
the files were planned on, with no retries: if anyone committed since (a
flush, another compaction), it fails and this run folds from the store as
before. The rows are used only while the feed is still at the version the
pack committed; once it moved, the fold reads the store again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake.catalog import SEQ
from rhei_lake.errors import CommitConflictError
from rhei_lake.storage.changelog import Changelog

log = logging.getLogger("rhei_lake.compaction")

PACK_MAX_BYTES = 64 * 1024 * 1024
"""Small files (compressed bytes) packed before the fold at most: their rows are held in memory for it."""


@dataclass(frozen=True)
class PackedFeed:
    """The change feed at ``version``: ``rows`` is every event it holds past ``above`` (its other files hold none)."""

    version: int
    above: int
    rows: pa.Table

    def unfolded(self, changelog: Changelog, after: int, limit: int | None) -> pa.Table | None:
        """The events :func:`~rhei_lake.compaction.fold.read_unfolded` would read now, from memory.

        The rows held plus the changelog's tail, as :meth:`Changelog.register`
        joins them, in the store's schema; ``None`` when the feed is no longer
        at ``version`` (then only the store knows its events).
        """
        if after < self.above:
            return None
        key = changelog.feed_key()
        if key[0] != self.version:
            return None
        tail = changelog.tail_table(self.rows.schema)
        if changelog.feed_key()[:2] != key[:2]:  # a flush committed meanwhile: the tail may have lost events
            return None
        events = pa.concat_tables([_after(self.rows, after), _after(tail, after)])
        return events if limit is None else events.slice(0, limit)


def pack_feed(
    changelog: Changelog, *, folded: int, target_size: int, before_commit: Callable[[], None]
) -> PackedFeed | None:
    """Pack the feed's small files if every event past ``folded`` is in them (see the module docstring).

    ``None`` when they do not qualify or the commit lost to another writer.
    """
    try:
        packed = changelog.store.pack_small_files(
            target_size=target_size, order_by=SEQ, above=folded, max_bytes=PACK_MAX_BYTES, before_commit=before_commit
        )
    except CommitConflictError:
        log.info(
            "%s: packing the change feed conflicted with another writer; folding from the store", changelog.store.uri
        )
        return None
    if packed is None:
        return None
    log.info(
        "%s: packed %d unfolded events of the change feed before the fold", changelog.store.uri, packed.rows.num_rows
    )
    return PackedFeed(packed.version, folded, packed.rows)


def _after(events: pa.Table, seq: int) -> pa.Table:
    if events.num_rows == 0:
        return events
    return events.filter(pc.greater(events.column(SEQ), seq))
