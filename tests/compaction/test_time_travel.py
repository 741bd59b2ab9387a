"""Model-based: random workload, syncs and compactions at random points, time travel checked
against SQLite's recorded states and the full version list, on every tier."""

from __future__ import annotations

import os
import random
import sqlite3
from datetime import UTC, datetime

import pytest

import rhei_lake
from rhei_lake.timeutil import from_micros
from tests.support.history_model import HistoryModel, assert_same_history, lake_history
from tests.support.oracle import assert_same_state, lake_state
from tests.support.workload import SCHEMA, Workload, create_tables

KEYS = {"items": ("id",), "pairs": ("region", "code")}
STEPS = int(os.environ.get("RHEI_TIME_TRAVEL_STEPS", "45"))


def _as_of_forms(instant: int, index: int):
    """The three accepted spellings of an instant, in turn."""
    moment = from_micros(instant)
    if index % 3 == 0:
        return moment
    if index % 3 == 1:
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return instant / 1_000_000 if instant % 1000 == 0 else moment  # epoch seconds when exact


def _check_instants(lake: rhei_lake.Lake, model: HistoryModel) -> None:
    for index, (instant, states) in enumerate(model.instants):
        for table in KEYS:
            assert model.alive_at(table, instant) == states[table], "the model disagrees with SQLite"
            got = lake_state(lake, table, as_of=_as_of_forms(instant, index))
            assert got == states[table], f"{table} as of {from_micros(instant).isoformat()}"


def _check_hand_written_form(lake: rhei_lake.Lake, model: HistoryModel, table: str) -> None:
    """Rhei's own spelling of 'alive at T' on t_history, for a few instants."""
    cols = ", ".join(f'"{c}"' for c in lake.table_spec(table).column_names)
    for instant, states in model.instants[:: max(1, len(model.instants) // 4)]:
        t = from_micros(instant).strftime("%Y-%m-%dT%H:%M:%S.%f")
        result = lake.query(
            f"SELECT {cols} FROM {table}_history WHERE _rhei_valid_from <= TIMESTAMP '{t}' "
            f"AND (_rhei_valid_to IS NULL OR _rhei_valid_to > TIMESTAMP '{t}')"
        )
        from tests.support.oracle import _sort_key

        assert sorted((tuple(r.values()) for r in result.to_pylist()), key=_sort_key) == states[table]


@pytest.mark.parametrize("seed", [3])
def test_as_of_and_history_match_the_model(storage, tmp_path, seed):
    url, options = storage
    db = tmp_path / "app.db"
    reader = create_tables(db)
    lake = rhei_lake.open(
        oltp_path=str(db),
        storage=url,
        storage_options=options,
        tail_flush_segments=3,
        changelog_retention="0",  # every compaction expires what it folded: the views must not need it
    )
    try:
        for table in SCHEMA:
            lake.register_table(table)
        model = HistoryModel.watching(reader, KEYS)
        workload = Workload(seed, key_space=24)
        rng = random.Random(seed)
        model.record_instant()  # before anything exists
        compactions = 0
        for _ in range(STEPS):
            for _ in range(rng.randint(1, 6)):
                lake.execute(*workload.statement())
                model.apply()
            if rng.random() < 0.5:
                model.record_instant()
            roll = rng.random()
            if roll < 0.55:
                lake.sync_now()
            if roll < 0.2:
                lake.compact(vacuum_retention=rng.choice(["0", None]))
                compactions += 1
        lake.sync_now()
        model.record_instant()
        assert compactions >= 3 and len(model.instants) >= 10

        _check_instants(lake, model)
        for table in KEYS:
            assert_same_history(lake_history(lake, table), model.history(table), table)
            assert_same_state(lake, reader, table)
            _check_hand_written_form(lake, model, table)

        lake.compact(vacuum_retention="0")
        for table in KEYS:
            assert_same_history(lake_history(lake, table), model.history(table), table)
            folded = lake.query(f"SELECT count(*) AS n FROM {table}_changes").column(0)[0].as_py()
            assert folded == 0, "changelog_retention=0 expires every folded event"
        _check_instants(lake, model)
    finally:
        lake.close()


def test_as_of_accepts_datetime_iso_and_epoch(tmp_path):
    with rhei_lake.open(oltp_path=str(tmp_path / "a.db"), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        model = HistoryModel.watching(sqlite3.connect(tmp_path / "a.db", isolation_level=None), {"t": ("id",)})
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        model.apply()
        first = model.record_instant()
        lake.execute("UPDATE t SET v = 'b' WHERE id = 1")
        model.apply()
        lake.sync_now()
        moment = from_micros(first)
        local = moment.astimezone()
        for form in (moment, moment.isoformat(), first / 1_000_000, local, local.isoformat()):
            assert lake.query("SELECT v FROM t", as_of=form).to_pylist() == [{"v": "a"}], form
        assert lake.query("SELECT v FROM t").to_pylist() == [{"v": "b"}]
        assert lake.query("SELECT count(*) AS n FROM t", as_of=datetime(2000, 1, 1, tzinfo=UTC)).to_pylist() == [
            {"n": 0}
        ]
        with pytest.raises(rhei_lake.ConfigError, match="as_of"):
            lake.query("SELECT 1", as_of="yesterday")
