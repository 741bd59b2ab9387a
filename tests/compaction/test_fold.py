"""The fold: versions, validity times, batches, the folded watermark, conflicts; on every tier."""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pytest

import rhei_lake
from rhei_lake.catalog import SEQ, TIMESTAMP_TYPE, VALID_FROM, VALID_TO
from rhei_lake.compaction.derived import FOLDED_APP_ID, DerivedTable
from rhei_lake.compaction.fold import fold
from rhei_lake.sync.tables import SPEC_PROPERTY


def _open(htap_lake, storage, **options) -> rhei_lake.Lake:
    lake = htap_lake(storage=storage, **options)
    lake.execute("CREATE TABLE acct (id INTEGER PRIMARY KEY, owner TEXT, balance REAL)")
    lake.register_table("acct")
    return lake


def _story(lake: rhei_lake.Lake) -> None:
    """Several changes of key 1 in one sync, a key change, a delete and a re-insert."""
    for sql in (
        "INSERT INTO acct VALUES (1, 'ada', 10.0)",
        "UPDATE acct SET balance = 11.5 WHERE id = 1",
        "UPDATE acct SET balance = 0.1 WHERE id = 1",
        "INSERT INTO acct VALUES (2, 'bob', 5.0)",
        "UPDATE acct SET id = 3 WHERE id = 2",
        "DELETE FROM acct WHERE id = 1",
        "INSERT INTO acct VALUES (1, 'ada again', 1e-300)",
    ):
        lake.execute(sql)
        time.sleep(0.002)  # distinct source timestamps
    lake.sync_now()


def _stored_history(lake: rhei_lake.Lake) -> list[dict]:
    store = lake.storage.table_store("acct", "history")
    return sorted(store.to_arrow().to_pylist(), key=lambda r: r[SEQ])


def test_each_change_becomes_a_version_timed_by_its_event(storage, htap_lake):
    with _open(htap_lake, storage) as lake:
        _story(lake)
        events = lake.query("SELECT * FROM acct_changes ORDER BY _rhei_seq").to_pylist()
        time.sleep(0.05)  # compaction time must not leak into validity times
        report = lake.compact()
        assert report.tables["acct"].events_folded == len(events) == 8
        history = _stored_history(lake)
        by_seq = {e[SEQ]: e for e in events}
        expected = []
        for i, event in enumerate(events):
            if event["_rhei_op"] == "D":
                continue
            later = [e for e in events[i + 1 :] if e["id"] == event["id"]]
            expected.append(
                {
                    "id": event["id"],
                    "owner": event["owner"],
                    "balance": event["balance"],
                    VALID_FROM: event["_rhei_ts"],
                    VALID_TO: later[0]["_rhei_ts"] if later else None,
                    SEQ: event[SEQ],
                }
            )
        assert history == expected
        assert [(h["id"], h["balance"]) for h in history] == [
            (1, 10.0),
            (1, 11.5),
            (1, 0.1),
            (2, 5.0),
            (3, 5.0),
            (1, 1e-300),
        ]
        for row in history:
            assert row[VALID_FROM] == by_seq[row[SEQ]]["_rhei_ts"]
        assert report.tables["acct"].versions_written == 6
        assert report.tables["acct"].versions_closed == 4  # three of key 1, and key 2 (moved to 3)
        assert lake.storage.table_store("acct", "history").app_version(FOLDED_APP_ID) == events[-1][SEQ]


def test_history_table_is_created_with_the_spec(storage, htap_lake):
    with _open(htap_lake, storage) as lake:
        assert not lake.storage.table_store("acct", "history").exists()
        lake.compact()  # even with nothing to fold yet
        store = lake.storage.table_store("acct", "history")
        assert store.exists()
        assert rhei_lake.TableSpec.from_json(store.properties()[SPEC_PROPERTY]) == lake.table_spec("acct")
        schema = store.schema()
        assert schema.names == ["id", "owner", "balance", VALID_FROM, VALID_TO, SEQ]
        assert schema.field(VALID_FROM).type == TIMESTAMP_TYPE and schema.field(VALID_TO).type == TIMESTAMP_TYPE


def test_a_second_compaction_folds_nothing_and_changes_nothing(storage, htap_lake):
    with _open(htap_lake, storage) as lake:
        _story(lake)
        lake.compact()
        before = _stored_history(lake)
        report = lake.compact()
        assert report.tables["acct"].events_folded == 0
        assert _stored_history(lake) == before


def test_folding_in_small_batches_equals_folding_at_once(storage, htap_lake):
    with _open(htap_lake, storage) as lake:
        _story(lake)
        lake.execute("UPDATE acct SET owner = 'carol' WHERE id = 3")
        lake.sync_now()
        spec = lake.table_spec("acct")
        changelog = lake.sync_engine.changelogs["acct"]
        changelog.flush()
        whole = lake.query("SELECT * FROM acct_history ORDER BY _rhei_seq")
        derived = DerivedTable(lake.storage, spec, "temporal")
        steps = []
        result = fold(changelog, derived, batch_events=2, progress=lambda done, total: steps.append((done, total)))
        assert result.events == 9 and len(steps) == 5 and steps[-1] == (9, 9)
        assert _stored_history(lake) == whole.to_pylist()


def test_a_stale_compactor_conflicts_and_folds_nothing_twice(storage, caplog, htap_lake):
    """Two compactions of one table (the second with an old view of it) never write a version twice."""
    caplog.set_level(logging.INFO, logger="rhei_lake.compaction")
    url, options = storage
    with _open(htap_lake, storage) as lake:
        _story(lake)
        lake.flush()
        spec = lake.table_spec("acct")
        with rhei_lake.open(storage=url, storage_options=options) as job:
            stale = DerivedTable(job.storage, spec, "temporal")
            stale.ensure()
            job_changelog = job._readonly_tables["acct"][1]
            job_changelog.load()
            lake.compact()  # folds everything while the job's view of history is stale
            result = fold(job_changelog, stale)
            assert result.events == 0
            if not url.startswith("memory://"):  # memory stores are shared objects: never stale
                assert "another compaction folded up to" in caplog.text
        history = _stored_history(lake)
        assert len(history) == 6 and len({h[SEQ] for h in history}) == 6


def test_mirror_mode_keeps_current_rows_and_no_history(storage, htap_lake):
    url, options = storage
    with _open(htap_lake, storage, sync_mode="mirror") as lake:
        _story(lake)
        expected = [{"id": 1, "owner": "ada again", "balance": 1e-300}, {"id": 3, "owner": "bob", "balance": 5.0}]
        assert lake.query("SELECT * FROM acct ORDER BY id").to_pylist() == expected
        report = lake.compact()
        assert report.tables["acct"].mode == "mirror"
        assert report.tables["acct"].versions_written == 2
        assert lake.query("SELECT * FROM acct ORDER BY id").to_pylist() == expected
        current = lake.storage.table_store("acct", "current")
        rows = sorted(current.to_arrow().to_pylist(), key=lambda r: r["id"])
        assert [{k: r[k] for k in ("id", "owner", "balance")} for r in rows] == expected
        assert not lake.storage.table_store("acct", "history").exists()

        # merge-on-read: changes after the fold show at once, including deletes and re-inserts
        lake.execute("DELETE FROM acct WHERE id = 3")
        lake.execute("UPDATE acct SET balance = 2.5 WHERE id = 1")
        lake.execute("INSERT INTO acct VALUES (7, 'eve', NULL)")
        lake.sync_now()
        expected = [{"id": 1, "owner": "ada again", "balance": 2.5}, {"id": 7, "owner": "eve", "balance": None}]
        assert lake.query("SELECT * FROM acct ORDER BY id").to_pylist() == expected
        report = lake.compact()
        assert (report.tables["acct"].versions_written, report.tables["acct"].versions_closed) == (2, 2)
        assert lake.query("SELECT * FROM acct ORDER BY id").to_pylist() == expected
        assert lake.query("SELECT count(*) AS n FROM acct_changes", as_of=time.time()).to_pylist() == [{"n": 11}]
        with pytest.raises(rhei_lake.QueryError, match="sync_mode='mirror'"):
            lake.query("SELECT * FROM acct", as_of=time.time())
        with pytest.raises(rhei_lake.QueryError, match="no history"):
            lake.query("SELECT * FROM acct_history")

    with rhei_lake.open(storage=url, storage_options=options) as reader:  # the mode comes from the lake
        assert reader.query("SELECT * FROM acct ORDER BY id").to_pylist() == expected


def test_the_sync_mode_of_a_table_is_recorded_and_enforced(tmp_path):
    lake_url = str(tmp_path / "lake")
    db = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=db, storage=lake_url) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
    with pytest.raises(rhei_lake.ConfigError, match="sync_mode.*temporal"):
        rhei_lake.open(oltp_path=db, storage=lake_url, sync_mode="mirror")


def test_compact_selects_tables_by_name(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        for name in ("a", "B"):
            lake.execute(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY)")
            lake.register_table(name)
            lake.execute(f"INSERT INTO {name} VALUES (1)")
        lake.sync_now()
        assert list(lake.compact("b").tables) == ["B"]
        assert list(lake.compact(["a", "A"]).tables) == ["a"]
        assert sorted(lake.compact().tables) == ["B", "a"]
        with pytest.raises(rhei_lake.SchemaError, match="no mirrored table 'c'"):
            lake.compact(["c"])


def test_dry_run_reports_and_changes_nothing(storage, htap_lake):
    with _open(htap_lake, storage) as lake:
        _story(lake)
        lake.compact()
        lake.execute("UPDATE acct SET balance = 3 WHERE id = 1")
        lake.execute("INSERT INTO acct VALUES (9, 'z', 0)")
        lake.sync_now()
        history = lake.storage.table_store("acct", "history")
        version = history.version()
        planned = lake.compact(dry_run=True, vacuum_retention=0)
        assert planned.dry_run and history.version() == version
        table = planned.tables["acct"]
        assert (table.events_folded, table.versions_written, table.versions_closed) == (2, 2, 1)
        done = lake.compact().tables["acct"]
        assert (done.events_folded, done.versions_written, done.versions_closed) == (2, 2, 1)


def test_validity_columns_are_utc_microseconds(htap_lake):
    with _open(htap_lake, ("memory://", {})) as lake:
        _story(lake)
        lake.compact()
        schema = lake.query("SELECT * FROM acct_history LIMIT 0").schema
        assert schema.field(VALID_FROM).type == pa.timestamp("us", tz="UTC")
        assert schema.field(VALID_TO).type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_column_names_that_look_like_aliases_and_schema_evolution(storage, tmp_path, mode):
    """Columns named like the views' and merges' relation aliases; add and drop columns between folds."""
    url, options = storage
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, sync_mode=mode
    ) as lake:
        lake.execute(
            'CREATE TABLE "Odd" (s INTEGER, t TEXT, h TEXT, f REAL, c TEXT, e TEXT, d TEXT, PRIMARY KEY (s, t))'
        )
        lake.register_table("Odd")
        lake.execute(
            "INSERT INTO \"Odd\" VALUES (1, 'k', 'h1', 0.5, 'c1', 'e1', 'd1'), (2, 'k', 'h2', 1.5, 'c2', 'e2', 'd2')"
        )
        lake.sync_now()
        lake.compact()
        lake.execute("UPDATE \"Odd\" SET c = 'c1b' WHERE s = 1")
        lake.execute('DELETE FROM "Odd" WHERE s = 2')
        lake.sync_now()
        assert lake.compact(dry_run=True).tables["Odd"].events_folded == 2
        expected = [{"s": 1, "t": "k", "h": "h1", "f": 0.5, "c": "c1b", "e": "e1", "d": "d1"}]
        assert lake.query('SELECT * FROM "Odd"').to_pylist() == expected
        assert lake.query("SELECT * FROM Odd").to_pylist() == expected  # unquoted: folded to odd
        lake.compact()
        assert lake.query('SELECT * FROM "Odd"').to_pylist() == expected

        lake.add_column("Odd", "added", "TEXT")
        lake.execute("UPDATE \"Odd\" SET added = 'new' WHERE s = 1")
        lake.sync_now()
        lake.compact()
        lake.drop_column("Odd", "h")
        lake.execute("INSERT INTO \"Odd\" VALUES (3, 'k', 3.5, 'c3', 'e3', 'd3', NULL)")
        lake.sync_now()
        expected = [
            {"s": 1, "t": "k", "f": 0.5, "c": "c1b", "e": "e1", "d": "d1", "added": "new"},
            {"s": 3, "t": "k", "f": 3.5, "c": "c3", "e": "e3", "d": "d3", "added": None},
        ]
        assert lake.query('SELECT * FROM "Odd" ORDER BY s').to_pylist() == expected
        lake.compact()
        assert lake.query('SELECT * FROM "Odd" ORDER BY s').to_pylist() == expected
        if mode == "temporal":
            versions = lake.query('SELECT s, c, added FROM "Odd_history" ORDER BY _rhei_seq').to_pylist()
            assert versions == [
                {"s": 1, "c": "c1", "added": None},
                {"s": 2, "c": "c2", "added": None},
                {"s": 1, "c": "c1b", "added": None},
                {"s": 1, "c": "c1b", "added": "new"},
                {"s": 3, "c": "c3", "added": None},
            ]
