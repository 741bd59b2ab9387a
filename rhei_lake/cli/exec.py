"""``rh exec``: SQL on the SQLite database, as sqlite3 runs it, then committed to the lake."""

from __future__ import annotations

import re
import sqlite3

import rhei_lake
from rhei_lake.cli import common
from rhei_lake.cli.repl import is_read, split_statements
from rhei_lake.errors import RheiError


def statements(text: str) -> list[str]:
    """The statements of ``text``: split at ';' outside quotes and comments, trigger bodies kept whole."""
    pieces, rest = split_statements(text)
    if rest.strip():
        pieces.append(rest.strip())
    out: list[str] = []
    pending = ""
    for piece in pieces:
        pending = f"{pending};\n{piece}" if pending else piece
        if sqlite3.complete_statement(pending + ";"):  # false inside CREATE TRIGGER ... BEGIN ... END
            out.append(pending)
            pending = ""
    if pending:
        out.append(pending)
    return out


def run_exec(lake: rhei_lake.Lake, sql: str) -> None:
    """Run ``sql`` (one statement or several, all or nothing), print rows or the rows changed, then sync."""
    parts = statements(sql)
    if not parts:
        common.usage_error("SQL: nothing to run (the text holds no statement)")
    if len(parts) == 1 and is_read(parts[0]) and _print_rows(lake, parts[0]):
        return
    if len(parts) == 1:
        changed = _execute_printing_rows(lake, parts[0])
    elif not any(is_read(p) or _may_return_rows(p) for p in parts):
        # one batch: a rebuild (create, copy, drop, rename) is followed
        changed = lake.execute_batch(parts)
    else:
        changed = _in_one_transaction(lake, parts)
    common.console.print(f"ok, {changed:,} row{'' if changed == 1 else 's'} changed", highlight=False)
    lake.sync_now()


def _in_one_transaction(lake: rhei_lake.Lake, parts: list[str]) -> int:
    """Writes and queries mixed: one transaction, each query's rows printed as it runs (its own writes seen)."""
    changed = 0
    lake.execute("BEGIN IMMEDIATE")
    try:
        for part in parts:
            if not (is_read(part) and _print_rows(lake, part)):
                changed += _execute_printing_rows(lake, part)
        lake.execute("COMMIT")
    except BaseException:
        try:
            lake.execute("ROLLBACK")
        except RheiError:
            pass  # SQLite rolled back already
        raise
    return changed


def _print_rows(lake: rhei_lake.Lake, sql: str) -> bool:
    """Print the rows of a query run on the database; ``False`` if it writes after all (``WITH ... INSERT``)."""
    try:
        result = lake.query(sql, hint="oltp")
    except rhei_lake.WriteRefusedError:
        return False
    common.write_table(result, "table", None)
    return True


def _execute_printing_rows(lake: rhei_lake.Lake, sql: str) -> int:
    """Run a write; the rows a ``RETURNING`` clause returns are printed. Returns the rows changed."""
    result = lake.execute_returning(sql)
    if result.columns:
        common.write_rows(result.columns, [dict(enumerate(row)) for row in result.rows])
    return result.changed


def _may_return_rows(sql: str) -> bool:
    """Whether a write may return rows (a ``RETURNING`` clause; a word in a literal only costs a batch)."""
    return re.search(r"\bRETURNING\b", sql, flags=re.IGNORECASE) is not None
