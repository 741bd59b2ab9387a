"""What the server reads in SQL text before DataFusion plans it: the ``as_of`` hint and ``?`` placeholders.

Flight SQL has no field for a point in time, so a statement names one in a
leading comment, which every client (ADBC, JDBC, DBeaver) passes through::

    /* as_of=2026-05-01T12:00:00Z */ SELECT * FROM orders
    -- as_of: 1777636800
    SELECT * FROM orders

DataFusion numbers its placeholders (``$1``, ``$2``); JDBC and the Python
DB-API write ``?``. :func:`number_placeholders` rewrites each ``?`` outside
literals, quoted identifiers and comments to the next ``$n``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rhei_lake.errors import QueryError
from rhei_lake.timeutil import to_micros

_HINT = re.compile(r"""\bas_of\s*[=:]\s*(?:'([^']*)'|"([^"]*)"|([^\s'"*]+))""", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    """A client's SQL with its ``as_of`` hint resolved (UTC microseconds, or None)."""

    sql: str
    as_of: int | None = None


def parse_statement(sql: str) -> Statement:
    """Read the ``as_of`` hint from the comments that open ``sql``.

    Raises :class:`~rhei_lake.errors.QueryError` for an empty statement, an
    unreadable instant, or two hints.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("the SQL statement is empty")
    hints = [m for comment in _leading_comments(sql) for m in _HINT.finditer(comment)]
    if not hints:
        return Statement(sql)
    if len(hints) > 1:
        raise QueryError("the statement has more than one as_of hint")
    quoted_single, quoted_double, bare = hints[0].groups()
    text = next(v for v in (quoted_single, quoted_double, bare) if v is not None)
    try:
        instant: str | float = float(text) if bare is not None and _is_number(text) else text
        micros = to_micros(instant, what="as_of hint")
    except Exception as exc:  # ConfigError names the problem
        raise QueryError(str(exc)) from exc
    return Statement(sql, micros)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _leading_comments(sql: str) -> list[str]:
    comments = []
    i, n = 0, len(sql)
    while i < n:
        if sql[i].isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            comments.append(sql[i + 2 : end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                break
            comments.append(sql[i + 2 : end])
            i = end + 2
        else:
            break
    return comments


def number_placeholders(sql: str) -> tuple[str, int]:
    """``sql`` with each ``?`` placeholder rewritten to ``$1``, ``$2``, ...; and how many there were.

    ``?`` inside string literals, quoted identifiers and comments is left
    alone. Mixing ``?`` with ``$n`` placeholders is refused (QueryError).
    """
    out: list[str] = []
    count = 0
    numbered = False
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            end = _closing_quote(sql, i)
            out.append(sql[i:end])
            i = end
            continue
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
        else:
            end = -1
        if end >= 0:
            out.append(sql[i:end])
            i = end
            continue
        if ch == "?":
            count += 1
            out.append(f"${count}")
        else:
            if ch == "$" and i + 1 < n and sql[i + 1].isdigit():
                numbered = True
            out.append(ch)
        i += 1
    if count and numbered:
        raise QueryError("use either ? or $1-style placeholders in a statement, not both")
    return "".join(out), count


def _closing_quote(sql: str, start: int) -> int:
    """The index just past the quoted run opened at ``start`` (a doubled quote escapes it)."""
    quote = sql[start]
    i = start + 1
    while i < len(sql):
        if sql[i] == quote:
            if i + 1 < len(sql) and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(sql)
