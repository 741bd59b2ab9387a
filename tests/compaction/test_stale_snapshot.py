"""A compaction starts from the newest commit of every table it rewrites, whoever made it.

The syncing process keeps its change feed's snapshot at its own last commit. A
compaction job beside it bin-packs that feed; when the syncing process then
compacted, its bin-packing, planned on the older snapshot, removed the files
the job had already removed, and delta-rs committed it on top of the job's
commit (it lets two rewrites that change no data remove the same file:
delta-rs PR 3982), so every row of those files was in the feed twice. The
table lock orders the two compactions; each must also start from the other's
commits.
"""

from __future__ import annotations

import collections

import rhei_lake
from rhei_lake.catalog import SEQ
from tests.support.oracle import assert_same_state
from tests.support.workload import SCHEMA, Workload, create_tables


def _stored_seqs(lake, table: str) -> list[int]:
    return lake.storage.table_store(table, "changes").to_arrow(columns=[SEQ]).column(0).to_pylist()


def test_a_compaction_after_another_processs_compaction_rewrites_its_newest_commit(durable_lake, tmp_path):
    url, options = durable_lake
    db = tmp_path / "app.db"
    reader = create_tables(db)
    app = rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=1)
    job = rhei_lake.open(storage=url, storage_options=options)  # a compaction job: only the URL
    try:
        for table in SCHEMA:
            app.register_table(table)
        workload = Workload(5, key_space=20)
        for _ in range(6):
            for _ in range(10):
                app.execute(*workload.statement())
            app.sync_now()  # one flushed Delta commit per round: small files to bin-pack
        app.compact()
        for _ in range(4):
            for _ in range(10):
                app.execute(*workload.statement())
            app.sync_now()
        job.compact()  # bin-packs the feed's small files: the app's snapshot still lists them
        app.compact()  # must bin-pack what the job left, not the files it removed
        for table in SCHEMA:
            seqs = _stored_seqs(app, table)
            twice = [seq for seq, n in collections.Counter(seqs).items() if n > 1]
            assert not twice, f"{table}: {len(twice)} events twice in the change feed"
            assert_same_state(app, reader, table)
    finally:
        job.close()
        app.close()
