"""What the read commands (``rh query``, ``rh info``) and ``rh sync`` say beyond the library's answer."""

from __future__ import annotations

import re
import shlex

import pyarrow as pa

import rhei_lake
from rhei_lake.cli import common
from rhei_lake.cli.runner import Interrupted
from rhei_lake.errors import QueryError
from rhei_lake.timeutil import Instant

_MISSING_TABLE = re.compile(r"table '(?:[^'.]+\.)*([^'.]+)' not found")


def run_query(lake: rhei_lake.Lake, sql: str, *, as_of: Instant | None, hint: str | None) -> pa.Table:
    """``lake.query``, cancelled by Ctrl-C; a missing table that the database holds says how to mirror it."""
    try:
        return lake.query(sql, as_of=as_of, hint=hint)
    except KeyboardInterrupt:
        raise Interrupted("query cancelled (Ctrl-C)") from None
    except QueryError as exc:
        missing = _MISSING_TABLE.search(str(exc))
        if missing is None:
            raise
        raise QueryError(f"{exc}; {how_to_mirror(lake, missing.group(1))}") from None


def how_to_mirror(lake: rhei_lake.Lake, table: str) -> str:
    """Why ``table`` is not in the lake, and the command that mirrors it."""
    db = lake.config.oltp_path
    unmirrored = {name.lower(): name for name in lake.unmirrored_tables()}
    if db and table.lower() in unmirrored:
        name = unmirrored[table.lower()]
        return (
            f"{name} is a table of {db} that is not mirrored: "
            f"rh register --db {shlex.quote(db)} {shlex.quote(name)} mirrors it"
        )
    known = lake.tables()
    if not known:
        return f"the lake at {lake.location.describe()} has no mirrored tables yet"
    return f"the lake mirrors {', '.join(known)}"


def unmirrored_note(lake: rhei_lake.Lake) -> str | None:
    """A warning naming the database's tables the lake does not mirror (``rh sync`` prints it)."""
    names = lake.unmirrored_tables()
    if not names:
        return None
    db = shlex.quote(lake.config.oltp_path or "")
    listed = ", ".join(names)
    return (
        f"not mirrored (their changes are not synced): {listed}; "
        f"rh register --db {db} {' '.join(shlex.quote(n) for n in names)} mirrors them"
    )


def mode(lake: rhei_lake.Lake) -> str:
    """How this lake is fed, in words."""
    if lake.config.source is not None:
        from rhei_lake.capture.source_url import mask_url

        return f"sidecar: polls {mask_url(lake.config.source)}"
    if lake.config.oltp_path is not None:
        return f"HTAP: captures {lake.config.oltp_path} with triggers"
    return "lake only: no source configured"


def show_info(lake: rhei_lake.Lake) -> None:
    import datafusion
    import deltalake

    table = common.rich_table("component", "value")
    table.add_row("rhei_lake", rhei_lake.__version__)
    table.add_row("pyarrow", pa.__version__)
    table.add_row("deltalake", deltalake.__version__)
    table.add_row("datafusion", datafusion.__version__)
    table.add_row("mode", mode(lake))
    table.add_row("storage", lake.location.describe())
    for name in lake.tables():
        spec = lake.table_spec(name)
        table.add_row(f"table {name}", f"key ({', '.join(spec.primary_key)}), {len(spec.columns)} columns")
    for name in lake.unmirrored_tables():
        table.add_row(f"table {name}", "not mirrored (rh register mirrors it)")
    common.console.print(table)
