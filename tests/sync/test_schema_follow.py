"""Schema changes made outside the API: followed (rebuilds, added columns) or stopped with a clear error.

SQLite is the oracle: after every sync the lake's current rows, its ``as_of``
reads at every marked instant and its history chains must match (floats by bits).
"""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

import rhei_lake
from rhei_lake.capture.sqlite_schema import quote_ident
from rhei_lake.errors import SchemaChangedError, SchemaError
from tests.support.mirror_check import MirrorCheck, lake_rows, sqlite_rows
from tests.support.oracle import oltp_oracle
from tests.support.sqlite_file_watch import connections_to
from tests.support.waiting import wait_for

DDL = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)"


def rebuild(table: str, columns: str, copied: str) -> list[str]:
    """An Alembic batch-mode rebuild: create a new table, copy, drop the old one, rename the new one."""
    temp = quote_ident(f"_alembic_tmp_{table}")
    return [
        f"CREATE TABLE {temp} ({columns})",
        f"INSERT INTO {temp} ({copied}) SELECT {copied} FROM {quote_ident(table)}",
        f"DROP TABLE {quote_ident(table)}",
        f"ALTER TABLE {temp} RENAME TO {quote_ident(table)}",
    ]


def run(conn: sqlite3.Connection, statements: list[str], *, transaction: bool) -> None:
    if transaction:
        conn.execute("BEGIN")
    for statement in statements:
        conn.execute(statement)
    if transaction:
        conn.execute("COMMIT")


def app_connection(lake: rhei_lake.Lake) -> sqlite3.Connection:
    """The application's own connection: no rhei_lake settings at all."""
    return sqlite3.connect(lake.config.oltp_path, isolation_level=None, timeout=30)


def seed(lake: rhei_lake.Lake, rows: int = 6) -> None:
    lake.execute(DDL)
    lake.register_table("t")
    lake.execute_batch(
        [("INSERT INTO t VALUES (?, ?, ?, ?)", (i, f"n{i}", i / 7, bytes([i]))) for i in range(1, rows + 1)]
    )
    lake.sync_now()


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
@pytest.mark.parametrize("in_transaction", [True, False], ids=["one-transaction", "autocommit"])
def test_a_rebuild_from_another_connection_is_followed_keeping_history(storage, tmp_path, mode, in_transaction):
    url, options = storage
    with rhei_lake.open(
        oltp_path=str(tmp_path / "app.db"), storage=url, storage_options=options, sync_mode=mode
    ) as lake:
        seed(lake)
        app = app_connection(lake)
        check = MirrorCheck(lake, app, "t")
        check.mark()
        # captured but not synced when the migration runs: committed with the old layout first
        lake.execute("UPDATE t SET name = 'before' WHERE id = 1")
        app.execute("INSERT INTO t VALUES (7, 'n7', 0.5, NULL)")
        time.sleep(0.002)  # SQLite's clock has millisecond resolution

        columns = "id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, note TEXT"
        run(app, rebuild("t", columns, "id, name, score, data"), transaction=in_transaction)
        # blind: the triggers went with DROP TABLE (which fired none of them)
        app.execute("UPDATE t SET name = 'blind' WHERE id = 2")
        app.execute("DELETE FROM t WHERE id = 3")
        app.execute("INSERT INTO t VALUES (8, 'n8', -0.0, x'00ff', 'new')")
        app.execute("UPDATE t SET note = 'only the new column' WHERE id = 4")
        app.execute("UPDATE t SET score = score WHERE id = 5")  # the same value: no change, no event
        app.execute("UPDATE t SET score = 42.0 WHERE id = 1")  # on top of a captured change

        report = lake.sync_now()
        assert report.events == 2 + 5  # the two captured, then one per row that differs
        assert lake.table_spec("t").column_names == ["id", "name", "score", "data", "note"]
        ops = lake.query("SELECT _rhei_op AS op, count(*) AS n FROM t_changes GROUP BY _rhei_op ORDER BY op")
        assert dict(zip(ops.column("op").to_pylist(), ops.column("n").to_pylist())) == {"D": 1, "I": 8, "U": 4}
        feed = lake.query("SELECT name, score, _rhei_ts FROM t_changes WHERE id = 1 ORDER BY _rhei_seq").to_pylist()
        assert [(e["name"], e["score"]) for e in feed] == [("n1", 1 / 7), ("before", 1 / 7), ("before", 42.0)]
        assert feed[1]["_rhei_ts"] < feed[2]["_rhei_ts"]  # the captured change keeps its own time
        check.mark()

        lake.execute("UPDATE t SET note = 'after', score = 1e300 WHERE id = 2")  # captured again
        app.execute("DELETE FROM t WHERE id = 8")
        app.execute("INSERT INTO t VALUES (9, 'n9', NULL, NULL, 'x')")
        assert lake.sync_now().events == 3
        check.mark()
        check.assert_all(history=mode == "temporal")
        lake.compact()
        check.assert_all(history=mode == "temporal")
        app.close()


def test_a_rebuild_through_execute_batch_is_followed_at_once(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        lake.execute("UPDATE t SET name = 'unsynced' WHERE id = 1")
        columns = "id INTEGER PRIMARY KEY, name VARCHAR(40), score REAL, data BLOB, flag INTEGER NOT NULL DEFAULT 0"
        lake.execute_batch([*rebuild("t", columns, "id, name, score, data"), "UPDATE t SET flag = 1 WHERE id = 2"])
        spec = lake.table_spec("t")
        assert spec.column_names == ["id", "name", "score", "data", "flag"]
        assert spec.column("name").declared_type == "VARCHAR(40)" and not spec.column("flag").nullable
        # followed inside execute_batch: the next writes are captured one by one, never blind
        lake.execute("UPDATE t SET flag = 2 WHERE id = 2")
        lake.execute("UPDATE t SET flag = 3 WHERE id = 2")
        lake.sync_now()
        check = MirrorCheck(lake, oltp_oracle(lake), "t")
        check.assert_all()
        flags = lake.query("SELECT flag FROM t_history WHERE id = 2 ORDER BY _rhei_seq").column("flag").to_pylist()
        assert flags == [None, 1, 2, 3]  # before the column existed; the batch's value; each later update


def test_a_rebuild_batch_inside_an_open_transaction_is_followed_once_it_commits(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        lake.execute("BEGIN")
        lake.execute_batch(
            rebuild("t", "id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, k INTEGER", "id, name, score, data")
        )
        lake.execute("UPDATE t SET k = 1 WHERE id = 1")
        with pytest.raises(SchemaChangedError, match="nothing was applied"):  # judged as a savepoint of it too
            lake.execute_batch(["DROP TABLE t"])
        lake.execute("COMMIT")
        lake.sync_now()
        assert lake.table_spec("t").column_names[-1] == "k"
        MirrorCheck(lake, oltp_oracle(lake), "t").assert_all()


def test_rebuilds_that_cannot_be_followed_roll_back_the_whole_batch(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        before = sqlite_rows(oltp_oracle(lake), "t")
        cases = {
            "primary key": rebuild("t", "id INTEGER, name TEXT, score REAL, data BLOB, PRIMARY KEY (id, name)", "*"),
            "no longer exists": ["CREATE TABLE t_copy AS SELECT * FROM t", "DROP TABLE t"],
            "gone and": rebuild("t", "id INTEGER PRIMARY KEY, label TEXT, score REAL, data BLOB", "id, score, data"),
            "now declared INTEGER": rebuild("t", "id INTEGER PRIMARY KEY, name TEXT, score INTEGER, data BLOB", "*"),
        }
        for change, statements in cases.items():
            statements = [s.replace("(*) SELECT *", "SELECT *") for s in statements]
            with pytest.raises(SchemaChangedError, match=f"nothing was applied.*'t'.*{change}") as caught:
                lake.execute_batch(statements)
            assert caught.value.table == "t"
            assert sqlite_rows(oltp_oracle(lake), "t") == before
            assert oltp_oracle(lake).execute(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '%tmp%' OR name = 't_copy'"
            ).fetchone() == (0,)
        lake.execute("INSERT INTO t VALUES (100, 'still captured', 0.0, NULL)")
        assert lake.sync_now().events == 1


def test_a_batch_is_judged_on_the_mirrored_tables_it_drops_only(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        lake.execute("CREATE TABLE other (id INTEGER PRIMARY KEY)")
        lake.register_table("other")
        app = app_connection(lake)
        app.execute("ALTER TABLE other RENAME TO other_away")  # refused at the next sync, not by this batch
        lake.execute_batch(["CREATE INDEX t_name ON t (name)", "UPDATE t SET name = 'x' WHERE id = 1"])
        with pytest.raises(SchemaChangedError, match="'other'"):
            lake.sync_now()
        app.close()


def test_dropping_a_mirrored_table_with_execute_is_refused(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        seed(lake, rows=1)
        for sql in ("DROP TABLE t", "drop table if exists T"):
            with pytest.raises(SchemaError, match="execute_batch.*unregister_table"):
                lake.execute(sql)
        assert sqlite_rows(oltp_oracle(lake), "t") != []
        lake.execute("CREATE TABLE scratch (x)")
        lake.execute("DROP TABLE scratch")  # not mirrored: fine


def test_a_column_added_by_another_connection_is_mirrored_with_the_writes_before_the_sync(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        app = app_connection(lake)
        check = MirrorCheck(lake, app, "t")
        check.mark()
        app.execute("ALTER TABLE t ADD COLUMN tags TEXT")
        app.execute("INSERT INTO t VALUES (10, 'n10', 1.5, NULL, 'tagged')")  # captured, without tags
        app.execute("UPDATE t SET tags = 'only tags' WHERE id = 1")  # not captured at all
        app.execute("UPDATE t SET name = 'renamed' WHERE id = 2")  # captured
        app.execute("ALTER TABLE t ADD COLUMN weight REAL DEFAULT 2.5")  # every row reads 2.5
        lake.sync_now()
        spec = lake.table_spec("t")
        assert spec.column_names == ["id", "name", "score", "data", "tags", "weight"]
        assert spec.column("tags").valid_from_seq > 0
        check.mark()
        app.execute("UPDATE t SET tags = 'captured now' WHERE id = 3")
        assert lake.sync_now().events == 1
        check.mark()
        check.assert_all()
        app.close()


REFUSED = [
    (
        "key",
        "BEGIN; CREATE TABLE n (id INTEGER, name TEXT, score REAL, data BLOB, PRIMARY KEY (name));"
        "INSERT INTO n SELECT * FROM t; DROP TABLE t; ALTER TABLE n RENAME TO t; COMMIT",
        "primary key changed",
    ),
    ("dropped", "DROP TABLE t", "no longer exists"),
    ("renamed-away", "ALTER TABLE t RENAME TO t_archive", "renamed to 't_archive'"),
    ("column-renamed", "ALTER TABLE t RENAME COLUMN name TO label", r"\['name'\] are gone and \['label'\] are new"),
    ("untyped-column-added", "ALTER TABLE t ADD COLUMN anything", "'anything' was added with a declared type"),
    (
        "retyped",
        "BEGIN; CREATE TABLE n (id INTEGER PRIMARY KEY, name TEXT, score TEXT, data BLOB);"
        "INSERT INTO n SELECT * FROM t; DROP TABLE t; ALTER TABLE n RENAME TO t; COMMIT",
        "'score' is now declared TEXT",
    ),
    (
        "retyped-untyped",
        "BEGIN; CREATE TABLE n (id INTEGER PRIMARY KEY, name TEXT, score, data BLOB);"
        "INSERT INTO n SELECT * FROM t; DROP TABLE t; ALTER TABLE n RENAME TO t; COMMIT",
        "'score' is now declared without a type",
    ),
]


@pytest.mark.parametrize(("change", "script", "message"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_change_the_lake_cannot_follow_stops_the_sync_naming_the_table(tmp_path, change, script, message):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        lake.execute("CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("other")
        app = app_connection(lake)
        app.execute("UPDATE t SET name = 'captured before the change' WHERE id = 1")
        app.executescript(script)
        app.execute("INSERT INTO other VALUES (1, 'x')")
        with pytest.raises(SchemaChangedError, match=f"table 't': .*{message}") as caught:
            lake.sync_now()
        assert caught.value.table == "t" and not caught.value.transient
        assert "unregister_table" in str(caught.value)
        assert "types=" not in str(caught.value)  # register_table refuses types= for a mirrored table
        # everything captured before the change is in the lake, in the layout it mirrors
        assert lake.query("SELECT name FROM t_changes WHERE id = 1 ORDER BY _rhei_seq").column(0).to_pylist()[-1] == (
            "captured before the change"
        )
        with pytest.raises(SchemaChangedError):  # it stays stopped: no silent divergence later
            lake.sync_now()
        lake.start_sync(0.05)
        wait_for(
            lambda: not lake.sync_status().loop.running,
            timeout=10,
            what="the background loop to stop on the terminal error",
        )
        # the documented way on: stop mirroring it; the other tables go on, t's history stays
        lake.unregister_table("t")
        assert lake.tables() == ["other"]
        lake.sync_now()
        assert lake_rows(lake, "other") == sqlite_rows(app, "other")
        app.close()
    with rhei_lake.open(storage=str(tmp_path / "lake")) as reader:
        assert "t" in reader.tables() and reader.query("SELECT count(*) AS n FROM t").column(0)[0].as_py() == 6


def test_undoing_a_refused_change_lets_the_sync_go_on(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        app = app_connection(lake)
        app.execute("ALTER TABLE t RENAME TO t_old")
        app.execute("UPDATE t_old SET name = 'while renamed' WHERE id = 1")  # the triggers moved along
        with pytest.raises(SchemaChangedError, match="renamed to 't_old'"):
            lake.sync_now()
        app.execute("ALTER TABLE t_old RENAME TO t")  # e.g. the rest of a rename-first migration
        app.execute("UPDATE t SET name = 'back' WHERE id = 2")
        lake.sync_now()
        MirrorCheck(lake, app, "t").assert_all()
        app.close()


def test_dropping_a_mirrored_column_from_another_connection_is_refused_by_sqlite(tmp_path):
    """The triggers read every column, so SQLite itself refuses; the table and capture stay as they were."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://") as lake:
        seed(lake, rows=2)
        app = app_connection(lake)
        with pytest.raises(
            sqlite3.OperationalError, match=r"error in trigger _rhei_cdc_\w+ after drop column: no such column"
        ):
            app.execute("ALTER TABLE t DROP COLUMN score")
        assert [r[1] for r in app.execute("PRAGMA table_info(t)")] == ["id", "name", "score", "data"]
        app.execute("UPDATE t SET score = 9 WHERE id = 1")
        assert lake.sync_now().events == 1
        app.close()


def test_a_rebuild_without_a_column_is_followed_like_drop_column(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        app = app_connection(lake)
        check = MirrorCheck(lake, app, "t")
        run(app, rebuild("t", "id INTEGER PRIMARY KEY, name TEXT, data BLOB", "id, name, data"), transaction=True)
        app.execute("UPDATE t SET name = 'blind' WHERE id = 1")
        lake.sync_now()
        assert lake.table_spec("t").column_names == ["id", "name", "data"]
        check.mark()
        check.assert_all()
        assert lake.query("SELECT count(*) FROM t_changes").column(0)[0].as_py() == 6 + 1  # the rebuild alone: none
        app.close()


def test_a_followed_change_that_derives_no_event_still_reaches_the_views_and_readers(tmp_path):
    url = str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=url) as lake:
        seed(lake)
        app = app_connection(lake)
        run(app, rebuild("t", "id INTEGER PRIMARY KEY, name TEXT, score REAL", "id, name, score"), transaction=True)
        assert lake.sync_now().events == 0
        assert lake.query("SELECT * FROM t", hint="olap").column_names == ["id", "name", "score"]
        with rhei_lake.open(storage=url) as reader:
            assert reader.table_spec("t").column_names == ["id", "name", "score"]
        app.close()


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
@pytest.mark.parametrize("where", ["api", "outside"])
@pytest.mark.parametrize("folded", [False, True], ids=["unfolded", "folded"])
def test_a_dropped_and_re_added_column_reads_null_where_sqlite_does(tmp_path, mode, where, folded):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake"), sync_mode=mode) as lake:
        seed(lake)
        app = app_connection(lake)
        check = MirrorCheck(lake, app, "t")
        if folded:
            lake.compact()
        if where == "api":
            lake.drop_column("t", "score")
        else:
            run(app, rebuild("t", "id INTEGER PRIMARY KEY, name TEXT, data BLOB", "id, name, data"), transaction=True)
        app.execute("INSERT INTO t VALUES (50, 'between', NULL)")
        lake.sync_now()
        check.mark()
        if where == "api":
            lake.add_column("t", "score", "REAL")
        else:
            app.execute("ALTER TABLE t ADD COLUMN score REAL")
        app.execute("UPDATE t SET score = 0.25 WHERE id = 2")
        app.execute("INSERT INTO t VALUES (51, 'after', NULL, -1.5)")
        lake.sync_now()
        if folded:
            lake.compact()
        check.mark()
        scores = dict(lake.query("SELECT id, score FROM t", hint="olap").to_pylist()[i].values() for i in range(8))
        assert scores == {1: None, 2: 0.25, 3: None, 4: None, 5: None, 6: None, 50: None, 51: -1.5}
        check.assert_all(history=mode == "temporal")
        target = tmp_path / "restored.db"
        lake.restore_sqlite(target)
        restored = sqlite3.connect(target)
        assert sqlite_rows(restored, "t") == sqlite_rows(app, "t")
        restored.close()
        # the old values are still in storage, for any Delta reader
        lake.flush()
        stored = lake.storage.table_store("t", "changes").to_arrow()
        assert 1 / 7 in stored.column("score").to_pylist()
        app.close()


def test_a_change_made_while_the_lake_was_closed_is_followed_on_reopen(tmp_path):
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        seed(lake)
        lake.execute("UPDATE t SET name = 'unsynced at close' WHERE id = 6")
    app = sqlite3.connect(db, isolation_level=None)
    run(
        app,
        rebuild(
            "t", "id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, extra INTEGER", "id, name, score, data"
        ),
        transaction=True,
    )
    app.execute("UPDATE t SET extra = 1 WHERE id = 1")
    app.execute("DELETE FROM t WHERE id = 2")
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        lake.sync_now()
        check = MirrorCheck(lake, app, "t")
        check.mark()
        app.execute("UPDATE t SET extra = 2 WHERE id = 1")
        lake.sync_now()
        check.mark()
        check.assert_all()
        assert lake.query("SELECT name FROM t_history WHERE id = 6 ORDER BY _rhei_seq").column(0).to_pylist() == [
            "n6",
            "unsynced at close",
        ]
    app.close()


def test_writes_racing_the_follow_are_captured_or_reconciled_exactly_once(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake, rows=20)
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            conn = app_connection(lake)
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    columns = [r[1] for r in conn.execute("PRAGMA table_info(t)")]
                    if "n" in columns:
                        conn.execute("INSERT OR REPLACE INTO t (id, name, n) VALUES (?, ?, ?)", (i % 40, f"w{i}", i))
                    else:
                        conn.execute("INSERT OR REPLACE INTO t (id, name) VALUES (?, ?)", (i % 40, f"w{i}"))
                    if i % 7 == 0:
                        conn.execute("DELETE FROM t WHERE id = ?", ((i * 3) % 40,))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                conn.close()

        thread = threading.Thread(target=writer)
        thread.start()
        migrator = app_connection(lake)
        try:
            for round_ in range(4):
                time.sleep(0.05)
                lake.sync_now()
                columns = "id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB" + (", n INTEGER" if round_ else "")
                copied = "id, name, score, data" + (", n" if round_ > 1 else "")
                run(migrator, rebuild("t", columns, copied), transaction=True)
        finally:
            stop.set()
            thread.join()
        assert not errors, errors
        lake.sync_now()
        seqs = lake.query("SELECT _rhei_seq FROM t_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)) and len(seqs) > 40
        MirrorCheck(lake, migrator, "t").assert_all()
        migrator.close()


def test_a_sync_with_no_schema_change_reads_only_the_schema_cookie(tmp_path):
    db = tmp_path / "app.db"
    with connections_to(db) as connections, rhei_lake.open(oltp_path=str(db), storage="memory://") as lake:
        seed(lake, rows=1)
        lake.sync_now()  # the first sync after registering judges the tables once
        lake.execute("UPDATE t SET name = 'x' WHERE id = 1")
        lake.sync_engine.wait_idle(10)  # the first sync's upkeep is not this sync's work
        with connections.statements() as statements:
            assert lake.sync_now().events == 1
        assert sum("schema_version" in s for s in statements) == 1
        assert not [s for s in statements if "sqlite_master" in s or "table_xinfo" in s or "_rhei_schema" in s]


def test_a_table_registered_before_fingerprints_is_checked_once_and_gets_no_events(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        lake.execute("DROP TABLE _rhei_schema")  # as an older rhei_lake left the database
        assert lake.sync_now().events == 0
        assert oltp_oracle(lake).execute("SELECT name FROM _rhei_schema").fetchall() == [("t",)]
        lake.execute("UPDATE t SET name = 'x' WHERE id = 1")
        assert lake.sync_now().events == 1


def test_unregistered_tables_keep_their_history_and_cannot_be_laid_over(tmp_path):
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    with rhei_lake.open(oltp_path=db, storage=url) as lake:
        seed(lake)
        lake.execute("UPDATE t SET name = 'last captured' WHERE id = 1")  # committed by unregister_table
        lake.unregister_table("T")
        assert lake.tables() == []
        lake.execute("DROP TABLE t")  # not mirrored any more: allowed
        assert oltp_oracle(lake).execute(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE '_rhei_cdc_%_t'"
        ).fetchone() == (0,)
        lake.execute(DDL)
        with pytest.raises(SchemaError, match="already holds its history"):
            lake.register_table("t")
        assert lake.tables() == []
    with rhei_lake.open(storage=url) as reader:
        assert reader.query("SELECT name FROM t WHERE id = 1").column(0).to_pylist() == ["last captured"]


def test_rows_written_blind_are_compared_with_the_lake_by_their_bits(tmp_path):
    """A typeless column (BLOB affinity) keeps -0.0 apart from 0.0; a blind change between them is an event."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        lake.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, x)")
        lake.register_table("m", types={"x": "REAL"})
        lake.execute_batch([("INSERT INTO m VALUES (?, ?)", (i, v)) for i, v in enumerate([0.0, -0.0, 1.5, 2.0])])
        lake.sync_now()
        app = app_connection(lake)
        run(app, rebuild("m", "id INTEGER PRIMARY KEY, x", "id, x"), transaction=True)
        app.execute("UPDATE m SET x = -0.0 WHERE id = 0")
        app.execute("UPDATE m SET x = 0.0 WHERE id = 1")
        app.execute("UPDATE m SET x = 1.5 WHERE id = 2")  # the same bits: no event
        assert lake.sync_now().events == 2
        assert lake_rows(lake, "m") == sqlite_rows(app, "m")
        app.close()


@pytest.mark.parametrize("columnar_min_rows", [0, 1], ids=["row-read", "columnar-read"])
def test_a_blind_value_that_does_not_fit_stops_the_follow_until_it_is_fixed(tmp_path, columnar_min_rows):
    from rhei_lake.capture.reader_process import fast_reader_available

    if columnar_min_rows and not fast_reader_available():
        pytest.skip("the ADBC reader is not installed")
    db = str(tmp_path / "app.db")
    with rhei_lake.open(oltp_path=db, storage=str(tmp_path / "lake"), columnar_min_rows=columnar_min_rows) as lake:
        seed(lake)
        app = app_connection(lake)
        run(
            app,
            rebuild(
                "t", "id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB, n INTEGER", "id, name, score, data"
            ),
            transaction=True,
        )
        app.execute("UPDATE t SET n = 'not a number' WHERE id = 3")
        app.execute("UPDATE t SET n = 7 WHERE id = 4")
        with pytest.raises(rhei_lake.TypeMismatchError, match="'t', column 'n', row id=3") as caught:
            lake.sync_now()
        assert caught.value.table == "t" and caught.value.primary_key == {"id": 3}
        assert lake.table_spec("t").column_names == ["id", "name", "score", "data"]  # nothing followed yet
        app.execute("UPDATE t SET n = 3 WHERE id = 3")
        lake.sync_now()
        check = MirrorCheck(lake, app, "t")
        check.mark()
        check.assert_all()
        app.close()


def test_a_write_captured_between_reading_the_lake_and_taking_the_lock_gets_no_second_event(tmp_path, monkeypatch):
    from rhei_lake.sync import schema_follow

    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage=str(tmp_path / "lake")) as lake:
        seed(lake)
        app = app_connection(lake)
        app.execute("ALTER TABLE t ADD COLUMN m INTEGER")  # the old triggers go on capturing
        read_lake = schema_follow.LakeSide.__init__

        def then_write(self, *args, **kwargs):
            read_lake(self, *args, **kwargs)
            app.execute("UPDATE t SET name = 'slipped in' WHERE id = 1")  # captured, committed under the lock

        monkeypatch.setattr(schema_follow.LakeSide, "__init__", then_write)
        assert lake.sync_now().events == 1
        check = MirrorCheck(lake, app, "t")
        check.mark()
        check.assert_all()
        app.close()


@pytest.mark.parametrize("columnar_min_rows", [0, 1], ids=["rows", "columnar"])
def test_events_committed_before_a_rebuild_are_not_read_again_in_the_new_layout(tmp_path, columnar_min_rows):
    """A reopened lake reads the CDC log from the oldest watermark of its tables (an idle table's lags), so
    it meets events of a rebuilt table logged, and committed, before the rebuild: they are passed over, not
    decoded positionally in the new layout (there ``a``'s digits would be ``b``'s and stop the sync)."""
    from rhei_lake.capture.reader_process import fast_reader_available

    if columnar_min_rows and not fast_reader_available():
        pytest.skip("the ADBC reader is not installed")
    db, url = str(tmp_path / "app.db"), str(tmp_path / "lake")
    options = {"oltp_path": db, "storage": url, "columnar_min_rows": columnar_min_rows}
    app = sqlite3.connect(db, isolation_level=None, timeout=30)
    with rhei_lake.open(**options) as lake:
        lake.execute("CREATE TABLE idle (id INTEGER PRIMARY KEY, v TEXT)")
        lake.execute("CREATE TABLE mig (id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c REAL)")
        lake.register_table("idle")
        lake.register_table("mig")
        lake.execute("INSERT INTO mig VALUES (1, 'x', 1, 0.5)")
        lake.sync_now()
        # captured, not synced when the rebuild runs
        lake.execute("INSERT INTO mig VALUES (5, '20212566361', NULL, -0.0)")
        lake.execute("UPDATE mig SET a = 'text', b = 2 WHERE id = 1")
    run(app, rebuild("mig", "id INTEGER PRIMARY KEY, b INTEGER, c REAL", "id, b, c"), transaction=True)
    with rhei_lake.open(**options) as lake:
        lake.sync_now()  # commits the captured events in the old layout, then follows
        assert lake.table_spec("mig").column_names == ["id", "b", "c"]
    with rhei_lake.open(**options) as lake:
        assert lake.sync_now().events == 0
        check = MirrorCheck(lake, app, "mig")
        check.mark()
        check.assert_all()
        lake.drop_column("mig", "b")
        lake.execute("INSERT INTO mig VALUES (6, 1.5)")
        lake.sync_now()
        check.mark()
        check.assert_all()
        seqs = lake.query("SELECT _rhei_seq FROM mig_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)), "an event was committed twice"
    app.close()
