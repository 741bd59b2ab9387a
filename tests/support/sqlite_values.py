"""Hypothesis strategies for values an application can write into SQLite, of every storage class.

Each value is what the application *passes* (an int, a float, text, a blob, or
:class:`RawText`, bytes to be stored as TEXT whatever their encoding); SQLite
then stores it by the column's affinity, which is what the tests read back.
Text leans towards the shapes that affinity and the declared-type conversions
care about: numbers spelt many ways, date/time text in many spellings, decimals
with trailing zeros.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from rhei_lake.capture.types import decode_text


class RawText(bytes):
    """Bytes an application stores as TEXT (``CAST(? AS TEXT)``), UTF-8 or not."""


INT64 = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-1000, 1000),
    st.sampled_from([0, 1, 2, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 1_767_261_600]),
)
REALS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    st.integers(-(2**60), 2**60).map(float),  # whole numbers, which NUMERIC affinity stores as integers
    st.sampled_from([0.0, -0.0, 0.1, 0.5, 1.5, 2.0**53, 2.0**63, -(2.0**63), 1e16, 1e20, 1_767_261_600.25]),
)
_DIGITS = st.text("0123456789", min_size=1, max_size=25)
NUMBER_TEXT = st.one_of(
    INT64.map(str),
    REALS.filter(lambda f: f == f).map(repr),
    st.tuples(st.sampled_from(["", " ", "\t", "+", "-", "0", "00"]), _DIGITS, st.sampled_from(["", " ", "\n"])).map(
        "".join
    ),
    st.tuples(_DIGITS, st.sampled_from([".", ".0", ".00", ".5", ".50", ".125", "e0", "e3", "E-2", "e+20", ".e1"])).map(
        "".join
    ),
    st.sampled_from(["0x10", "1_000", "inf", "-Infinity", "NaN", "9.0e+999", ".5", "5.", "1e", "١٢", "", " "]),
)
_INSTANTS = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))


@st.composite
def timestamp_text(draw: st.DrawFn) -> str:
    """One instant in one of the spellings applications use (or one SQLite's date functions read)."""
    instant = draw(_INSTANTS)
    offset = draw(st.sampled_from([None, "Z", "+00:00", "+02:00", "-05:30"]))
    local = instant
    if offset not in (None, "Z"):
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
        local = instant.astimezone(timezone(sign * delta))
    sep = draw(st.sampled_from([" ", "T"]))
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    if draw(st.booleans()) or offset is not None:
        text += f"{sep}{local.hour:02d}:{local.minute:02d}"
        seconds = draw(st.sampled_from(["none", "plain", "ms", "us", "7", "9zero"]))
        if seconds != "none":
            text += f":{local.second:02d}"
            text += {
                "plain": "",
                "ms": f".{local.microsecond // 1000:03d}",
                "us": f".{local.microsecond:06d}",
                "7": f".{local.microsecond:06d}{draw(st.integers(0, 9))}",
                "9zero": f".{local.microsecond:06d}000",
            }[seconds]
        text += offset or ""
    return text


TEXT = st.one_of(
    st.text(max_size=12),
    NUMBER_TEXT,
    timestamp_text(),
    _INSTANTS.map(lambda d: d.date().isoformat()),
    st.uuids().map(str),
    st.sampled_from(
        [
            "2026-02-30",
            "2026-13-01",
            "2026-W01-1",
            "20260101T100000",
            "2026-01-01 24:00:00",
            "2026-01-01 10:00:60",
            "0000-01-01",
            "10:00:00",
            "true",
            "{}",
            "[1, 2]",
            "abc",
        ]
    ),
)
BLOBS = st.binary(max_size=8)
RAW_TEXT = st.one_of(st.binary(max_size=6), st.just(b"\xff\xfe"), st.just(b"ok\x80")).map(RawText)

ANY_VALUE = st.one_of(st.none(), INT64, REALS, TEXT, BLOBS, RAW_TEXT)


@st.composite
def decimal_spellings(draw: st.DrawFn) -> list[Any]:
    """One decimal number written as an integer, a real and texts with more or fewer trailing zeros."""
    base = Decimal(draw(st.integers(-(10**8), 10**8))).scaleb(-draw(st.integers(0, 4)))
    texts = [f"{base:f}", f"{base:.4f}", f"{base:.2f}", f"{base:E}"]
    return [int(base) if base == base.to_integral_value() else float(base), *texts]


@st.composite
def instant_spellings(draw: st.DrawFn) -> list[Any]:
    """One instant as canonical text, other spellings of it, and epoch seconds."""
    instant = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
    instant = instant.replace(microsecond=draw(st.sampled_from([0, 500_000, instant.microsecond])))
    plain = instant.strftime("%Y-%m-%d %H:%M:%S")
    fraction = f".{instant.microsecond:06d}" if instant.microsecond else ""
    epoch = (instant - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=1)
    return [
        plain + fraction,
        plain.replace(" ", "T") + fraction,
        plain + fraction + "Z",
        plain + fraction + "+00:00",
        plain + f".{instant.microsecond:06d}",
        plain + f".{instant.microsecond // 1000:03d}",
        int(epoch) if epoch == int(epoch) else epoch,
        str(int(epoch)) if epoch == int(epoch) else repr(epoch),
    ]


NUMBER_SPELLINGS = INT64.filter(lambda i: abs(i) < 2**53).map(lambda i: [i, float(i), str(i), f" {i}", f"{i}.0"])

KEY_SPELLINGS = st.one_of(
    decimal_spellings(), instant_spellings(), NUMBER_SPELLINGS, st.lists(ANY_VALUE, min_size=1, max_size=6)
)


def placeholder(value: Any) -> str:
    """SQL placeholder for ``value`` (RawText goes in as TEXT)."""
    return "CAST(? AS TEXT)" if isinstance(value, RawText) else "?"


def param(value: Any) -> Any:
    return bytes(value) if isinstance(value, RawText) else value


def store_one(conn: sqlite3.Connection, value: Any) -> tuple[str, Any]:
    """``(typeof, value)`` SQLite stores for ``value`` in the probe column (see :func:`probe_connection`)."""
    conn.execute("DELETE FROM probe")
    conn.execute(f"INSERT INTO probe (v) VALUES ({placeholder(value)})", (param(value),))
    return conn.execute("SELECT typeof(v), v FROM probe").fetchone()


def probe_connection(declared: str) -> sqlite3.Connection:
    """An in-memory database with a table ``probe(v <declared>)``, reading text as rhei_lake does."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.text_factory = decode_text
    conn.execute(f"CREATE TABLE probe (v {declared})")
    return conn
