"""A sidecar's background sync against a faulty S3: 5xx, SlowDown and lost replies while it reads
the lake's state, commits and folds. The loop backs off and retries (every failure it reports is
transient, it never stops), and afterwards the lake equals the source with nothing lost or doubled.

The store sits behind the fault proxy (:mod:`tests.support.s3_fault_proxy`); the source is a
SQLite file the test writes to from its own connection while the loop runs.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest

import rhei_lake
from rhei_lake.errors import StorageUnavailableError
from tests.support.s3_fault_proxy import Rule
from tests.support.waiting import wait_for

START = datetime(2026, 3, 1, tzinfo=UTC)
CHANGES = r"/items/changes/"  # the Delta change feed: what polls read the lake's state from
COMMITS = r"/items/(_tail|changes)/"  # a sync commits to the tail; folding it commits to Delta
HISTORY = r"/items/history/"


class Source:
    """The application: writes ``items`` with an ``updated_at`` that moves on with every change."""

    def __init__(self, path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER, updated_at TEXT NOT NULL)")
        self.clock = START
        self.version = 0

    def _now(self) -> str:
        self.clock += timedelta(milliseconds=3)
        return self.clock.isoformat(sep=" ", timespec="microseconds")

    def round(self, number: int) -> None:
        """Inserts, updates and a hard delete: ten keys touched, one transaction each."""
        for i in range(10):
            key = (number * 7 + i * 3) % 40
            self.version += 1
            if i == 9:
                self.conn.execute("DELETE FROM items WHERE id = ?", (key,))
            else:
                self.conn.execute(
                    "INSERT INTO items VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET v = excluded.v, "
                    "updated_at = excluded.updated_at",
                    (key, self.version, self._now()),
                )

    def rows(self) -> dict[int, tuple]:
        return {r[0]: r for r in self.conn.execute("SELECT id, v, updated_at FROM items")}


def _lake_rows(lake) -> dict[int, tuple]:
    rows = lake.query("SELECT id, v, updated_at FROM items").to_pylist()
    return {r["id"]: (r["id"], r["v"], r["updated_at"]) for r in rows}


def _caught_up(lake, source: Source) -> bool:
    try:
        return _lake_rows(lake) == source.rows()
    except rhei_lake.RheiError as exc:  # a query may meet the fault too
        assert exc.transient, exc
        return False


def _assert_exact(url, options, source: Source) -> None:
    """A fresh reader sees the source's rows, every event once, and one open version per live key."""
    with rhei_lake.open(storage=url, storage_options=options) as reader:
        assert _lake_rows(reader) == source.rows()
        seqs = reader.query("SELECT _rhei_seq FROM items_changes").column(0).to_pylist()
        assert len(seqs) == len(set(seqs)), "an event was committed twice"
        assert sorted(seqs) == list(range(1, len(seqs) + 1)), "an event was lost"
        open_versions = reader.query(
            "SELECT id, count(*) AS n FROM items_history WHERE _rhei_valid_to IS NULL GROUP BY id"
        ).to_pylist()
        assert {r["id"]: r["n"] for r in open_versions} == dict.fromkeys(source.rows(), 1)


LASTING = 10**6  # until cleared

FAULTS = {
    "reading lake state: 503 SlowDown": [Rule("error", method="GET", path=CHANGES, times=LASTING, status=503)],
    "reading lake state: 500": [
        Rule("error", method="GET", path=CHANGES, times=LASTING, status=500, code="InternalError")
    ],
    "reading lake state: connection reset": [Rule("reset", method="GET", path=CHANGES, times=LASTING)],
    "committing: 503 SlowDown": [Rule("error", method="PUT", path=COMMITS, times=LASTING, status=503)],
    "committing: lost replies": [Rule("drop_reply", method="PUT", path=COMMITS, times=LASTING)],
    "everything: 500": [
        Rule("error", method=m, path=COMMITS, times=LASTING, status=500, code="InternalError")
        for m in ("GET", "PUT", "HEAD", "DELETE")
    ],
}


@pytest.mark.s3
@pytest.mark.parametrize("faults", list(FAULTS.values()), ids=list(FAULTS))
def test_sidecar_background_sync_retries_storage_faults_and_loses_nothing(proxy, faulty_s3, tmp_path, faults):
    """The fault lasts until the loop has failed on it three times; then the store comes back."""
    url, options = faulty_s3
    source = Source(tmp_path / "app.db")
    errors: list = []
    lake = rhei_lake.open(
        source=f"sqlite://{tmp_path / 'app.db'}",
        storage=url,
        storage_options=options,
        tables=[rhei_lake.PolledTable("items", updated_at="updated_at")],
        hard_delete_interval=0,
        tail_flush_segments=2,
        sync_max_backoff=0.3,
    )
    try:
        lake.add_sync_listener(lambda _report, error: error is not None and errors.append(error))
        for number in range(3):
            source.round(number)
            lake.sync_now()
        lake.flush()  # the lake's state is in Delta files now: polls read them
        lake.start_sync(0.05)
        for rule in faults:
            proxy.add(rule)
        number = 3
        deadline = time.monotonic() + 180
        while len(errors) < 3:
            assert time.monotonic() < deadline, f"the loop met no fault: {proxy.injected()}"
            source.round(number)
            number += 1
            time.sleep(0.1)
            status = lake.sync_status().loop
            assert status.state != "failed", status
        assert all(e.transient for e in errors), [str(e) for e in errors if not e.transient]
        assert lake.sync_status().loop.state in ("running", "backing_off")
        proxy.clear()
        source.round(number)
        wait_for(lambda: _caught_up(lake, source), 120, "catching up after the faults")
        # A cycle may commit everything and then fail on a request still in flight when the faults
        # stopped (the hard-delete scan reads the lake last): the next cycle finds the store whole.
        wait_for(lambda: lake.sync_status().loop.state == "running", 30, "the loop to run again")
        assert all(e.transient for e in errors), [str(e) for e in errors if not e.transient]
        lake.stop_sync()
    finally:
        proxy.clear()
        lake.close()
    _assert_exact(url, options, source)


@pytest.mark.s3
def test_folding_a_sidecar_table_under_storage_faults_is_transient_and_retried(proxy, faulty_s3, tmp_path):
    url, options = faulty_s3
    source = Source(tmp_path / "app.db")
    with rhei_lake.open(
        source=f"sqlite://{tmp_path / 'app.db'}",
        storage=url,
        storage_options=options,
        tables=[rhei_lake.PolledTable("items", updated_at="updated_at")],
        hard_delete_interval=0,
        changelog_retention="forever",  # every event stays in the feed, for the check at the end
    ) as lake:
        for number in range(5):
            source.round(number)
            lake.sync_now()
        lake.flush()
        for rule in (
            Rule("error", method="GET", path=CHANGES, times=40, status=503),
            Rule("error", method="PUT", path=HISTORY, times=40, status=500, code="InternalError"),
        ):
            proxy.add(rule)
            with pytest.raises(StorageUnavailableError) as failed:
                lake.compact()
            assert failed.value.transient and "\n" not in str(failed.value)
            proxy.clear()
        lake.compact()
        source.round(5)
        lake.sync_now()
        assert _lake_rows(lake) == source.rows()
    _assert_exact(url, options, source)
