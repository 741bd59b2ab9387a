"""Durations (retentions) and their configuration."""

from __future__ import annotations

from datetime import timedelta

import pytest

import rhei_lake
from rhei_lake.config import DEFAULT_CHANGELOG_RETENTION, DEFAULT_VACUUM_RETENTION, build_config
from rhei_lake.timeutil import format_duration, parse_duration


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
