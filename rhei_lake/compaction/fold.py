"""The fold: move change events past the folded watermark into the derived table, exactly once.

Temporal mode, per batch of events (in ``_rhei_seq`` order) after the folded
watermark ``F``:

* each key's first event closes that key's open version in ``history``
  (``_rhei_valid_to`` = the event's ``_rhei_ts``);
* each ``I``/``U`` event inserts a version, closed by the key's next event in
  the batch or left open; a ``D`` inserts none;
* both happen in **one** Delta commit (a MERGE) that also records the batch's
  last ``_rhei_seq`` as the new ``F`` (app transaction ``rhei.folded``, expected
  to still be the ``F`` the batch was read after). A crash before the commit
  leaves ``F`` where it was and the batch is folded again; a crash after it
  finds ``F`` moved: no version is lost or written twice.

Mirror mode merges each key's last event into ``current`` the same way:
upsert, or delete for a ``D``.

Validity times are the events' source timestamps, never the time of the fold.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from rhei_lake import faults
from rhei_lake._shared.identifiers import quote_ident as q
from rhei_lake.catalog import OP, OP_DELETE, SEQ, VALID_TO, TableSpec
from rhei_lake.compaction.derived import FOLDED_APP_ID, DerivedTable, current_schema
from rhei_lake.compaction.feed_pack import PackedFeed
from rhei_lake.compaction.versions import (
    CLOSED_AT,
    first_events_sql,
    key_match,
    latest_events_sql,
    versions_sql,
)
from rhei_lake.errors import CommitConflictError, raise_storage
from rhei_lake.storage.base import AppTransaction, Merge
from rhei_lake.storage.changelog import Changelog, conform

log = logging.getLogger("rhei_lake.compaction")

FOLD_BATCH_EVENTS = 500_000
"""Events folded per commit: bounds the memory a fold needs."""

KIND = "_rhei_fold_kind"  # in the merge source only: 'C' closes an open version, 'V' is a new version
_CONFLICT_RETRIES = 8

FoldProgress = Callable[[int, int], None]
"""Called as ``progress(events_done, events_total)`` while a fold runs."""


@dataclass(frozen=True)
class FoldResult:
    """What a fold did (or, for a dry run, would do)."""

    events: int = 0
    versions_written: int = 0
    versions_closed: int = 0
    watermark: int = 0


def _session(tables: dict[str, pa.Table]):
    from datafusion import SessionContext

    ctx = SessionContext()
    for name, table in tables.items():
        ctx.register_record_batches(name, [table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]])
    return ctx


def _run(ctx, sql: str, where: str) -> pa.Table:
    try:
        return ctx.sql(sql).to_arrow_table()
    except Exception as exc:  # the store (transient or not) or its files
        raise_storage(exc, where=f"{where}: folding")


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s columns in ``schema``'s order and types (DataFusion may return view types)."""
    return (
        pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)
        if table.num_rows
        else schema.empty_table()
    )


def read_unfolded(changelog: Changelog, spec: TableSpec, after: int, limit: int | None = None) -> pa.Table:
    """Committed events with ``_rhei_seq > after`` (table and tail), in order, at most ``limit``."""
    from datafusion import SessionContext

    ctx = SessionContext()
    changelog.register(ctx, "__rhei_changes")
    sql = f"SELECT * FROM __rhei_changes WHERE {q(SEQ)} > {int(after)} ORDER BY {q(SEQ)}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return _conform(_run(ctx, sql, changelog.store.uri), spec.changes_schema)


def count_unfolded(changelog: Changelog, after: int) -> int:
    from datafusion import SessionContext

    ctx = SessionContext()
    changelog.register(ctx, "__rhei_changes")
    result = _run(ctx, f"SELECT count(*) AS n FROM __rhei_changes WHERE {q(SEQ)} > {int(after)}", changelog.store.uri)
    return int(result.column(0)[0].as_py())


# -- temporal -------------------------------------------------------------
def history_merge_source(spec: TableSpec, events: pa.Table) -> tuple[pa.Table, int, int]:
    """The MERGE source for one batch: close rows and new versions; also (#versions, #closed in batch)."""
    ctx = _session({"e": events})
    versions = _conform(_run(ctx, versions_sql(spec, '"e"'), spec.name), spec.history_schema)
    closes = _run(ctx, first_events_sql(spec, '"e"'), spec.name)
    fields = [f.with_nullable(True) for f in spec.history_schema] + [pa.field(KIND, pa.string())]
    schema = pa.schema(fields)
    new_rows = versions.append_column(KIND, pa.array(["V"] * versions.num_rows, pa.string()))
    close_cols = []
    for field in spec.history_schema:
        if field.name in spec.primary_key:
            close_cols.append(closes.column(field.name).cast(field.type))
        elif field.name == VALID_TO:
            close_cols.append(closes.column(CLOSED_AT).cast(field.type))
        else:
            close_cols.append(pa.nulls(closes.num_rows, field.type))
    close_cols.append(pa.array(["C"] * closes.num_rows, pa.string()))
    close_rows = pa.Table.from_arrays(close_cols, schema=schema)
    closed_in_batch = versions.num_rows - versions.column(VALID_TO).null_count
    return pa.concat_tables([close_rows, new_rows.cast(schema)]), versions.num_rows, closed_in_batch


def history_merge(spec: TableSpec) -> Merge:
    keys = key_match(spec, "t", "s")
    return Merge(
        on=f"{keys} AND t.{q(VALID_TO)} IS NULL AND s.{q(KIND)} = 'C'",
        update={VALID_TO: f"s.{q(VALID_TO)}"},
        insert={name: f"s.{q(name)}" for name in spec.history_schema.names},
        insert_when=f"s.{q(KIND)} = 'V'",
    )


def _fold_history_batch(derived: DerivedTable, events: pa.Table, txn: AppTransaction) -> FoldResult:
    spec = derived.spec
    source, written, closed_in_batch = history_merge_source(spec, events)
    store = derived.store
    if store.stats().rows == 0:
        # Nothing to close yet (the first fold): a plain append is far cheaper than a MERGE.
        versions = source.filter(pc.equal(source.column(KIND), "V")).drop([KIND])
        store.append(conform(_conform(versions, spec.history_schema), store.schema(), store.uri), txn=txn)
        closed = 0
    else:
        closed = store.merge(source, history_merge(spec), txn=txn).updated
    return FoldResult(len(events), written, closed + closed_in_batch, txn.version)


# -- mirror ---------------------------------------------------------------
def mirror_merge(spec: TableSpec) -> Merge:
    columns = current_schema(spec).names
    return Merge(
        on=key_match(spec, "t", "s"),
        delete_when=f"s.{q(OP)} = '{OP_DELETE}'",
        update={name: f"s.{q(name)}" for name in columns if name not in spec.primary_key},
        insert={name: f"s.{q(name)}" for name in columns},
        insert_when=f"s.{q(OP)} <> '{OP_DELETE}'",
    )


def _fold_current_batch(derived: DerivedTable, events: pa.Table, txn: AppTransaction) -> FoldResult:
    spec = derived.spec
    ctx = _session({"e": events})
    latest = _conform(_run(ctx, latest_events_sql(spec, '"e"'), spec.name), spec.changes_schema)
    store = derived.store
    if store.stats().rows == 0:
        rows = latest.filter(pc.not_equal(latest.column(OP), OP_DELETE))
        store.append(conform(_conform(rows, current_schema(spec)), store.schema(), store.uri), txn=txn)
        return FoldResult(len(events), rows.num_rows, 0, txn.version)
    result = store.merge(latest, mirror_merge(spec), txn=txn)
    return FoldResult(len(events), result.inserted + result.updated, result.updated + result.deleted, txn.version)


# -- the loop -------------------------------------------------------------
def fold(
    changelog: Changelog,
    derived: DerivedTable,
    *,
    batch_events: int = FOLD_BATCH_EVENTS,
    progress: FoldProgress | None = None,
    packed: PackedFeed | None = None,
) -> FoldResult:
    """Fold every committed event past the folded watermark into ``derived``, batch by batch.

    With ``packed`` (the feed's unfolded events, read when its small files were
    packed), events are taken from memory while the feed stays at the version
    that pack committed, and read from the store otherwise.

    Each batch is one commit carrying the new folded watermark. When another
    compaction folds concurrently, this one goes on from the watermark that one
    left (the events are folded once, by whichever commits first); other commit
    conflicts are retried. Events committed after the fold began are left for
    the next one, so a fold ends even while a sync keeps adding events.
    """
    derived.ensure()
    spec = derived.spec
    fold_batch = _fold_history_batch if derived.mode == "temporal" else _fold_current_batch
    target = changelog.watermark  # what was committed when the fold began; later events wait for the next one
    total = FoldResult(watermark=derived.folded)
    pending = count_unfolded(changelog, total.watermark) if progress is not None else 0
    conflicts = 0
    while derived.folded < target:
        folded = derived.folded
        events = None if packed is None else packed.unfolded(changelog, folded, batch_events)
        if events is None:
            events = read_unfolded(changelog, spec, folded, batch_events)
        else:
            events = _conform(events, spec.changes_schema)
        if events.num_rows == 0:
            break
        last = int(events.column(SEQ)[-1].as_py())
        faults.point("fold.before_commit")
        try:
            done = fold_batch(derived, events, AppTransaction(FOLDED_APP_ID, last, expected=folded))
        except CommitConflictError:
            derived.store.refresh()
            if derived.folded > folded:
                log.info("table %r: another compaction folded up to %d meanwhile", spec.name, derived.folded)
                continue
            conflicts += 1
            if conflicts > _CONFLICT_RETRIES:
                raise
            log.info("table %r: fold conflicted with another writer; retrying", spec.name)
            time.sleep(random.uniform(0.01, 0.05) * conflicts)
            continue
        total = FoldResult(
            total.events + done.events,
            total.versions_written + done.versions_written,
            total.versions_closed + done.versions_closed,
            last,
        )
        faults.point("fold.after_commit")
        if progress is not None:
            progress(total.events, max(pending, total.events))
    return FoldResult(total.events, total.versions_written, total.versions_closed, derived.folded)


def plan_fold(changelog: Changelog, derived: DerivedTable) -> FoldResult:
    """What :func:`fold` would do now, computed without writing anything.

    The counts are those of folding every pending event in one commit; a fold
    split into several commits may count a version opened and closed across
    two of them in both.
    """
    from datafusion import SessionContext

    spec = derived.spec
    folded = derived.folded
    ctx = SessionContext()
    changelog.register(ctx, "__rhei_changes")
    tail = f"(SELECT * FROM __rhei_changes WHERE {q(SEQ)} > {int(folded)})"
    latest = f"({latest_events_sql(spec, tail)})"
    target = None
    if derived.exists() and derived.store.stats().rows:
        target = "__rhei_target"
        derived.store.register(ctx, target)
    open_filter = f" AND _rhei_d.{q(VALID_TO)} IS NULL" if derived.mode == "temporal" else ""
    existing = (
        f"(SELECT count(*) FROM {target} _rhei_d WHERE EXISTS (SELECT 1 FROM {tail} _rhei_e "
        f"WHERE {key_match(spec, '_rhei_e', '_rhei_d')}){open_filter})"
        if target
        else "0"
    )
    not_delete = f"{q(OP)} <> '{OP_DELETE}'"
    if derived.mode == "temporal":
        sql = (
            f"SELECT (SELECT count(*) FROM {tail}) AS events, "
            f"(SELECT count(*) FROM {tail} WHERE {not_delete}) AS written, "
            f"(SELECT count(*) FROM {tail} WHERE {not_delete}) - (SELECT count(*) FROM {latest} WHERE {not_delete}) "
            f"+ {existing} AS closed, (SELECT max({q(SEQ)}) FROM {tail}) AS last"
        )
    else:
        sql = (
            f"SELECT (SELECT count(*) FROM {tail}) AS events, "
            f"(SELECT count(*) FROM {latest} WHERE {not_delete}) AS written, "
            f"{existing} AS closed, (SELECT max({q(SEQ)}) FROM {tail}) AS last"
        )
    row = _run(ctx, sql, changelog.store.uri).to_pylist()[0]
    return FoldResult(
        int(row["events"] or 0), int(row["written"] or 0), int(row["closed"] or 0), int(row["last"] or folded)
    )
