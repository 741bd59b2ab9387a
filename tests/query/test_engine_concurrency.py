"""One QueryEngine shared by many threads while syncs keep re-registering its views."""

from __future__ import annotations

import threading
import time

import rhei_lake


def test_queries_never_see_a_view_half_re_registered(engine, tmp_path):
    """Re-registration (deregister, then register) must not race with planning in other threads."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://", engine=engine) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        started = time.monotonic()

        def running() -> bool:  # 4 s and more than 50 queries (a loaded machine: up to 60 s)
            elapsed = time.monotonic() - started
            return elapsed < 60 and (elapsed < 4.0 or done[0] <= 50)

        errors: list[str] = []
        done = [0]

        def writer() -> None:
            i = 0
            while running() and not errors:
                i += 1
                lake.execute("INSERT INTO t VALUES (?, 'x')", (i,))
                lake.sync_now()

        def reader(streaming: bool) -> None:
            sql = "SELECT count(*) FROM t JOIN t_history h USING (id) JOIN t_changes c USING (id)"
            while running() and not errors:
                try:
                    if streaming:
                        list(lake.dataframe(sql).execute_stream())
                    else:
                        lake.query(sql)
                    done[0] += 1
                except rhei_lake.RheiError as exc:
                    errors.append(str(exc))

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(i > 0,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors[:3]
        assert done[0] > 50


def test_streams_execute_concurrently_outside_the_engine_lock(engine, tmp_path):
    """A slow consumer of one stream does not hold up planning or running other queries."""
    with rhei_lake.open(oltp_path=str(tmp_path / "app.db"), storage="memory://", engine=engine) as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) "
            "INSERT INTO t SELECT i, 'x' FROM n"
        )
        lake.sync_now()
        stream = lake.dataframe("SELECT * FROM t").execute_stream()
        first = next(iter(stream))  # the stream is open and paused mid-way
        assert first.to_pyarrow().num_rows > 0
        finished = threading.Event()

        def other() -> None:
            lake.query("SELECT count(*) FROM t")
            finished.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert finished.wait(10), "a query waited for another query's open stream"
        thread.join()
        assert sum(b.to_pyarrow().num_rows for b in stream) + first.to_pyarrow().num_rows == 20000
