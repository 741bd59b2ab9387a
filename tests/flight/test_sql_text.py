"""The as_of hint and ``?`` placeholders, read from SQL text before planning."""

from __future__ import annotations

import pytest

from rhei_lake.errors import QueryError
from rhei_lake.flight.sql_text import number_placeholders, parse_statement
from rhei_lake.timeutil import to_micros

NOON = to_micros("2026-05-01T12:00:00Z")


@pytest.mark.parametrize(
    "sql",
    [
        "/* as_of=2026-05-01T12:00:00Z */ SELECT 1",
        "/*as_of: 2026-05-01T12:00:00Z*/SELECT 1",
        "-- as_of: '2026-05-01 12:00:00Z'\nSELECT 1",
        '  /* a comment */ -- another\n/* AS_OF = "2026-05-01T14:00:00+02:00" */ SELECT 1',
        f"/* as_of={NOON / 1e6} */ SELECT 1",
        f"-- rhei as_of={NOON // 1_000_000}\nSELECT 1",
    ],
)
def test_as_of_hint_in_leading_comments(sql):
    statement = parse_statement(sql)
    assert statement.as_of == NOON
    assert statement.sql == sql


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 /* as_of=2026-05-01T12:00:00Z */",
        "SELECT '/* as_of=2026-05-01 */' AS s",
        "SELECT 1 -- as_of: 2026-05-01",
        "/* not a hint: has_of=2026 */ SELECT 1",
    ],
)
def test_only_leading_comments_carry_the_hint(sql):
    assert parse_statement(sql).as_of is None


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("/* as_of=yesterday */ SELECT 1", "not an ISO 8601"),
        ("/* as_of=1 */ /* as_of=2 */ SELECT 1", "more than one"),
        ("/* as_of=nan */ SELECT 1", "not a finite number"),
        ("/* as_of=99999-01-01 */ SELECT 1", "as_of hint"),
        ("/* as_of=2026-05-01T12:00:00 */ SELECT 1", "as_of hint: '2026-05-01T12:00:00' has no UTC offset"),
        ("-- as_of: '2026-05-01 12:00:00'\nSELECT 1", "append Z for UTC"),
    ],
)
def test_bad_statements_are_query_errors(sql, message):
    with pytest.raises(QueryError, match=message):
        parse_statement(sql)


@pytest.mark.parametrize(
    ("sql", "numbered", "count"),
    [
        ("SELECT * FROM t WHERE a = ? AND b > ?", "SELECT * FROM t WHERE a = $1 AND b > $2", 2),
        ("SELECT '?', \"col?\", ? -- why?\n", "SELECT '?', \"col?\", $1 -- why?\n", 1),
        ("SELECT 'it''s ?' /* ? */, ?", "SELECT 'it''s ?' /* ? */, $1", 1),
        ("SELECT $1, $2", "SELECT $1, $2", 0),
        ("SELECT 1", "SELECT 1", 0),
    ],
)
def test_question_marks_become_numbered_placeholders(sql, numbered, count):
    assert number_placeholders(sql) == (numbered, count)


def test_mixed_placeholder_styles_are_refused():
    with pytest.raises(QueryError, match="not both"):
        number_placeholders("SELECT ? + $1")
