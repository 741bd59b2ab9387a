"""The CDC triggers: AFTER INSERT/UPDATE/DELETE on a table append to ``_rhei_cdc_log``.

Row images go into the log's untyped value columns ``c0..cN`` (column ``i`` of
the table into ``c<i>``). A column without a declared type stores every value
exactly as SQLite holds it, so a REAL keeps all 64 bits (``json_object`` would
print 15 significant digits and lose most doubles).

* INSERT → ``I`` with the new image.
* UPDATE that keeps the primary key → ``U`` with the new image; an UPDATE that
  changes nothing is not an event.
* UPDATE that changes the primary key → ``D`` of the old image, then ``I``.
* DELETE → ``D`` with the last image.

The timestamp is the SQLite clock (millisecond resolution), stored as a julian
day and read as microseconds (:data:`TS_MICROS`); events in one millisecond
keep their order by sequence.
"""

from __future__ import annotations

import sqlite3

from rhei_lake.capture.sqlite_schema import quote_ident, quote_literal
from rhei_lake.catalog import TableSpec

LOG_TABLE = "_rhei_cdc_log"
# The trigger stores SQLite's clock as it comes (a julian day, exact to the millisecond);
# turning it into epoch microseconds is left to the reader: on the write path every
# function call costs (this form makes a captured insert ~17% cheaper than epoch
# microseconds; the argument-less form, which skips parsing 'now', another ~2.5%).
NOW = "julianday()"
TS_MICROS = "(CASE WHEN typeof(ts) = 'real' THEN CAST(ROUND((ts - 2440587.5) * 86400000.0) AS INTEGER) * 1000 ELSE ts END)"
"""The log's ``ts`` as UTC epoch microseconds (older logs stored microseconds already)."""
_TRIGGER_KINDS = ("ins", "upd", "rekey", "del")


def trigger_name(table: str, kind: str) -> str:
    return f"_rhei_cdc_{kind}_{table}"


def _insert(spec: TableSpec, op: str, image: str) -> str:
    slots = ", ".join(f"c{i}" for i in range(len(spec.columns)))
    values = ", ".join(f"{image}.{quote_ident(c.name)}" for c in spec.columns)
    return (
        f"INSERT INTO {LOG_TABLE} (tbl, op, ts, {slots}) "
        f"VALUES ({quote_literal(spec.name)}, '{op}', {NOW}, {values});"
    )


def trigger_ddl(spec: TableSpec) -> list[str]:
    """CREATE TRIGGER statements capturing every change of ``spec``'s table."""
    table = quote_ident(spec.name)
    same_key = " AND ".join(f"OLD.{quote_ident(k)} IS NEW.{quote_ident(k)}" for k in spec.primary_key)
    others = [c.name for c in spec.columns if c.name not in spec.primary_key]
    changed = " OR ".join(f"OLD.{quote_ident(c)} IS NOT NEW.{quote_ident(c)}" for c in others) or "0"
    name = {kind: quote_ident(trigger_name(spec.name, kind)) for kind in _TRIGGER_KINDS}
    return [
        f"CREATE TRIGGER {name['ins']} AFTER INSERT ON {table} BEGIN {_insert(spec, 'I', 'NEW')} END",
        f"CREATE TRIGGER {name['upd']} AFTER UPDATE ON {table} WHEN ({same_key}) AND ({changed}) "
        f"BEGIN {_insert(spec, 'U', 'NEW')} END",
        f"CREATE TRIGGER {name['rekey']} AFTER UPDATE ON {table} WHEN NOT ({same_key}) "
        f"BEGIN {_insert(spec, 'D', 'OLD')} {_insert(spec, 'I', 'NEW')} END",
        f"CREATE TRIGGER {name['del']} AFTER DELETE ON {table} BEGIN {_insert(spec, 'D', 'OLD')} END",
    ]


def install_triggers(conn: sqlite3.Connection, spec: TableSpec) -> None:
    """(Re)create the triggers of ``spec`` (inside the caller's transaction)."""
    drop_triggers(conn, spec.name)
    for ddl in trigger_ddl(spec):
        conn.execute(ddl)


def drop_triggers(conn: sqlite3.Connection, table: str) -> None:
    for kind in _TRIGGER_KINDS:
        conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(trigger_name(table, kind))}")
