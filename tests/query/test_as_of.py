"""``as_of`` queries on the durable tiers, once the changes live in Delta tables."""

from __future__ import annotations

import gc
import time

import rhei_lake
from rhei_lake.timeutil import from_micros, now_micros


def test_as_of_reads_delta_tables_after_the_query_returns_its_plan(durable_storage, engine, tmp_path):
    url, options = durable_storage
    with rhei_lake.open(
        oltp_path=str(tmp_path / "a.db"),
        storage=url,
        storage_options=options,
        tail_flush_segments=1,
        engine=engine,
    ) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 1.0)")
        lake.sync_now()
        lake.flush()
        time.sleep(0.01)
        before = from_micros(now_micros())
        time.sleep(0.01)
        lake.execute("UPDATE t SET v = 2")
        lake.sync_now()
        lake.flush()
        assert lake.query("SELECT v FROM t", as_of=before).to_pylist() == [{"v": 1.0}]
        df = lake.dataframe("SELECT v FROM t", as_of=before)
        gc.collect()  # the session that planned it must outlive nothing but the DataFrame
        assert df.to_arrow_table().to_pylist() == [{"v": 1.0}]
        assert lake.query("SELECT v FROM t").to_pylist() == [{"v": 2.0}]
