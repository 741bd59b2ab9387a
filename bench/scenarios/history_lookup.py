"""Point lookups on ``t_history`` (and ``t`` as of an instant) on a compacted 1M-row lake, with and without
compaction's layout by key, and what compaction costs either way.

Each lake: 1M orders synced and compacted, then rounds of 1% updated and 0.1% new rows, each synced and
compacted. "without layout" is the lake as compaction wrote it before the layout (rows in the fold's
order, 1M-row row groups, read through delta-rs's table provider): the derived tables get no
:class:`~rhei_lake.storage.base.Layout`. Limit: the same filter on a DataFusion MemTable of the
history's rows. Target: <= 2x.
"""

from __future__ import annotations

import itertools
import random
import shutil
import sqlite3
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from unittest import mock

import rhei_lake
from bench.core import Result, Settings
from bench.data import add_orders, create_orders
from bench.scenarios.serving import _medians, _memtable
from rhei_lake.compaction import derived

ROUNDS = 3


def _rounds(db: Path, storage: str, rows: int, seed: int) -> tuple[float, list[float], int]:
    """Sync and compact the snapshot, then ROUNDS of changes: (first compaction s, each later one s, rows)."""
    with rhei_lake.open(oltp_path=str(db), storage=storage) as lake:
        lake.register_table("orders")
        lake.flush()
        started = time.perf_counter()
        lake.compact(vacuum_retention=0)
        first = time.perf_counter() - started
        rng = random.Random(seed)
        later = []
        conn = sqlite3.connect(db, isolation_level=None)
        for n in range(ROUNDS):
            conn.execute("BEGIN")
            conn.executemany(
                "UPDATE orders SET qty = qty + 1, status = 'updated' WHERE id = ?",
                [(k,) for k in rng.sample(range(1, rows + 1), rows // 100)],
            )
            conn.execute("COMMIT")
            add_orders(conn, rows + 1 + n * (rows // 1000), rows // 1000)
            lake.sync_now()
            started = time.perf_counter()
            lake.compact(vacuum_retention=0)
            later.append(time.perf_counter() - started)
        conn.close()
    return first, later, rows + ROUNDS * (rows // 1000)


def _pruning(reader: rhei_lake.Lake, key: int) -> str:
    """Row groups of the history's files whose statistics admit ``id = key`` (what the scan reads), of all."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from rhei_lake.storage.delta import DeltaTableStore

    store = reader.storage.table_store("orders", "history")
    assert isinstance(store, DeltaTableStore)  # the one store a lake's history is kept in
    files = store._table().file_uris()
    fragments = list(ds.dataset(files, format="parquet").get_fragments())
    total = sum(f.metadata.num_row_groups for f in fragments)
    kept = sum(len(f.split_by_row_group(pc.field("id") == key)) for f in fragments)
    return f"{kept} of {total}"


def _lake(settings: Settings, source: Path, layout: bool, rows: int, repeat: int) -> list[Result]:
    label = "with layout" if layout else "without layout"
    db = settings.workdir / f"history-lookup-{int(layout)}.db"
    shutil.copy(source, db)
    storage = str(settings.workdir / f"history-lookup-{int(layout)}-lake")
    shutil.rmtree(storage, ignore_errors=True)
    off = mock.patch.object(derived, "layout_of", lambda spec, mode: None)
    with nullcontext() if layout else off:
        first, later, total = _rounds(db, storage, rows, settings.seed)
        rng = random.Random(settings.seed + 1)
        keys = iter([rng.randint(1, total) for _ in range(repeat * 8)] * 2)
        with rhei_lake.open(storage=storage) as reader:
            history = reader.query("SELECT * FROM orders_history")
            limit_ctx = _memtable(history)
            sql = "SELECT * FROM orders WHERE id = {}"
            lookup, limit = _medians(
                repeat,
                lambda: reader.query(sql.replace("orders", "orders_history").format(next(keys))),
                lambda: limit_ctx.sql(sql.format(next(keys))).to_arrow_table(),
            )
            instant = reader.query("SELECT min(_rhei_valid_to) AS t FROM orders_history").column(0)[0].as_py()
            instants = (instant + timedelta(microseconds=n) for n in itertools.count(1))
            # The same instant (its session kept from the query before), a new one each query (registered
            # anew; the same state), and the limit again, in turn.
            as_of, as_of_new, as_of_limit = _medians(
                repeat,
                lambda: reader.query(sql.format(next(keys)), as_of=instant),
                lambda: reader.query(sql.format(next(keys)), as_of=next(instants)),
                lambda: limit_ctx.sql(sql.format(next(keys))).to_arrow_table(),
            )
            pruned = _pruning(reader, next(keys))
    details = {"rows": total, "history_rows": history.num_rows, "row_groups_read": pruned}
    ratio = lookup / limit
    return [
        Result(
            "history_lookup",
            f"point lookup on t_history, {label}, {rows:,} rows + {ROUNDS} folds",
            lookup * 1000,
            "ms",
            limit * 1000,
            ratio,
            "<= 2x",
            ratio <= 2.0,
            higher_is_better=False,
            details=details,
        ),
        Result(
            "history_lookup",
            f"point lookup on t as_of (through history), {label}",
            as_of * 1000,
            "ms",
            as_of_limit * 1000,
            as_of / as_of_limit,
            "<= 2x",
            as_of / as_of_limit <= 2.0,
            higher_is_better=False,
        ),
        Result(
            "history_lookup",
            f"point lookup on t as_of a new instant each query, {label}",
            as_of_new * 1000,
            "ms",
            as_of_limit * 1000,
            as_of_new / as_of_limit,
            "<= 2x",
            as_of_new / as_of_limit <= 2.0,
            higher_is_better=False,
        ),
        Result(
            "history_lookup", f"compaction of the {rows:,}-row snapshot, {label}", first, "s", higher_is_better=False
        ),
        Result(
            "history_lookup",
            f"compaction after 1% updated + 0.1% new rows (median of {ROUNDS}), {label}",
            sorted(later)[len(later) // 2],
            "s",
            higher_is_better=False,
            details={"each": later},
        ),
    ]


def run(settings: Settings) -> list[Result]:
    rows = settings.size(200_000, 1_000_000)
    repeat = settings.size(9, 25)
    source = create_orders(settings.workdir / "history-lookup-source.db", rows)
    results = []
    for layout in (False, True):
        results += _lake(settings, source, layout, rows, repeat)
    return results
