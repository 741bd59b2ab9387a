"""Values for the differential fuzzer: odd but legal inputs per declared type, and how a lake value
is judged equal to the value SQLite stored.

Inputs go through SQLite's affinity first, so the generators only have to
produce values whose *stored* storage class the lake documents as accepted
for the declared type (``INTEGER`` gets integers, integral reals and integer
text, which SQLite stores as integers; ``TEXT`` gets numbers too, which SQLite
stores as text; ...). The ``affinity`` pools go further, to values SQLite
stores under declared types whose affinity is NUMERIC (``JSON``, ``UUID``,
``NUMERIC``) that the lake refused before issue 14.

Equality is judged without the lake's converters: a lake value is written back
through the column's declared type in a scratch SQLite database and must come
out as exactly the stored value (storage class and, for reals, every bit).
Instants (timestamp columns), dates and decimals are compared as what they
mean, since their spelling in SQLite is not theirs to keep.
"""

from __future__ import annotations

import json
import sqlite3
import struct
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
from hypothesis import strategies as st

from tests.support.sqlite_values import NUMBER_TEXT, probe_connection, store_one

Token = tuple

# -- inputs ---------------------------------------------------------------------

TEXT_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
ODD_TEXTS = ("", " ", "a", "A", "ü", "Ü", "漢字", "😀", "x'y", 'q"q', "tail  ", "\t\n", "é" * 30)
ODD_FLOATS = (
    0.0,
    -0.0,
    1.0,
    -1.5,
    0.1,
    1 / 3,
    2.0**53,
    2.0**53 - 1,
    2.0**53 + 2,
    -(2.0**53),
    2.0**52 + 0.5,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    float("inf"),
    float("-inf"),
)
ODD_INTS = (0, 1, -1, 2**31, 2**53, 2**53 + 1, -(2**53) - 1, 2**62, 2**63 - 1, -(2**63))


def texts(max_size: int = 10) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(ODD_TEXTS), st.text(TEXT_CHARS, max_size=max_size))


def doubles() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(ODD_FLOATS), st.floats(allow_nan=False, width=64))


def int64s() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(ODD_INTS), st.integers(-(2**63), 2**63 - 1), st.integers(-1000, 1000))


def _spaced(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Numeric text, sometimes with the blanks SQLite's affinity ignores."""
    return st.tuples(text, st.sampled_from(("", " ", "  "))).map(lambda p: f"{p[1]}{p[0]}{p[1]}")


def _integer_inputs() -> st.SearchStrategy[Any]:
    return st.one_of(
        int64s(),
        st.integers(-(2**53), 2**53).map(float),  # an integral REAL is stored as INTEGER
        _spaced(int64s().map(str)),
        st.sampled_from(("1e3", "-0", "+7", "1.0")),
    )


def _real_inputs() -> st.SearchStrategy[Any]:
    finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
    return st.one_of(
        doubles(),
        int64s(),  # stored as REAL (rounded beyond 2**53: that is SQLite's value)
        _spaced(finite.map(repr)),
        st.just(float("nan")),  # SQLite stores NULL
    )


def _text_inputs() -> st.SearchStrategy[Any]:
    # Numbers are stored as their text (a REAL printed with 15 digits: SQLite's value, lossy as it is).
    return st.one_of(texts(), texts(), int64s(), st.floats(allow_nan=False, width=64))


def _numeric_inputs() -> st.SearchStrategy[Any]:
    """What a plain NUMERIC column stores as integers within 2**53 or as reals (the lake's float64)."""
    fits = st.floats(allow_nan=False, width=64).filter(lambda x: abs(x) < 2**53 or abs(x) > 2**64)
    return st.one_of(
        st.integers(-(2**53), 2**53), fits, _spaced(fits.filter(lambda x: abs(x) != float("inf")).map(repr))
    )


_OFFSETS = (None, "Z", "+00:00", "+02:00", "-05:30", "+14:00")
_EPOCH_MIN, _EPOCH_MAX = -62_100_000_000, 253_000_000_000


def datetime_text() -> st.SearchStrategy[str]:
    """ISO 8601 text: ' ' or 'T', with or without fractions and offsets, or a bare date."""

    def spell(parts: tuple[datetime, str, str | None]) -> str:
        moment, sep, offset = parts
        text = moment.isoformat(sep=sep)
        return text if offset is None else text + offset

    spelled = st.tuples(
        st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
        st.sampled_from((" ", "T")),
        st.sampled_from(_OFFSETS),
    ).map(spell)
    return spelled | st.sampled_from(("2026-01-01", "2026-01-01 10:00:00", "2026-01-01T10:00:00.5Z"))


def _datetime_inputs() -> st.SearchStrategy[Any]:
    return st.one_of(
        datetime_text(),
        st.integers(_EPOCH_MIN, _EPOCH_MAX),
        st.floats(min_value=_EPOCH_MIN, max_value=_EPOCH_MAX),
        _spaced(st.integers(0, 2_000_000_000).map(str)),
    )


def _decimal_inputs() -> st.SearchStrategy[Any]:
    amounts = st.decimals(
        min_value=Decimal("-999999999.999"),
        max_value=Decimal("999999999.999"),
        places=3,
        allow_nan=False,
        allow_infinity=False,
    )
    return st.one_of(amounts.map(str), amounts.map(float), st.integers(-999_999_999, 999_999_999))


_JSON_TEXTS = (
    "42",
    "-7",
    "1.5",
    "1e3",
    " 12 ",
    '{"a": 1}',
    "[1, 2]",
    "true",
    "null",
    '"s"',
    "",
    "12345678901234567890123",
    "0x10",
    "1.0",
)


def _json_inputs() -> st.SearchStrategy[Any]:
    documents = st.recursive(
        st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(TEXT_CHARS, max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT_CHARS, max_size=3), inner, max_size=3),
        max_leaves=5,
    ).map(json.dumps)
    return st.one_of(st.sampled_from(_JSON_TEXTS), documents, int64s(), doubles(), texts(), NUMBER_TEXT)


def _uuid_inputs() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: u.hex),  # 32 hex digits: sometimes all digits, stored as a REAL
        st.text("0123456789", min_size=32, max_size=32),
        st.sampled_from(("12345678901234567890123456789012", "00000000000000000000000000000042")),
    )


def _big_numeric_inputs() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(ODD_INTS),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(min_value=2**53, max_value=2**63 - 1024),
        doubles(),
        texts(),
        NUMBER_TEXT,
        st.sampled_from(("abc", "12abc", "9223372036854775808")),
    )


VALUE_INPUTS = {
    "INTEGER": _integer_inputs,
    "INT": _integer_inputs,
    "BIGINT": _integer_inputs,
    "REAL": _real_inputs,
    "DOUBLE PRECISION": _real_inputs,
    "FLOAT": _real_inputs,
    "TEXT": _text_inputs,
    "VARCHAR(20)": _text_inputs,
    "BLOB": lambda: st.one_of(st.binary(max_size=16), st.sampled_from((b"", b"\x00", b"\xff\xfe", b"a"))),
    "BOOLEAN": lambda: st.sampled_from((0, 1, True, False, "1", "0", 1.0, 0.0, " 1 ")),
    "DATE": lambda: st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat),
    "DATETIME": _datetime_inputs,
    "TIMESTAMP": _datetime_inputs,
    "DECIMAL(12,3)": _decimal_inputs,
    "NUMERIC": _numeric_inputs,
}
"""Per declared type: inputs SQLite stores as a class the lake's type for it accepts."""

AFFINITY_INPUTS = {
    "JSON": _json_inputs,
    "UUID": _uuid_inputs,
    "TIME": _json_inputs,
    "NUMERIC": _big_numeric_inputs,
    "MONEY": _big_numeric_inputs,
}
"""Per declared type of NUMERIC affinity: whatever SQLite stores there (issue 14, item 7)."""


def value_inputs(declared: str, *, affinity: bool = False) -> st.SearchStrategy[Any]:
    """Inputs for a column declared ``declared`` (``affinity``: the wider pools), NULL among them."""
    key = declared.upper()
    pools = AFFINITY_INPUTS if affinity and key in AFFINITY_INPUTS else VALUE_INPUTS
    make = pools.get(key)
    if make is None:
        raise KeyError(f"no value inputs for declared type {declared!r}")
    return st.one_of(st.none(), make())


# -- judging ------------------------------------------------------------------------


def exact(value: Any) -> Token:
    """A stored SQLite value as (storage class, value), reals by their bits."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("integer", int(value))
    if isinstance(value, int):
        return ("integer", value)
    if isinstance(value, float):
        return ("real", struct.pack("<d", value))
    if isinstance(value, str):
        return ("text", value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("blob", bytes(value))
    return ("python", type(value).__name__, repr(value))


def instant_micros(value: Any) -> int:
    """A value stored in a timestamp column as UTC epoch microseconds (ISO text, naive = UTC; epoch seconds)."""
    if isinstance(value, bool):
        raise ValueError("a bool is not an instant")
    if isinstance(value, int):
        return value * 1_000_000
    if isinstance(value, float):
        return round(value * 1_000_000)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return datetime_micros(moment)
    raise ValueError(f"{value!r} is not an instant")


def datetime_micros(moment: datetime) -> int:
    """An aware datetime (naive means UTC) as UTC epoch microseconds."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            return Decimal(repr(value))
        if isinstance(value, str):
            return Decimal(value.strip())
    except ArithmeticError:
        return None
    return None


def comparison_mode(dtype: pa.DataType) -> str:
    """How values of a lake column of Arrow type ``dtype`` are compared with SQLite's."""
    if pa.types.is_timestamp(dtype):
        return "instant"
    if pa.types.is_date32(dtype) or pa.types.is_date64(dtype):
        return "date"
    if pa.types.is_decimal(dtype):
        return "decimal"
    return "stored"


class ValueJudge:
    """Tokens for SQLite's stored values and for the lake's values, equal exactly when the values are."""

    def __init__(self) -> None:
        self._probes: dict[str, sqlite3.Connection] = {}
        self._cache: dict[tuple, Token] = {}

    def close(self) -> None:
        for conn in self._probes.values():
            conn.close()
        self._probes.clear()

    def sqlite_token(self, value: Any, mode: str) -> Token:
        if value is None:
            return ("null",)
        if mode == "instant":
            try:
                return ("instant", instant_micros(value))
            except (ValueError, OverflowError):
                return exact(value)
        if mode == "date" and isinstance(value, str):
            return ("date", value)
        if mode == "decimal":
            number = _decimal(value)
            if number is not None and number.is_finite():
                return ("decimal", number)
        return exact(value)

    def lake_token(self, value: Any, declared: str) -> Token:
        if value is None:
            return ("null",)
        if isinstance(value, datetime):
            return ("instant", datetime_micros(value))
        if isinstance(value, date):
            return ("date", value.isoformat())
        if isinstance(value, Decimal):
            return ("decimal", value)
        if isinstance(value, bool):
            value = int(value)
        return self.stored(declared, value)

    def stored(self, declared: str, value: Any) -> Token:
        """What SQLite stores when ``value`` is written to a column declared ``declared``."""
        key = (declared, exact(value))
        token = self._cache.get(key)
        if token is None:
            probe = self._probes.get(declared)
            if probe is None:
                probe = self._probes[declared] = probe_connection(declared)
            _, stored = store_one(probe, value)
            if isinstance(value, str) and isinstance(stored, float):
                stored = _correctly_rounded(value, stored)
            token = self._cache[key] = exact(stored)
        return token


def _correctly_rounded(text: str, sqlite_real: float) -> float:
    """The double ``text`` spells, where SQLite's own conversion gave ``sqlite_real``.

    The lake keeps a REAL that SQLite stored in a column it mirrors as text
    (NUMERIC affinity: ``TIME``, ``JSON``, ...) as its shortest round-trip
    spelling, exact for any correct parser. SQLite's text-to-REAL conversion is
    not correctly rounded at extreme exponents (``'1.0359917127425884e-297'``
    comes back one unit off), so the text is read back here as Python reads it.
    """
    try:
        return float(text)
    except ValueError:  # a spelling SQLite reads as a number and Python does not
        return sqlite_real


def show(value: Any) -> str:
    """A value for a failure message: reals with their bits when repr hides them."""
    if isinstance(value, float):
        return f"{value!r}[{struct.pack('<d', value).hex()}]"
    return repr(value)


__all__ = [
    "AFFINITY_INPUTS",
    "VALUE_INPUTS",
    "ValueJudge",
    "comparison_mode",
    "datetime_micros",
    "exact",
    "from_micros",
    "instant_micros",
    "show",
    "value_inputs",
]
