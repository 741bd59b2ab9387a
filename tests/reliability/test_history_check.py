"""The crash matrix's history check fails on a doubled version and on a wrong closing time."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from rhei_lake.catalog import SEQ, VALID_TO
from tests.reliability.crash_lab import assert_history_follows_changes


@pytest.fixture
def lake(htap_lake):
    lake = htap_lake()
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL)")
    lake.register_table("t")
    for i in range(5):
        lake.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i % 3, i / 3))
        lake.sync_now()
    lake.execute("DELETE FROM t WHERE id = 0")
    lake.sync_now()
    lake.compact()
    lake.execute("UPDATE t SET v = 9 WHERE id = 1")  # one version left to merge-on-read
    lake.sync_now()
    assert_history_follows_changes(lake, "t")
    return lake


def test_a_doubled_version_is_caught(lake):
    history = lake.storage.table_store("t", "history")
    rows = history.to_arrow()
    history.append(rows.filter(pc.equal(rows.column(SEQ), rows.column(SEQ)[0])))
    lake.refresh()
    with pytest.raises(AssertionError, match="doubled seqs"):
        assert_history_follows_changes(lake, "t")


def test_lost_versions_are_caught(lake):
    history = lake.storage.table_store("t", "history")
    history.delete(f"{VALID_TO} IS NOT NULL AND id = 0")  # id 0's closed versions lost
    lake.refresh()
    with pytest.raises(AssertionError, match="history is not what its change feed implies"):
        assert_history_follows_changes(lake, "t")
