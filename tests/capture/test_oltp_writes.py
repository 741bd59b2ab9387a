"""execute_batch(): one transaction, all or nothing; mirrored tables cannot be altered behind the lake's back."""

from __future__ import annotations

import sqlite3

import pytest

from rhei_lake.errors import ConfigError, SchemaError, SourceError
from tests.support.oracle import assert_same_state, oltp_oracle


@pytest.fixture
def lake(htap_lake):
    lake = htap_lake(tier="memory")
    lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    lake.register_table("t")
    return lake


def _count(lake) -> int:
    return lake.query("SELECT count(*) AS n FROM t", hint="oltp").column(0)[0].as_py()


def test_batch_commits_everything_and_is_captured(durable_storage, htap_lake):
    with htap_lake(storage=durable_storage) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        lake.register_table("t")
        changed = lake.execute_batch(
            [("INSERT INTO t VALUES (?, ?)", (i, f"v{i}")) for i in range(500)]
            + ["UPDATE t SET v = 'big' WHERE id >= 490", ("DELETE FROM t WHERE id < :n", {"n": 10})]
        )
        assert changed == 500 + 10 + 10
        assert lake.sync_now().events == 520
        assert_same_state(lake, oltp_oracle(lake), "t")


def test_a_failing_statement_rolls_back_the_whole_batch(lake):
    lake.execute("INSERT INTO t VALUES (1, 'kept')")
    with pytest.raises(SourceError, match="statement 3 of 3 failed, nothing was applied") as caught:
        lake.execute_batch(
            [("INSERT INTO t VALUES (?, ?)", (2, "a")), "UPDATE t SET v = 'changed'", "INSERT INTO t VALUES (3, NULL)"]
        )
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    assert lake.query("SELECT * FROM t", hint="oltp").to_pylist() == [{"id": 1, "v": "kept"}]
    assert lake.sync_now().events == 1  # only the insert before the batch was ever captured
    lake.execute("BEGIN")  # refused while the failed batch left a transaction open
    lake.execute("ROLLBACK")


def test_transaction_control_inside_a_batch_is_refused(lake):
    for sneaky in ("COMMIT", "BEGIN", "ROLLBACK", "END", "SAVEPOINT _rhei_batch", "RELEASE _rhei_batch"):
        with pytest.raises(SourceError, match="execute_batch"):
            lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (1, "a")), sneaky, "INSERT INTO t VALUES (2, 'b')"])
        assert _count(lake) == 0, sneaky
    # the user's own savepoints inside a batch are fine
    lake.execute_batch(["SAVEPOINT mine", "INSERT INTO t VALUES (1, 'a')", "ROLLBACK TO mine", "RELEASE mine"])
    assert _count(lake) == 0


def test_batch_inside_an_open_transaction_is_a_savepoint(lake):
    lake.execute("BEGIN")
    lake.execute("INSERT INTO t VALUES (1, 'outer')")
    with pytest.raises(SourceError):
        lake.execute_batch(["INSERT INTO t VALUES (2, 'x')", "INSERT INTO t VALUES (2, 'dup')"])
    lake.execute_batch(["INSERT INTO t VALUES (3, 'inner')"])
    lake.execute("COMMIT")  # refused unless the outer transaction is still open
    assert [r["id"] for r in lake.query("SELECT id FROM t ORDER BY id", hint="oltp").to_pylist()] == [1, 3]


def test_bad_statement_shapes(lake):
    with pytest.raises(ConfigError, match="statement 2"):
        lake.execute_batch(["INSERT INTO t VALUES (1, 'a')", 42])
    assert lake.execute_batch([]) == 0
    assert _count(lake) == 0


def test_mirrored_tables_cannot_be_altered_with_execute(lake):
    lake.execute("CREATE TABLE free (id INTEGER PRIMARY KEY)")
    lake.execute("ALTER TABLE free ADD COLUMN note TEXT")  # not mirrored: fine
    for ddl in (
        "ALTER TABLE t ADD COLUMN extra TEXT",
        "ALTER TABLE T RENAME COLUMN v TO w",
        "ALTER TABLE t RENAME TO t2",
        "/* sneaky */ alter table t drop column v",
    ):
        with pytest.raises(SchemaError, match="add_column"):
            lake.execute(ddl)
        with pytest.raises(SchemaError, match="add_column"):
            lake.execute_batch([ddl])
    assert [r[1] for r in oltp_oracle(lake).execute("PRAGMA table_info(t)")] == ["id", "v"]
