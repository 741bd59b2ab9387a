"""Sidecar configuration: source URLs, PolledTable, LakeConfig fields, TOML, masking, the cursor format."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID

import pytest

import rhei_lake
from rhei_lake.capture.poll_cursor import PollCursor
from rhei_lake.capture.postgres_types import numeric_precision_scale
from rhei_lake.capture.source_url import mask_url, parse_source_url
from rhei_lake.config import build_config
from rhei_lake.config_file import load_config_file
from rhei_lake.errors import ConfigError, CorruptStorageError


def test_source_urls():
    loc = parse_source_url("sqlite:///srv/app.db")
    assert (loc.kind, loc.path) == ("sqlite", "/srv/app.db")
    assert parse_source_url("sqlite://rel.db").path == "rel.db"
    assert parse_source_url("sqlite:////srv/app.db").path == "/srv/app.db"  # SQLAlchemy's spelling
    pg = parse_source_url("postgres://app:pw@db:5432/shop")
    assert pg.kind == "postgresql" and pg.masked == "postgres://app:***@db:5432/shop"
    assert "pw" not in repr(pg)
    for bad, message in [
        ("mysql://a:secret@h/db", "not a sqlite:// or postgresql://"),
        ("sqlite://", "needs a database file"),
        ("postgresql://a:secret@h:99x/db", "not a valid PostgreSQL URL"),
        ("postgresql://a:secret@h", "names no database"),
    ]:
        with pytest.raises(ConfigError, match=message) as info:
            parse_source_url(bad)
        assert "secret" not in str(info.value)


def test_mask_url():
    assert mask_url("postgresql://u:p%40ss@h/db?sslmode=require&password=x") == (
        "postgresql://u:***@h/db?sslmode=require&password=***"
    )
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_url("sqlite:///a/b.db") == "sqlite:///a/b.db"


def test_polled_table():
    table = rhei_lake.PolledTable("orders", primary_key=["id"], updated_at="updated_at", deleted_at="deleted_at")
    assert table.name == "orders" and table.primary_key == ("id",) and table.epoch_unit == "s"
    assert rhei_lake.PolledTable(name="o", updated_at="u").hard_deletes
    for bad in [
        dict(updated_at=""),
        dict(updated_at="u", primary_key=[]),
        dict(updated_at="u", deleted_at="u"),
        dict(updated_at="u", epoch_unit="days"),
        dict(updated_at="u", bogus=1),
    ]:
        with pytest.raises(ValueError):
            rhei_lake.PolledTable("o", **bad)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source": "sqlite:///x.db"}, "sidecar mode needs tables"),
        ({"tables": [{"name": "o", "updated_at": "u"}]}, "tables are polled from a source"),
        (
            {"source": "sqlite:///x.db", "oltp_path": "y.db", "tables": [{"name": "o", "updated_at": "u"}]},
            "exclude each other",
        ),
        (
            {
                "source": "sqlite:///x.db",
                "tables": [{"name": "o", "updated_at": "u"}, {"name": "O", "updated_at": "u"}],
            },
            "listed twice",
        ),
        ({"source": "sqlite:///x.db", "tables": [{"name": "o"}]}, r"tables\.0\.updated_at"),
        (
            {"source": "sqlite:///x.db", "tables": [{"name": "o", "updated_at": "u"}], "hard_delete_interval": -1},
            "hard_delete_interval",
        ),
        ({"source": "redis://u:hunter2@h/0", "tables": [{"name": "o", "updated_at": "u"}]}, "source: "),
    ],
)
def test_invalid_sidecar_config(options, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_config(**options)
    assert "hunter2" not in str(info.value)


def test_sidecar_config_from_toml(tmp_path):
    path = tmp_path / "sidecar.toml"
    path.write_text(
        'source = "postgresql://app:hunter2@localhost/shop"\nstorage = "s3://analytics/shop"\n'
        "hard_delete_interval = 60\n\n"
        '[[tables]]\nname = "orders"\nprimary_key = ["id"]\nupdated_at = "updated_at"\ndeleted_at = "deleted_at"\n\n'
        '[[tables]]\nname = "customers"\nupdated_at = "modified"\nepoch_unit = "ms"\n'
    )
    config = build_config(load_config_file(path))
    assert [t.name for t in config.tables] == ["orders", "customers"]
    assert config.tables[1].epoch_unit == "ms" and config.hard_delete_interval == 60
    assert "hunter2" not in repr(config) and "hunter2" not in str(config)
    assert build_config(config) == config


def test_numeric_typmod():
    assert numeric_precision_scale(-1) is None
    assert numeric_precision_scale(((12 << 16) | 2) + 4) == (12, 2)
    assert numeric_precision_scale(((5 << 16) | (0x800 - 2)) + 4) == (5, -2)


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-01T00:00:00.000001Z",
        17,
        -(2**63),
        0.1 + 0.2,
        b"\x00\xff",
        Decimal("1.10"),
        date(2026, 1, 2),
        datetime(2026, 1, 1, 1, 2, 3, 4, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(2026, 1, 1),
        UUID(int=5),
        True,
        None,
    ],
)
def test_cursor_round_trips_exactly(value):
    cursor = PollCursor(value, (value, "k"))
    back = PollCursor.decode(cursor.encode(), table="t")
    assert back == cursor
    assert [type(v) for v in back.params] == [type(v) for v in cursor.params]


def test_unreadable_cursor():
    with pytest.raises(CorruptStorageError, match="'t'"):
        PollCursor.decode('{"format": 99}', table="t")
