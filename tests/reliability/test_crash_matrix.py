"""The crash matrix: SIGKILL sync, compaction, snapshots, schema changes and restore at many points, on local and S3.

Each scenario runs children (:mod:`tests.support.crash_child`) on one lake and
kills them: at named fault points (:mod:`rhei_lake.faults`), inside a Delta
commit (a kill timed at random within the commit's window), and at random
moments. After every kill the lake is checked as a fresh reader sees it (see
:mod:`tests.reliability.crash_lab`); at the end a child finishes the work and
the lake must equal SQLite exactly.

The default run tries a few dozen kill points; ``RHEI_CRASH_FULL=1`` (CI's
reliability step) runs the whole matrix, well over a hundred.
"""

from __future__ import annotations

import random
import sqlite3

import pytest

import rhei_lake
from tests.reliability import summary
from tests.reliability.crash_lab import CrashLab, Kill, record
from tests.support.oracle import sqlite_state
from tests.support.workload import SCHEMA, Workload

FULL = summary.FULL

SYNC_POINTS = (
    "sync.after_read_before_commit",
    "changelog.before_commit",
    "blob.after_data_before_commit",
    "changelog.after_commit",
    "sync.after_commit_before_prune",
    "cdc.before_prune_commit",
    "flush.before_commit",
    "flush.after_commit_before_discard",
)
REGISTER_POINTS = ("snapshot.before_start", "snapshot.after_commit_before_ready")
SCHEMA_POINTS = ("schema.after_lake_prepare", "schema.after_source_commit", "schema.mid_apply_spec")
RESTORE_POINTS = ("restore.after_table", "restore.before_rename")
COMPACT_POINTS = (
    "fold.before_commit",
    "delta.rewrite_before_commit",
    "fold.after_commit",
    "compact.after_fold",
    "compact.before_vacuum",
    "flush.before_commit",
    "sync.after_commit_before_prune",
    "compact.feed_packed",
)
# A kill at a random moment inside the Delta write that follows this point (a flush, a snapshot).
WINDOW = "delta.before_commit=kill~80"


def _plan(scenario: str, tier: str, rng: random.Random) -> list[Kill]:
    """The kills of one scenario on one tier. S3 children are slow to start, so S3 gets fewer repeats."""
    points = {
        "sync": SYNC_POINTS,
        "register": REGISTER_POINTS,
        "schema": SCHEMA_POINTS,
        "restore": RESTORE_POINTS,
        "compact": COMPACT_POINTS,
    }
    chosen = [p for p in points[scenario] if tier == "local" or p != "blob.after_data_before_commit"]
    if not FULL and tier == "s3":
        chosen = chosen[::2]
    repeats = (3 if tier == "local" else 1) if FULL else 1
    # A registering child reaches the snapshot points once (one new table per child).
    hits = 1 if scenario == "register" else 5
    kills = [Kill(spec=f"{p}=kill@{rng.randint(1, hits)}") for p in chosen for _ in range(repeats)]
    if scenario != "restore":
        kills += [Kill(spec=f"{WINDOW}@{rng.randint(1, 4)}") for _ in range(repeats + (1 if FULL else 0))]
    randoms = 1
    if FULL:
        randoms = (6 if scenario == "sync" else 3) if tier == "local" else 2
    kills += [Kill(after=rng.uniform(0.05, 1.5)) for _ in range(randoms)]
    if FULL:
        kills += [Kill(after=rng.uniform(0.2, 1.2), before_ready=True) for _ in range(2 if tier == "local" else 1)]
    rng.shuffle(kills)
    return kills


def _lake(tier: str, tmp_path, request) -> tuple[str, dict[str, str]]:
    if tier == "local":
        return str(tmp_path / "lake"), {}
    return request.getfixturevalue("s3_lake")


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["local", pytest.param("s3", marks=pytest.mark.s3)])
@pytest.mark.parametrize("scenario", ["sync", "register", "schema", "compact"])
def test_kills_lose_and_double_nothing(scenario, tier, tmp_path, request):
    url, options = _lake(tier, tmp_path, request)
    lab = CrashLab(tmp_path, url, options, scenario, seed=sum(map(ord, scenario + tier)))
    rng = random.Random(f"{scenario}-{tier}")
    for kill in _plan(scenario, tier, rng):
        if scenario == "register":
            lab.add_snapshot_table(rows=rng.randint(0, 3000 if tier == "local" else 800))
        outcome = lab.run(kill)
        if kill.spec and not outcome.killed:
            raise AssertionError(f"the child finished without reaching {kill.spec}")
        if outcome.killed:
            lab.check()
    lab.finish()
    committed = lab.check(final=True)
    assert sum(committed.values()) > 30, f"too few events to prove anything: {committed}"
    assert all(o.killed for o in lab.outcomes), [o.kill.label for o in lab.outcomes if not o.killed]
    record(lab)


@pytest.mark.slow
@pytest.mark.parametrize("tier", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_killed_restore_leaves_the_old_file_or_a_complete_new_one(tier, tmp_path, request):
    url, options = _lake(tier, tmp_path, request)
    lab = CrashLab(tmp_path, url, options, "restore")
    with rhei_lake.open(oltp_path=str(lab.db), storage=url, storage_options=options) as lake:
        for table in SCHEMA:
            lake.register_table(table)
        Workload(5).run(lake.execute, 300)
        lake.sync_now()
    source = sqlite3.connect(lab.db)
    expected = {table: sqlite_state(source, table) for table in SCHEMA}
    source.close()
    target = tmp_path / "restored.db"
    lab.env["RHEI_RESTORE_TARGET"] = str(target)
    lake_files = _listing(url, options)
    rng = random.Random(f"restore-{tier}")
    for kill in _plan("restore", tier, rng):
        outcome = lab.run(kill)
        if kill.spec and not outcome.killed:
            raise AssertionError(f"the restore finished without reaching {kill.spec}")
        if target.exists():  # absent until a first restore completes; never partial
            restored = sqlite3.connect(target)
            try:
                assert restored.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                for table, rows in expected.items():
                    assert sqlite_state(restored, table) == rows, f"{table}: the restored file is not complete"
            finally:
                restored.close()
    assert _listing(url, options) == lake_files, "a restore wrote to the lake"
    assert any(o.killed for o in lab.outcomes)
    record(lab)


def _listing(url: str, options: dict[str, str]) -> list[tuple[str, int]]:
    from rhei_lake.storage.lake_storage import open_storage
    from rhei_lake.storage.location import parse_storage_url

    storage = open_storage(parse_storage_url(url, options))
    return [(b.key, b.size) for b in storage.blobs.list("") if not b.key.startswith("_rhei/leases/")]


@pytest.mark.parametrize("tier", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_new_lake_killed_before_its_first_snapshot_is_snapshotted_again(tier, tmp_path, request):
    """A database mirrored before, pointed at a new lake: the first open creates each changelog and
    re-snapshots the table. Killed between the two, the next open must not mistake the empty
    changelog for a lake that lost committed events (it used to raise WatermarkError)."""
    url, options = _lake(tier, tmp_path, request)
    lab = CrashLab(tmp_path, url, options, "sync")
    with rhei_lake.open(oltp_path=str(lab.db), storage="memory://") as elsewhere:
        for table in SCHEMA:
            elsewhere.register_table(table)
        Workload(3).run(elsewhere.execute, 100)
        elsewhere.sync_now()  # prunes the CDC log: these events are only in that (now gone) lake
    conn = sqlite3.connect(lab.db, isolation_level=None)
    conn.execute("DELETE FROM audit")  # the new lake starts from a snapshot of the current rows
    conn.close()
    outcome = lab.run(Kill(spec="snapshot.before_start=kill"))
    assert outcome.killed
    lab.check()
    lab.run(Kill(after=0.3))
    lab.finish()
    lab.check(final=True)
    record(lab)
