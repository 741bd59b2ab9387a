"""compact() packs the change feed's small files before the fold, reads each once, and folds from the rows read."""

from __future__ import annotations

from collections import Counter

import pytest

import rhei_lake
from rhei_lake import faults
from tests.support.oracle import assert_same_state, oltp_oracle

FLUSHED, UNFLUSHED = 12, 3


def _syncs(lake: rhei_lake.Lake, flushed: int, unflushed: int, start: int = 0) -> None:
    """One small change file per flushed sync (inserts, updates, deletes), then a tail of segments."""
    for i in range(start, start + flushed + unflushed):
        lake.execute("INSERT INTO t VALUES (?, ?)", (i, f"v{i}"))
        if i % 3 == 2:
            lake.execute("UPDATE t SET v = v || '+' WHERE id = ?", (i - 1,))
        if i % 5 == 4:
            lake.execute("DELETE FROM t WHERE id = ?", (i - 2,))
        lake.sync_now()
        if i < start + flushed:
            lake.flush()


def _open(tmp_path, url: str, options: dict[str, str]) -> rhei_lake.Lake:
    lake = rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, tail_flush_segments=10_000
    )
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    lake.register_table("t")
    return lake


def _history(lake: rhei_lake.Lake):
    return lake.query("SELECT * FROM t_history ORDER BY _rhei_seq, id")


def _feed_gets(paths: list[str]) -> Counter[str]:
    """GETs per data file of the change feed, from the proxy's ``"METHOD /bucket/key?query"`` lines."""
    return Counter(
        p.split(" ", 1)[1].split("?", 1)[0]
        for p in paths
        if p.startswith("GET ") and "/t/changes/" in p and ".parquet" in p and "_delta_log" not in p
    )


def test_compact_fetches_each_change_file_once_in_one_request(proxied_lake, tmp_path):
    url, options, proxy = proxied_lake
    with _open(tmp_path, url, options) as lake:
        for start in (0, 100):  # a first compaction, then one that finds the first one's packed file
            _syncs(lake, FLUSHED, UNFLUSHED, start=start)
            before = _history(lake)  # merged on read from the change feed
            proxy.reset()

            report = lake.compact(vacuum_retention=0).tables["t"]

            paths = proxy.requests()["paths"]
            gets = _feed_gets(paths)
            assert len(gets) >= FLUSHED, paths  # the feed's files were read (by the pack)
            read = set(gets) - {p.split(" ", 1)[1] for p in paths if p.startswith("PUT ")}  # the files it found
            heads = [p for p in paths if p.startswith("HEAD ") and p.split(" ", 1)[1].split("?", 1)[0] in read]
            assert not heads, f"the pack asked for sizes of the files it read (the Delta log has them): {heads}"
            twice = {path: n for path, n in gets.items() if n > 1}
            assert not twice, f"change feed files fetched more than once in one compact(): {twice}"
            assert report.events_folded > 0 and report.files["changes"][1] <= 2
            assert _history(lake) == before
            assert_same_state(lake, oltp_oracle(lake), "t")


def test_compact_reads_back_no_file_it_wrote_but_to_check_a_folds_schema_once(proxied_lake, tmp_path):
    """The files a compaction writes are checked for view types before its bin-pack: the pack's staged file
    (written by rhei_lake with plain types) is not read at all, the fold's files (delta-rs's append) with one
    GET each, and the staging log the pack reads its add actions from with one GET: no HEAD of any of them
    (each was a HEAD and a GET before)."""
    url, options, proxy = proxied_lake
    with _open(tmp_path, url, options) as lake:
        _syncs(lake, FLUSHED, UNFLUSHED)
        proxy.reset()

        lake.compact(vacuum_retention=0)

        paths = [p.split("?", 1)[0] for p in proxy.requests()["paths"]]
        written = {p.split(" ", 1)[1] for p in paths if p.startswith("PUT ") and "/t/" in p}
        data = {p for p in written if p.endswith(".parquet") and "/_delta_log/" not in p}
        staged = {p for p in data if "/rhei-rewrite-" in p}
        folded = {p for p in data if "/t/history/" in p}
        staging_log = {
            p for p in written if "/rhei-rewrite-" in p and p.endswith("/_delta_log/00000000000000000000.json")
        }
        assert staged and folded and staging_log, written
        checked = staged | folded | staging_log  # (delta-rs's own log and checkpoints aside)
        reads = Counter(p for p in paths if p.split(" ", 1)[0] in ("GET", "HEAD") and p.split(" ", 1)[1] in checked)
        assert not [p for p in reads if p.startswith("HEAD ")], reads
        assert not [p for p in reads if p.split(" ", 1)[1] in staged], reads
        assert all(reads[f"GET {p}"] == 1 for p in folded), reads
        assert_same_state(lake, oltp_oracle(lake), "t")


def test_a_pack_that_loses_to_another_commit_folds_from_the_store(tmp_path):
    """Another writer bin-packs the same files between the pack's read and its commit: the pack gives up.

    Committed over it (as delta-rs's rebase would), the feed would hold those rows twice.
    """
    from deltalake import DeltaTable

    url = str(tmp_path / "lake")
    with _open(tmp_path, url, {}) as lake:
        _syncs(lake, FLUSHED, UNFLUSHED)
        before = _history(lake)
        feed = lake.storage.table_store("t", "changes")
        reached = []

        def commit_meanwhile(_name: str) -> None:
            reached.append(feed.version())
            DeltaTable(feed.uri).optimize.compact()

        with faults.armed("compact.feed_packed", commit_meanwhile):
            report = lake.compact(vacuum_retention=0).tables["t"]

        assert reached, "the pack was not tried"
        assert report.events_folded > 0
        assert _history(lake) == before
        assert_same_state(lake, oltp_oracle(lake), "t")
        # the staged file was never committed: the feed's rows are each there once
        seqs = lake.query("SELECT _rhei_seq FROM t_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs))


@pytest.mark.parametrize("folded_first", [False, True], ids=["all unfolded", "some folded"])
def test_compact_after_a_pack_matches_the_merged_history(tmp_path, folded_first):
    url = str(tmp_path / "lake")
    with _open(tmp_path, url, {}) as lake:
        if folded_first:  # a small file then holds folded events: packed too, its rows not kept for the fold
            _syncs(lake, 4, 0)
            lake.compact(vacuum_retention=0)
            lake.execute("DELETE FROM t WHERE id = 0")
            lake.sync_now()
            lake.flush()
        _syncs(lake, FLUSHED, UNFLUSHED, start=100)
        before = _history(lake)
        changes_before = lake.query("SELECT * FROM t_changes ORDER BY _rhei_seq")

        lake.compact(vacuum_retention=0)
        lake.compact(vacuum_retention=0)  # nothing new: nothing folded twice

        assert _history(lake) == before
        assert lake.query("SELECT * FROM t_changes ORDER BY _rhei_seq") == changes_before
        assert_same_state(lake, oltp_oracle(lake), "t")
