"""Durations (retentions) and instants (``as_of``): parsing, and refusing what would be guessed."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone, tzinfo, UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rhei_lake
from rhei_lake.config import DEFAULT_CHANGELOG_RETENTION, DEFAULT_VACUUM_RETENTION, build_config
from rhei_lake.timeutil import format_duration, parse_duration, to_micros


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("2w", timedelta(days=14)),
        ("0", timedelta(0)),
        ("1.5h", timedelta(minutes=90)),
        ("P7D", timedelta(days=7)),
        ("PT30M", timedelta(minutes=30)),
        (3600, timedelta(hours=1)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_durations_parse(text, expected):
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("bad", ["", "soon", "7 days", "-1", "5x", "1h-2m", True, float("inf"), -3, [1]])
def test_bad_durations_name_the_setting(bad):
    with pytest.raises(rhei_lake.ConfigError, match="^vacuum_retention: "):
        parse_duration(bad, what="vacuum_retention")


def test_retention_settings_default_and_validate():
    config = build_config()
    assert config.vacuum_retention == DEFAULT_VACUUM_RETENTION == timedelta(days=7)
    assert config.changelog_retention == DEFAULT_CHANGELOG_RETENTION == timedelta(days=7)
    explicit = build_config(vacuum_retention=0, changelog_retention="forever", target_file_size=1 << 20)
    assert explicit.vacuum_retention == timedelta(0)  # zero only when asked for
    assert explicit.changelog_retention is None
    assert build_config(vacuum_retention="36h").vacuum_retention == timedelta(hours=36)
    for options, field in (
        ({"vacuum_retention": "whenever"}, "vacuum_retention"),
        ({"changelog_retention": "-1d"}, "changelog_retention"),
        ({"target_file_size": 10}, "target_file_size"),
    ):
        with pytest.raises(rhei_lake.ConfigError, match=field):
            rhei_lake.open(**options)


# -- instants: a time zone is required, never guessed ---------------------------------------------

_NAIVE_TEXT = ["2026-05-01T12:00:00", "2026-05-01 12:00:00.250", "2026-05-01", "20260501T120000", " 2026-05-01T12:00 "]


@pytest.mark.parametrize("text", _NAIVE_TEXT)
def test_iso_text_without_an_offset_is_refused_with_the_fix(text):
    with pytest.raises(rhei_lake.ConfigError, match=r"^as_of: .* has no UTC offset.*append Z for UTC") as info:
        to_micros(text)
    fixed = re.search(r"append Z for UTC \((.+?)\)", str(info.value)).group(1)
    assert to_micros(fixed) == _utc_micros(datetime.fromisoformat(text.strip()))  # the suggested spelling works


def test_a_naive_datetime_is_refused_and_every_suggested_fix_works():
    naive = datetime(2026, 5, 1, 12, 0, 0, 250)
    with pytest.raises(rhei_lake.ConfigError, match=r"naive datetime.*astimezone\(\).*timezone\.utc") as info:
        to_micros(naive)
    assert "2026" in str(info.value)
    assert to_micros(naive.replace(tzinfo=UTC)) == _utc_micros(naive)
    assert to_micros(naive.astimezone()) == round(naive.timestamp() * 1_000_000)  # Python's local reading
    assert abs(to_micros(datetime.now(UTC)) - round(time.time() * 1_000_000)) < 5_000_000


def test_a_tzinfo_that_gives_no_offset_counts_as_naive():
    class Undecided(tzinfo):
        def utcoffset(self, dt):
            return None

    with pytest.raises(rhei_lake.ConfigError, match="naive"):
        to_micros(datetime(2026, 5, 1, tzinfo=Undecided()))


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_aware_instants_are_the_same_instant_in_every_zone_and_spelling(moment, offset_minutes):
    zone = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=UTC).astimezone(zone)
    expected = _utc_micros(moment)
    assert to_micros(aware) == expected
    assert to_micros(aware.isoformat()) == expected
    with pytest.raises(rhei_lake.ConfigError):
        to_micros(aware.replace(tzinfo=None))
    with pytest.raises(rhei_lake.ConfigError):
        to_micros(aware.replace(tzinfo=None).isoformat())


def test_epoch_seconds_stay_accepted():
    assert to_micros(0) == 0
    assert to_micros(1_777_636_800) == to_micros("2026-05-01T12:00:00Z")
    assert to_micros(1.5) == 1_500_000


def _utc_micros(naive: datetime) -> int:
    delta = naive - datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def test_every_api_refuses_naive_instants_alike(tmp_path):
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage="memory://") as lake:
        lake.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute("INSERT INTO t VALUES (1, 'a')")
        lake.sync_now()
        aware = datetime.now(UTC)
        naive_forms = [aware.replace(tzinfo=None), aware.replace(tzinfo=None).isoformat()]
        calls = {
            "query": lambda instant: lake.query("SELECT count(*) FROM t", as_of=instant),
            "explain_route": lambda instant: lake.explain_route("SELECT * FROM t WHERE id = 1", as_of=instant),
            "dataframe": lambda instant: lake.dataframe("SELECT count(*) FROM t", as_of=instant),
            "restore_sqlite": lambda instant: lake.restore_sqlite(tmp_path / "restored.db", as_of=instant),
        }
        for name, call in calls.items():
            for naive in naive_forms:
                with pytest.raises(rhei_lake.ConfigError, match="^as_of: "):
                    call(naive)
            call(aware)  # the aware instant works everywhere
            assert name != "restore_sqlite" or (tmp_path / "restored.db").exists()
        assert lake.query("SELECT v FROM t", as_of=aware.astimezone()).to_pylist() == [{"v": "a"}]
