"""``updated_at`` spelled in more than one way: every row is read by the next poll, as its instant.

SQLite orders text by bytes, so ``'2026-01-02 11:00'`` sorts before
``'2026-01-02T10:00'``, an offset sorts by local time and every number before
every text. The cursor still compares as SQLite orders (an index serves it); the
rows another spelling sorts before the cursor are found by index ranges around
it (:mod:`rhei_lake.capture.updated_at_order`). These tests write random
spellings of random instants, also while a poll is reading, with the key scan
off (nothing may wait for it), and compare the lake with SQLite after each sync.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rhei_lake
from rhei_lake.capture.updated_at_order import earliest_local_date, spelling_glob, unordered_sql

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNIT_MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1}
MIN_INSTANT = int((datetime(1001, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()) * 1_000_000
MAX_INSTANT = int((datetime(9998, 1, 1, tzinfo=UTC) - EPOCH).total_seconds()) * 1_000_000
DAY = 86_400_000_000
# RHEI_SIDECAR_EXAMPLES=500 runs a longer soak.
SETTINGS = settings(
    max_examples=int(os.environ.get("RHEI_SIDECAR_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def instant_of(value, unit: str) -> int:
    """What ``updated_at`` means, by the documented rules (independent of the engine's code)."""
    if isinstance(value, int):
        return value * UNIT_MICROS[unit]
    dt = datetime.fromisoformat(value.strip())
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@st.composite
def spellings(draw, instant: int, unit: str, numbers: bool, fraction_digits: int = 9, offset_hours: int = 23):
    """One of the ways to store ``instant`` in updated_at that read back as it (the date/time text
    SQLite's date functions read: ``YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]][Z|+-HH:MM]``, or a number)."""
    if numbers and instant % UNIT_MICROS[unit] == 0 and draw(st.integers(0, 4)) == 0:
        return instant // UNIT_MICROS[unit]
    zone = draw(st.sampled_from(["naive", "Z", "offset", "offset"]))
    longest = offset_hours * 60 + 59
    minutes = draw(st.integers(-longest, longest)) if zone == "offset" else 0
    local = EPOCH + timedelta(microseconds=instant + minutes * 60_000_000)
    date = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    sep = draw(st.sampled_from(["T", " "]))
    clock = f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    digits = f"{local.microsecond:06d}".rstrip("0")
    length = draw(st.integers(len(digits), fraction_digits))
    fraction = "." + digits.ljust(length, "0") if length else ""
    if local.second == 0 and not fraction and draw(st.booleans()):
        clock = clock[:5]  # HH:MM takes no fraction: a fraction belongs to the seconds
    if zone == "naive":
        suffix = ""
    elif zone == "Z":
        suffix = draw(st.sampled_from(["Z", "+00:00", "-00:00"]))
    else:
        sign = "-" if minutes < 0 else "+"
        h, m = divmod(abs(minutes), 60)
        suffix = f"{sign}{h:02d}:{m:02d}"
    return f"{date}{sep}{clock}{fraction}{suffix}"


def _assert_lake_equals_source(lake, conn, unit: str) -> None:
    source = {key: (v, instant_of(u, unit)) for key, v, u in conn.execute("SELECT id, v, updated_at FROM items")}
    rows = lake.query("SELECT id, v, _rhei_valid_from FROM items_history WHERE _rhei_valid_to IS NULL").to_pylist()
    lake_rows = {r["id"]: (r["v"], instant_of(r["_rhei_valid_from"].isoformat(), unit)) for r in rows}
    assert lake_rows == source


@given(data=st.data())
@SETTINGS
def test_mixed_updated_at_spellings_are_read_by_the_next_poll(tmp_path_factory, data):
    declared = data.draw(st.sampled_from(["DATETIME", "TEXT", "TIMESTAMP"]), label="declared")
    indexed = data.draw(st.booleans(), label="indexed")
    unit = data.draw(st.sampled_from(["s", "ms", "us"]), label="unit")
    scan = data.draw(st.booleans(), label="key scan every sync, and hard deletes")
    # A TEXT column stores a number as its digits, which are no ISO time; a DATETIME column's own
    # values read numbers as epoch seconds, whatever epoch_unit says of updated_at.
    numbers = declared != "TEXT" and unit == "s"
    path = tmp_path_factory.mktemp("src") / "app.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER, updated_at {declared} NOT NULL)")
    if indexed:
        conn.execute("CREATE INDEX items_updated ON items (updated_at)")
    base = data.draw(st.integers(MIN_INSTANT, MAX_INSTANT - 400 * DAY), label="start")
    counter = iter(range(1, 10**9))
    top = base  # the newest instant written so far

    def writes(count: int, label: str, start: int, ascending: bool) -> list[tuple[int, int, object]]:
        """``(instant, key, updated_at)``: instants from ``start`` on, in any order or strictly ascending."""
        out = []
        instant = start
        for _ in range(count):
            step = data.draw(st.integers(0, 2 * DAY), label=f"{label}: after")
            instant = instant + 1 + step if ascending else start + step
            out.append(
                (
                    instant,
                    data.draw(st.integers(1, 12), label=f"{label}: key"),
                    data.draw(spellings(instant, unit, numbers), label=f"{label}: updated_at"),
                )
            )
        return out

    def write(instant: int, key: int, spelled: object) -> None:
        nonlocal top
        top = max(top, instant)
        conn.execute(
            "INSERT INTO items VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET v = excluded.v, "
            "updated_at = excluded.updated_at",
            (key, next(counter), spelled),
        )

    def delete_some() -> None:
        for key in data.draw(st.lists(st.integers(1, 12), max_size=3), label="hard deletes"):
            conn.execute("DELETE FROM items WHERE id = ?", (key,))

    table = rhei_lake.PolledTable("items", updated_at="updated_at", epoch_unit=unit, hard_deletes=scan)
    storage = str(tmp_path_factory.mktemp("lake"))
    # hard_delete_interval: with the scan on it runs every sync (and mends what a poll missed, so the
    # poll alone is what the runs without it check); 10**6 s never comes round within a test.
    with rhei_lake.open(
        source=f"sqlite://{path}",
        storage=storage,
        tables=[table],
        batch_size=3,
        hard_delete_interval=0 if scan else 10**6,
    ) as lake:
        for _ in range(data.draw(st.integers(1, 5), label="rounds")):
            # Writers' clocks move on: a row written after a sync is not older than what it read,
            # and while a poll reads, each write is later than the ones before it.
            before = writes(data.draw(st.integers(0, 8), label="writes"), "before", base, ascending=False)
            for write_ in before:
                write(*write_)
            if scan:
                delete_some()
            start = max([base, *(w[0] for w in before)])
            during = writes(
                data.draw(st.integers(0, 3), label="writes while polling"), "while polling", start, ascending=True
            )

            def progress(_table, _done, _total) -> None:
                if during:
                    write(*during.pop(0))

            lake.sync_now(progress=progress)
            for write_ in during:  # the poll read fewer batches than there were writes
                write(*write_)
            lake.sync_now()  # what was written while the last poll read is read by this one
            _assert_lake_equals_source(lake, conn, unit)
            base = top + data.draw(st.integers(1, DAY), label="pause")
    conn.close()


# -- the order reasoning, value by value ------------------------------------------------------------

instants = st.integers(MIN_INSTANT, MAX_INSTANT)


def _glob(pattern: str, text: str) -> bool:
    return sqlite3.connect(":memory:").execute("SELECT ? GLOB ?", (text, pattern)).fetchone()[0] == 1


@given(data=st.data(), a=instants, apart=st.one_of(st.integers(-DAY, DAY), st.integers(-(10**6), 10**6)))
@settings(max_examples=1000, deadline=None)
def test_values_spelled_alike_sort_as_their_instants(data, a, apart):
    """Text matching another's spelling pattern and sorting before it is not later than it."""
    first = data.draw(spellings(a, "us", numbers=False), label="first")
    pattern = spelling_glob(first)
    assert _glob(pattern, first)
    second = data.draw(spellings(min(max(a + apart, MIN_INSTANT), MAX_INSTANT), "us", numbers=False), label="second")
    if _glob(pattern, second) and second.encode() < first.encode():
        assert instant_of(second, "us") <= instant_of(first, "us")


def test_a_shorter_fraction_and_a_zone_do_not_pass_for_a_longer_fraction():
    """Same length, same dashes and colons: ``.1-05:00`` must not be taken for ``.1234560``."""
    pattern = spelling_glob("2026-01-02 10:00:00.1234560")
    assert not _glob(pattern, "2026-01-02 10:00:00.1-05:00")
    assert _glob(pattern, "2026-01-01 23:59:59.9999990")


@given(data=st.data(), reached=instants, later=st.integers(0, 3 * DAY))
@settings(max_examples=400, deadline=None)
def test_no_spelling_of_a_later_instant_sorts_below_the_window(data, reached, later):
    """Text for an instant at or after ``reached`` sorts at or after the window's lower bound,
    unless it starts below '0' (leading blanks), which its own range covers."""
    text = data.draw(spellings(min(reached + later, MAX_INSTANT), "us", numbers=False))
    bound = earliest_local_date(reached)
    assert text >= bound or text < "0!"


def test_hidden_row_ranges_are_served_by_an_index_on_updated_at():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, updated_at DATETIME)")
    conn.execute("CREATE INDEX items_updated ON items (updated_at)")
    sql, params = unordered_sql('"items"', '"updated_at"', ['"id"'], "2026-01-02 10:00:00", 1767348000000000, "s")
    plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    scans = [step for step in plan if step.startswith(("SCAN", "SEARCH"))]
    assert len(scans) == 4 and all("USING COVERING INDEX items_updated" in s for s in scans), plan


def _one_row_source(tmp_path, updated_at: str = "2026-01-02T10:00:00Z") -> sqlite3.Connection:
    """``items`` holding one row, which the first poll's cursor ends on; the key scan is off."""
    conn = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER, updated_at DATETIME NOT NULL)")
    conn.execute("INSERT INTO items VALUES (1, 1, ?)", (updated_at,))
    return conn


def _open_polled(tmp_path) -> rhei_lake.Lake:
    table = rhei_lake.PolledTable("items", updated_at="updated_at", hard_deletes=False)
    return rhei_lake.open(source=f"sqlite://{tmp_path / 'app.db'}", storage=str(tmp_path / "lake"), tables=[table])


@pytest.mark.parametrize(
    ("later", "spelled"),
    [
        ("2026-01-02 11:00:00", "separator ' ' sorts before the cursor's 'T'"),
        ("2026-01-02T05:00:00-06:00", "an offset: sorts by its local time"),
        (1767355200, "a number sorts before every text"),
        ("2026-01-02T10:00:00.5Z", "a fraction sorts before the cursor's 'Z'"),
    ],
)
def test_a_row_spelled_to_sort_before_the_cursor_is_read_by_the_next_poll(tmp_path, later, spelled):
    """The row waits neither for the key scan (off here) nor for hard_delete_interval."""
    conn = _one_row_source(tmp_path)  # the cursor: 10:00 UTC
    with _open_polled(tmp_path) as lake:
        lake.sync_now()
        conn.execute("INSERT INTO items VALUES (2, 2, ?)", (later,))
        assert lake.sync_now().events == 1, spelled
        _assert_lake_equals_source(lake, conn, "s")
        assert lake.sync_now().events == 0
    conn.close()


# -- PostgreSQL -------------------------------------------------------------------------------------


def _pg_lake_equals_source(lake, pg) -> None:
    source = {key: (v, instant_of(u, "s")) for key, v, u in pg.execute("SELECT id, v, updated_at::text FROM items")}
    rows = lake.query("SELECT id, v, _rhei_valid_from FROM items_history WHERE _rhei_valid_to IS NULL").to_pylist()
    assert {r["id"]: (r["v"], instant_of(r["_rhei_valid_from"].isoformat(), "s")) for r in rows} == source


@pytest.mark.parametrize("declared", ["text", "varchar(40)"])
def test_postgres_text_updated_at_in_mixed_spellings_is_compared_as_instants(postgres, tmp_path_factory, declared):
    """PostgreSQL compares text by collation; a text updated_at is polled as the instant it spells."""

    @given(data=st.data())
    @settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def program(data) -> None:
        database = postgres.create_database()
        pg = postgres.connect(database)
        pg.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, v bigint, updated_at {declared} NOT NULL)")
        table = rhei_lake.PolledTable("items", updated_at="updated_at", hard_deletes=False)
        storage = str(tmp_path_factory.mktemp("lake"))
        base = data.draw(st.integers(MIN_INSTANT, MAX_INSTANT - 400 * DAY), label="start")
        try:
            with rhei_lake.open(source=postgres.url(database), storage=storage, tables=[table], batch_size=2) as lake:
                for _ in range(data.draw(st.integers(1, 4), label="rounds")):
                    top = base
                    for key in data.draw(st.lists(st.integers(1, 12), max_size=6), label="keys"):
                        instant = base + data.draw(st.integers(0, 2 * DAY), label="after")
                        top = max(top, instant)
                        spelled = data.draw(spellings(instant, "s", False, fraction_digits=6, offset_hours=15))
                        pg.execute(
                            "INSERT INTO items VALUES (%s, 1, %s) ON CONFLICT (id) DO UPDATE SET "
                            "v = items.v + 1, updated_at = excluded.updated_at",
                            (key, spelled),
                        )
                    lake.sync_now()
                    _pg_lake_equals_source(lake, pg)
                    base = top + data.draw(st.integers(1, DAY), label="pause")
        finally:
            pg.close()

    program()


@pytest.mark.parametrize("declared", ["timestamptz", "timestamp", "timestamp(3) with time zone"])
def test_postgres_typed_updated_at_is_polled_as_its_instant(postgres, tmp_path, declared):
    """Typed columns compare as instants natively (``timestamp`` without a zone is UTC), by index."""
    database = postgres.create_database()
    pg = postgres.connect(database)
    pg.execute(f"CREATE TABLE items (id bigint PRIMARY KEY, v bigint, updated_at {declared} NOT NULL)")
    pg.execute("CREATE INDEX items_updated ON items (updated_at)")
    table = rhei_lake.PolledTable("items", updated_at="updated_at", hard_deletes=False)
    try:
        with rhei_lake.open(source=postgres.url(database), storage=str(tmp_path / "lake"), tables=[table]) as lake:
            pg.execute("INSERT INTO items VALUES (1, 1, '2026-01-02 10:00:00.123')")
            lake.sync_now()
            for key, spelled in [(2, "2026-01-02T11:00:00Z"), (3, "2026-01-02 11:30:00"), (4, "20260102T120000+00")]:
                pg.execute("INSERT INTO items VALUES (%s, 1, %s)", (key, spelled))
                lake.sync_now()
                _pg_lake_equals_source(lake, pg)
    finally:
        pg.close()


def test_polls_read_the_extra_ranges_only_after_the_source_committed(tmp_path, monkeypatch):
    """SQLite's data_version: an idle source costs no range scan; any commit brings one back."""
    from rhei_lake.capture.sqlite_poll import SqlitePolledSource

    looks: list[int] = []
    read = SqlitePolledSource.read_changes

    def counted(self, plan, cursor, batch_rows, unordered_since=None):
        if unordered_since is not None:
            looks.append(unordered_since)
        return read(self, plan, cursor, batch_rows, unordered_since)

    monkeypatch.setattr(SqlitePolledSource, "read_changes", counted)
    conn = _one_row_source(tmp_path, "2026-01-02T10:00:00")
    with _open_polled(tmp_path) as lake:
        lake.sync_now()  # the first poll reads everything: nothing to look for
        lake.sync_now()
        assert len(looks) == 1
        lake.sync_now()
        lake.sync_now()
        assert len(looks) == 1, "an idle source was scanned again"
        conn.execute("INSERT INTO items VALUES (2, 2, '2026-01-02 11:00:00')")  # sorts before the cursor
        assert lake.sync_now().events == 1
        assert len(looks) == 2
    conn.close()


def test_an_unreadable_updated_at_sorting_before_the_cursor_is_reported_by_the_next_poll(tmp_path):
    """A leading blank: not a time the lake reads, and sorted before every date. The next poll
    names the row instead of leaving it to the key scan (off here)."""
    from rhei_lake.errors import TypeMismatchError

    conn = _one_row_source(tmp_path)
    with _open_polled(tmp_path) as lake:
        lake.sync_now()
        conn.execute("INSERT INTO items VALUES (2, 2, ' 2026-01-02T11:00:00')")
        with pytest.raises(TypeMismatchError, match="id.*2") as bad:
            lake.sync_now()
        assert not bad.value.transient
        conn.execute("UPDATE items SET updated_at = '2026-01-02T11:00:00' WHERE id = 2")
        lake.sync_now()
        _assert_lake_equals_source(lake, conn, "s")
    conn.close()
