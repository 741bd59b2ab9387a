"""Requests a read-only lake makes on S3: none within refresh_interval, one per look at an idle table, never more with history.

Counted by a proxy in front of moto (tests/support/s3_latency_proxy.py).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

import rhei_lake
from tests.support.s3_latency_proxy import LatencyProxy


def _counted(proxy: LatencyProxy, fn) -> list[str]:
    proxy.reset()
    fn()
    return proxy.requests()["paths"]


@pytest.mark.parametrize("history", [(2, 1), (25, 25)], ids=["short history", "25 commits and 25 segments"])
def test_a_look_costs_the_same_whatever_the_history_and_reads_only_the_named_table(proxied_lake, tmp_path, history):
    url, options, proxy = proxied_lake
    flushed, unflushed = history
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, tail_flush_segments=10_000
    ) as writer:
        for name in ("a", "b", "c"):
            writer.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v TEXT)")
            writer.register_table(name)
        for i in range(flushed + unflushed):
            writer.execute("INSERT INTO a VALUES (?, 'x')", (i,))
            writer.sync_now()
            if i < flushed:
                writer.flush()
        with rhei_lake.open(storage=url, storage_options=options, refresh_interval=2.0) as reader:
            sql = "SELECT count(*) AS n FROM a"
            assert reader.query(sql).column(0)[0].as_py() == flushed + unflushed
            reader.query(sql)  # looks again if the first query outlasted the interval
            assert _counted(proxy, lambda: reader.query(sql)) == []  # within the interval: nothing
            time.sleep(2.1)
            looked = _counted(proxy, lambda: reader.query(sql))
            assert len(looked) == 1 and "/_tail/" in looked[0], looked  # the next tail segment, found missing
            assert all("/a/" in path for path in looked), looked  # not the tables the query does not read

            writer.execute("INSERT INTO a VALUES (-1, 'new')")
            writer.sync_now()
            time.sleep(2.1)
            paths = _counted(proxy, lambda: reader.query(sql))
            assert reader.query(sql).column(0)[0].as_py() == flushed + unflushed + 1
            assert len(paths) <= 3, paths  # the new segment, the next one (missing), the change feed's next commit


def test_status_asks_for_a_tables_last_commit_time_once_per_version(proxied_lake, tmp_path):
    """A dashboard polls sync_status() every second: the stored commit time is read again only after a commit."""
    url, options, proxy = proxied_lake
    db = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=db, storage=url, storage_options=options) as writer:
        writer.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
        writer.execute("INSERT INTO a VALUES (1)")
        writer.register_table("a")
    with rhei_lake.open(oltp_path=db, storage=url, storage_options=options) as lake:  # nothing synced this run
        first = lake.sync_status().tables["a"].stored_commit_at
        assert first is not None
        assert _counted(proxy, lambda: lake.sync_status()) == []


def test_a_writer_opens_without_reading_the_commits_its_checkpoints_cover(proxied_lake, tmp_path):
    """The cursor committed with the newest events is found by reading the log from its newest entry down
    (delta-rs's history() read up to 200 entries, one request each: 108 requests for a 2-table lake with
    60 flushed syncs, 45 now)."""
    url, options, proxy = proxied_lake
    db = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=db, storage=url, storage_options=options) as writer:
        writer.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
        writer.register_table("a")
        for i in range(25):
            writer.execute("INSERT INTO a VALUES (?, 'x')", (i,))
            writer.sync_now()
            writer.flush()
    paths = _counted(proxy, lambda: rhei_lake.open(oltp_path=db, storage=url, storage_options=options).close())
    entries = [p.split("?")[0] for p in paths if p.startswith("GET ") and "/a/changes/_delta_log/" in p]
    versions = sorted({int(p.rsplit("/", 1)[1].split(".")[0]) for p in entries if p.endswith(".json")})
    checkpoints = [int(p.rsplit("/", 1)[1].split(".")[0]) for p in entries if ".checkpoint." in p]
    assert checkpoints and versions, paths
    assert min(versions) > max(checkpoints), versions  # only what the newest checkpoint does not cover


def _by_object(paths: list[str], part: str) -> Counter[str]:
    return Counter(p.split("?")[0] for p in paths if part in p and "?list-type" not in p)


def test_the_first_query_fetches_each_change_file_once(proxied_lake, tmp_path):
    """A table's first query takes the events past the folded watermark from the feed's files, each fetched
    whole in one GET (a scan asked for each file twice, its footer then its columns: 123 -> 62 requests for
    a table of 61 files and 60 segments), and the segments the open read are not fetched again."""
    url, options, proxy = proxied_lake
    db = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=db, storage=url, storage_options=options, tail_flush_segments=10_000) as writer:
        writer.execute("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT, n REAL, b BLOB)")
        writer.register_table("a")
        for i in range(12):
            if i == 6:
                writer.add_column("a", "w", "INTEGER")  # older files lack it: read as NULL
            columns, values = ("id, v, n, b, w", "?, ?, ?, ?, ?") if i >= 6 else ("id, v, n, b", "?, ?, ?, ?")
            row = (i, f"v{i}", i / 3, bytes([i]) * 3) + ((i * 10,) if i >= 6 else ())
            writer.execute(f"INSERT INTO a ({columns}) VALUES ({values})", row)
            writer.execute("UPDATE a SET v = ? WHERE id = ?", (f"u{i}", i - 1))
            writer.sync_now()
            if i < 8:
                writer.flush()
        expected = writer.query("SELECT * FROM a ORDER BY id")
        changes = writer.query("SELECT * FROM a_changes ORDER BY _rhei_seq")
        with rhei_lake.open(storage=url, storage_options=options, refresh_interval=60.0) as reader:
            paths = _counted(proxy, lambda: reader.query("SELECT count(*) FROM a"))
            files = _by_object(paths, "/a/changes/part-")
            assert files and set(files.values()) == {1}, files  # each data file once
            assert not [p for p in paths if p.startswith("HEAD ")], paths
            assert not _by_object(paths, "/a/_tail/"), paths  # held since the open
            assert reader.query("SELECT * FROM a ORDER BY id").equals(expected)
            assert reader.query("SELECT * FROM a_changes ORDER BY _rhei_seq").equals(changes)


def test_an_open_asks_for_each_tables_next_log_entry_once(proxied_lake, tmp_path):
    """Loading a table's changelog asked for the log entry after the loaded version before reading the tail
    chain and again after it (the first ask right after delta-rs had loaded the table): now only after."""
    url, options, proxy = proxied_lake
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, tail_flush_segments=10_000
    ) as writer:
        for name in ("a", "b"):
            writer.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY)")
            writer.execute(f"INSERT INTO {name} VALUES (1)")
            writer.register_table(name)
        for i in range(3):
            writer.execute("INSERT INTO a VALUES (?)", (10 + i,))
            writer.sync_now()
            writer.flush()
        writer.execute("INSERT INTO a VALUES (20)")
        writer.sync_now()  # a segment past the table
    paths = _counted(proxy, lambda: rhei_lake.open(storage=url, storage_options=options).close())
    for name in ("a", "b"):
        entries = _by_object(paths, f"/{name}/changes/_delta_log/")
        missing = max(p for p in entries if p.endswith(".json"))  # the entry after the newest: not there
        assert entries[missing] == 1, entries


def test_an_open_reads_a_tables_watermark_from_its_newest_log_entry(proxied_lake, tmp_path):
    """The synced watermark (an app transaction) was asked of delta-rs, which replays every log entry since
    the checkpoint from the store although its load of the table has just read them: now the newest
    entries are read one at a time until one records it, usually the newest. Counted against what
    delta-rs's own load of the table reads."""
    from deltalake import DeltaTable

    url, options, proxy = proxied_lake
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options) as writer:
        writer.execute("CREATE TABLE a (id INTEGER PRIMARY KEY)")
        writer.register_table("a")
        for i in range(14):  # a checkpoint at 10, then entries past it
            writer.execute("INSERT INTO a VALUES (?)", (i,))
            writer.sync_now()
            writer.flush()
    load = _by_object(_counted(proxy, lambda: DeltaTable(f"{url}/a/changes", storage_options=options)), ".json")
    newest = max(load)
    assert len(load) >= 3, load
    opened = _by_object(_counted(proxy, lambda: rhei_lake.open(storage=url, storage_options=options).close()), ".json")
    for entry, reads in load.items():
        assert opened[entry] <= reads + (entry == newest), (entry, opened, load)
