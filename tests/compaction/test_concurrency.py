"""A sync and compactions running at the same time lose nothing and double nothing."""

from __future__ import annotations

import random
import threading
import time
import uuid

import rhei_lake
from rhei_lake.catalog import SEQ
from tests.support.history_model import HistoryModel, assert_same_history, lake_history
from tests.support.oracle import assert_same_state
from tests.support.workload import SCHEMA, Workload, create_tables

KEYS = {"items": ("id",), "pairs": ("region", "code")}


def _run_threads(*targets) -> None:
    errors: list[BaseException] = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # re-raised in the test thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guard(fn)) for fn in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    if errors:
        raise errors[0]


def test_concurrent_sync_and_compactions_lose_nothing(storage, tmp_path):
    url, options = storage
    if url.startswith("memory://"):
        url = f"memory://shared-{uuid.uuid4().hex}"  # a second handle must see the same lake
    db = tmp_path / "app.db"
    reader = create_tables(db)
    app = rhei_lake.open(oltp_path=str(db), storage=url, storage_options=options, tail_flush_segments=2)
    try:
        for table in SCHEMA:
            app.register_table(table)
        model = HistoryModel.watching(reader, KEYS)
        workload = Workload(21, key_space=30)
        rng = random.Random(21)
        # A second handle with nothing but the URL, as a separate compaction job would have;
        # it expires what it folds, so its deletes race the app's flushes too.
        job = rhei_lake.open(storage=url, storage_options=options, changelog_retention="0")
        done = threading.Event()
        runs = {"job": 0, "app": 0}
        rounds = {"writer": 0}
        started = time.monotonic()

        def writer() -> None:
            # Both compactors must finish three runs while the writer writes; a compaction on
            # S3 under load can take many seconds, so the bound is time, not rounds.
            deadline = started + 240
            try:
                while rounds["writer"] < 40 or (min(runs.values()) < 3 and time.monotonic() < deadline):
                    rounds["writer"] += 1
                    for _ in range(rng.randint(1, 8)):
                        app.execute(*workload.statement())
                        model.apply()
                    app.sync_now()
            finally:
                done.set()

        def job_compactor() -> None:
            while not done.is_set():
                job.compact()  # default retention: files another reader may still use are kept
                runs["job"] += 1

        def app_compactor() -> None:
            while not done.wait(0.05):
                app.compact()
                runs["app"] += 1

        _run_threads(writer, job_compactor, app_compactor)
        assert min(runs.values()) >= 3, (runs, rounds, f"{time.monotonic() - started:.0f}s")

        app.sync_now()
        app.compact()
        app.refresh()
        for table in SCHEMA:
            assert_same_history(lake_history(app, table), model.history(table), table)
            stored = app.storage.table_store(table, "history").to_arrow(columns=[SEQ]).column(0).to_pylist()
            assert len(stored) == len(set(stored)), f"{table}: a version was folded twice"
            seqs = app.query(f"SELECT _rhei_seq FROM {table}_changes").column(0).to_pylist()
            assert len(seqs) == len(set(seqs)), f"{table}: an event is in the change feed twice"
            assert_same_state(app, reader, table)
        job.close()
    finally:
        app.close()
