"""Many small syncs leave many small files; one compaction leaves a handful."""

from __future__ import annotations

import os

import rhei_lake
from rhei_lake.compaction.fold import fold
from tests.support.oracle import assert_same_state, oltp_oracle

SYNCS = 200


def _data_files(root: str) -> int:
    """Parquet data files on disk (checkpoints in _delta_log are parquet too: not counted)."""
    return sum(
        1
        for directory, _sub, files in os.walk(root)
        if "_delta_log" not in directory
        for f in files
        if f.endswith(".parquet")
    )


def test_two_hundred_small_syncs_then_compact_leaves_a_handful_of_files(durable_lake, tmp_path):
    url, options = durable_lake
    # Flush every sync straight into Delta: the worst case for file counts.
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, tail_flush_segments=1
    ) as lake:
        lake.execute("CREATE TABLE ticks (id INTEGER PRIMARY KEY, value REAL, note TEXT)")
        spec = lake.register_table("ticks")
        for i in range(SYNCS):
            lake.execute("INSERT INTO ticks VALUES (?, ?, ?)", (i, i * 0.5, f"tick {i}"))
            if i % 3 == 0 and i:
                lake.execute("UPDATE ticks SET value = value + 1 WHERE id = ?", (i - 1,))
            lake.sync_now()
            lake.flush()  # one changes file per sync
            if i % 20 == 19:
                fold(lake.sync_engine.changelogs["ticks"], lake._derived_table(spec))  # a history file or more per fold
        changes = lake.storage.table_store("ticks", "changes")
        assert changes.stats().files >= SYNCS - 5
        before = lake.query("SELECT * FROM ticks_history ORDER BY _rhei_seq")

        report = lake.compact(vacuum_retention=0).tables["ticks"]

        assert report.files["changes"][0] >= SYNCS - 5 and report.files["history"][0] >= 5
        assert report.files["changes"][1] <= 3 and report.files["history"][1] <= 3
        assert report.files_vacuumed >= report.files_before - report.files_after
        assert report.bytes_removed > 0
        assert lake.query("SELECT * FROM ticks_history ORDER BY _rhei_seq") == before
        assert_same_state(lake, oltp_oracle(lake), "ticks")
        if not url.startswith("s3://"):
            assert _data_files(os.path.join(url, "ticks", "changes")) <= 3
            assert _data_files(os.path.join(url, "ticks", "history")) <= 3
