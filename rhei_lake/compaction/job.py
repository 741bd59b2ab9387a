"""A compaction run over a lake's tables: flush, fold, expire, bin-pack, checkpoint, vacuum.

Works the same inside an HTAP process (on the live changelogs its sync writes)
and as a batch job that has only the storage URL (on changelogs it loads
itself): every step is a commit that is safe against a concurrent sync and
another compaction, and safe to repeat after a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from rhei_lake import faults
from rhei_lake.catalog import TableSpec
from rhei_lake.compaction import maintenance
from rhei_lake.compaction.derived import DerivedTable
from rhei_lake.compaction.feed_pack import pack_feed
from rhei_lake.compaction.fold import FOLD_BATCH_EVENTS, FoldResult, fold, plan_fold
from rhei_lake.compaction.report import CompactionReport, TableCompactionReport
from rhei_lake.compaction.table_lock import compaction_lock
from rhei_lake.config import LakeConfig
from rhei_lake.errors import SchemaError
from rhei_lake.storage.base import TableStore
from rhei_lake.storage.blobs import BlobStore
from rhei_lake.storage.changelog import Changelog
from rhei_lake.timeutil import Duration, now_micros, parse_duration

log = logging.getLogger("rhei_lake.compaction")
T = TypeVar("T")

STEPS = ("flush", "fold", "expire", "optimize", "checkpoint", "vacuum")
"""The steps of compacting one table, in order (a dry run only plans fold, expire and vacuum)."""

CompactionProgress = Callable[[str, str, int, int], None]
"""Called as ``progress(table, step, done, total)`` when a step starts (``0, 0``) and as a fold advances
(events done of events pending)."""


@dataclass(frozen=True)
class CompactionOptions:
    """How to compact: retentions, target file size, and whether to only report."""

    vacuum_retention: timedelta
    changelog_retention: timedelta | None
    target_file_size: int
    dry_run: bool = False
    fold_batch_events: int = FOLD_BATCH_EVENTS

    @classmethod
    def from_config(
        cls, config: LakeConfig, *, vacuum_retention: Duration | None = None, dry_run: bool = False
    ) -> CompactionOptions:
        """The lake's settings, with ``vacuum_retention`` overriding the configured one."""
        retention = (
            config.vacuum_retention
            if vacuum_retention is None
            else parse_duration(vacuum_retention, what="vacuum_retention")
        )
        return cls(retention, config.changelog_retention, config.target_file_size, dry_run)


@dataclass(frozen=True)
class CompactionTarget:
    """One table to compact: its spec, its change feed, and the table folded from it."""

    spec: TableSpec
    changelog: Changelog
    derived: DerivedTable


def select_targets(targets: Mapping[str, T], tables: Iterable[str] | None) -> list[T]:
    """The targets named in ``tables`` (case-insensitively), or all of them."""
    if tables is None:
        return [targets[name] for name in sorted(targets)]
    chosen = []
    for wanted in tables:
        match = targets.get(wanted) or next((t for n, t in targets.items() if n.lower() == wanted.lower()), None)
        if match is None:
            raise SchemaError(f"no mirrored table {wanted!r}; known: {sorted(targets) or 'none'}")
        if match not in chosen:
            chosen.append(match)
    return chosen


def compact(
    targets: list[CompactionTarget],
    options: CompactionOptions,
    *,
    reload: bool,
    blobs: BlobStore | None = None,
    progress: CompactionProgress | None = None,
) -> CompactionReport:
    """Compact each target in turn; ``reload`` re-reads changelogs first (a process that does not sync).

    With ``blobs`` (the lake's), each table is compacted under its compaction
    lease (:mod:`~rhei_lake.compaction.table_lock`): one compaction per table at
    a time across processes. A dry run takes none.
    """
    started = time.perf_counter()
    reports = {}
    for target in targets:
        if blobs is None or options.dry_run:
            reports[target.spec.name] = compact_table(target, options, reload=reload, progress=progress)
            continue
        with compaction_lock(blobs, target.spec.name) as held:
            # Start from what another compaction committed while this one waited: a
            # rewrite planned on an older snapshot would remove files already removed.
            target.derived.load()
            target.changelog.poll()
            reports[target.spec.name] = compact_table(
                target, options, reload=reload, progress=progress, still_held=held.check
            )
    return CompactionReport(reports, time.perf_counter() - started, options.dry_run)


def compact_table(
    target: CompactionTarget,
    options: CompactionOptions,
    *,
    reload: bool,
    progress: CompactionProgress | None = None,
    still_held: Callable[[], None] | None = None,
) -> TableCompactionReport:
    """Compact one table; see the module docstring for the steps.

    ``still_held`` raises if the table's compaction lease was lost; it runs
    before every bin-pack, the one rewrite delta-rs would let two compactions
    commit over each other (the others are conditional commits).
    """
    started = time.perf_counter()
    spec, changelog, derived = target.spec, target.changelog, target.derived
    dry = options.dry_run

    def step(name: str, done: int = 0, total: int = 0) -> None:
        if progress is not None:
            progress(spec.name, name, done, total)

    if reload:
        derived.load()
        changelog.load()
    files_before = _file_counts(changelog, derived)
    versions_before = {kind: store.version() for kind, store in _stores(changelog, derived).items()}

    step("flush")
    flushed = 0
    if not dry:
        # Only the process that syncs folds its tail into the change feed: a compaction
        # job beside it would append the same events concurrently, and delta-rs on S3 was
        # seen to let two such appends both commit. The fold reads the tail as it is.
        if not reload:
            flushed = changelog.flush()
        changelog.discard_flushed_segments()

    # The feed's small files (one per flush since the last run) are packed first, each
    # read once, and the fold takes its events from the rows read: the fold and the
    # bin-pack after it would otherwise both read them (feed_pack). An earlier try packed
    # with delta-rs's optimize, whose commit rebases, and once saw versions folded twice
    # in test_concurrency.py; this commit is conditional on the snapshot read.
    packed = None
    if not dry:
        if still_held is not None:
            still_held()
        packed = pack_feed(
            changelog,
            folded=derived.folded,
            target_size=options.target_file_size,
            before_commit=lambda: _before_pack_commit(still_held),
        )
    step("fold")
    if dry:
        folded = plan_fold(changelog, derived)
    else:
        folded = fold(
            changelog,
            derived,
            batch_events=options.fold_batch_events,
            # Only when asked: counting the pending events reads the whole unfolded feed once more.
            progress=None if progress is None else lambda done, total: step("fold", done, total),
            packed=packed,
        )
        packed = None  # its rows are not needed past the fold

    if not dry:
        faults.point("compact.after_fold")
    step("expire")
    expired = 0
    if options.changelog_retention is not None:
        expired = maintenance.expire_changes(
            changelog.store,
            folded=derived.folded,
            retention=options.changelog_retention,
            now_micros=now_micros(),
            dry_run=dry,
        )

    stores = _stores(changelog, derived)
    if not dry:
        step("optimize")
        for store in stores.values():
            if still_held is not None:
                still_held()
            maintenance.optimize(store, target_size=options.target_file_size)
        step("checkpoint")
        for kind, store in stores.items():
            # A table this run did not change has had its checkpoint written by the
            # run that last changed it (or has too few commits to need one).
            if store.version() != versions_before.get(kind):
                maintenance.checkpoint(store)

    if not dry:
        faults.point("compact.before_vacuum")
    step("vacuum")
    vacuumed = [maintenance.vacuum(s, retention=options.vacuum_retention, dry_run=dry) for s in stores.values()]
    files_after = files_before if dry else _file_counts(changelog, derived)
    report = _report(spec, derived, flushed, folded, expired, files_before, files_after, vacuumed, started)
    log.info("%s", report)
    return report


def _before_pack_commit(still_held: Callable[[], None] | None) -> None:
    faults.point("compact.feed_packed")
    if still_held is not None:
        still_held()


def _stores(changelog: Changelog, derived: DerivedTable) -> dict[str, TableStore]:
    stores = {"changes": changelog.store}
    if derived.exists():
        stores[derived.kind] = derived.store
    return stores


def _file_counts(changelog: Changelog, derived: DerivedTable) -> dict[str, int]:
    return {kind: store.stats().files for kind, store in _stores(changelog, derived).items()}


def _report(
    spec: TableSpec,
    derived: DerivedTable,
    flushed: int,
    folded: FoldResult,
    expired: int,
    before: dict[str, int],
    after: dict[str, int],
    vacuumed: list,
    started: float,
) -> TableCompactionReport:
    return TableCompactionReport(
        table=spec.name,
        mode=derived.mode,
        events_flushed=flushed,
        events_folded=folded.events,
        versions_written=folded.versions_written,
        versions_closed=folded.versions_closed,
        changes_expired=expired,
        folded_watermark=folded.watermark,
        files={kind: (before.get(kind, 0), after.get(kind, 0)) for kind in after},
        files_vacuumed=sum(v.files_removed for v in vacuumed),
        bytes_removed=sum(v.bytes_removed for v in vacuumed),
        duration_seconds=time.perf_counter() - started,
    )
