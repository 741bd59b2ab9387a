"""SQL of the per-table views (merge-on-read), as docs/design.md defines them.

For a table ``t`` with change feed ``C``, folded history ``H`` and folded
watermark ``F``:

* ``t_changes``: ``C``.
* ``t_history``: ``H`` with each open version closed by the first unfolded
  event of its key, ``UNION ALL`` the versions of the unfolded tail
  (``_rhei_seq > F``): every ``I``/``U`` event opens a version that the next
  event of its key closes (``LEAD``), a ``D`` opens none.
* ``t``: the user columns of the ``t_history`` rows with ``_rhei_valid_to IS NULL``.

In mirror mode there is no history: ``t`` is the ``current`` table with each
key that has unfolded events replaced by its last one (gone if a delete), and
``t_history`` does not exist.

``as_of=T`` rebinds the three to what was known at ``T``: events with
``_rhei_ts <= T``, versions that began by ``T`` (a close after ``T`` reads as
still open), and the rows alive at ``T``. Mirror mode keeps no history, so
there only ``t_changes`` is time-travelled.

A column with a ``valid_from_seq`` (added after registration) reads NULL in
every event, version and current row whose ``_rhei_seq`` is older: the Delta
tables may still hold values of a dropped column of that name there, which
SQLite no longer has. Every view masks by the row's own ``_rhei_seq``, so the
change feed, history, current rows (folded or not) and mirror mode agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import OP, OP_DELETE, SEQ, TS, VALID_FROM, VALID_TO, TableSpec
from rhei_lake.compaction.versions import (
    CLOSED_AT,
    first_events_sql,
    key_match,
    latest_events_sql,
    user_columns,
    versions_sql,
)
from rhei_lake.timeutil import sql_timestamp


@dataclass(frozen=True)
class ViewSources:
    """The registered tables a table's views read from.

    ``history`` (temporal mode) or ``current`` (mirror mode) is the derived
    table when it exists, ``folded`` the highest ``_rhei_seq`` folded into it.
    ``unfolded`` names a table holding exactly the change feed's events past
    ``folded`` (read once when the views are registered), or is ``None`` to
    filter them from ``changes`` at each query. ``all_folded`` says there are
    none: the views are then the derived table alone.
    """

    changes: str
    history: str | None = None
    folded: int = 0
    current: str | None = None
    unfolded: str | None = None
    all_folded: bool = False


# Relation aliases carry the reserved prefix, so no user column can shadow one
# (inside a subquery DataFusion would read ``c."id"`` as field ``id`` of a column ``c``).
_ALIASES = {"history": "_rhei_h", "first": "_rhei_f", "current": "_rhei_c", "event": "_rhei_e"}


def column_values(spec: TableSpec, alias: str | None = None) -> str:
    """The user columns of a row with a ``_rhei_seq``, each NULL where the row predates the column."""
    prefix = f"{alias}." if alias else ""
    parts = []
    for column in spec.columns:
        name = q(column.name)
        if column.valid_from_seq:
            parts.append(
                f"CASE WHEN {prefix}{q(SEQ)} >= {int(column.valid_from_seq)} THEN {prefix}{name} END AS {name}"
            )
        else:
            parts.append(f"{prefix}{name}")
    return ", ".join(parts)


def changes_sql(spec: TableSpec, src: ViewSources, as_of: int | None = None) -> str:
    where = f" WHERE {q(TS)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
    return f"SELECT {column_values(spec)}, {q(SEQ)}, {q(OP)}, {q(TS)} FROM {q(src.changes)}{where}"


def _unfolded(spec: TableSpec, src: ViewSources, as_of: int | None) -> str:
    cutoff = f"{q(TS)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
    if src.unfolded is not None:
        relation, where = q(src.unfolded), cutoff
    else:
        where = f"{q(SEQ)} > {int(src.folded)}{' AND ' + cutoff if cutoff else ''}"
        relation = q(src.changes)
    columns = (
        "*"
        if not any(c.valid_from_seq for c in spec.columns)
        else (f"{column_values(spec)}, {q(SEQ)}, {q(OP)}, {q(TS)}")
    )
    return f"(SELECT {columns} FROM {relation}{' WHERE ' + where if where else ''})"


def history_sql(spec: TableSpec, src: ViewSources, as_of: int | None = None) -> str:
    tail = _unfolded(spec, src, as_of)
    parts = []
    if src.history is not None and src.all_folded:
        h = _ALIASES["history"]
        folded_where = f" WHERE {h}.{q(VALID_FROM)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
        parts.append(
            f"SELECT {column_values(spec, h)}, {h}.{q(VALID_FROM)}, {h}.{q(VALID_TO)}, {h}.{q(SEQ)} "
            f"FROM {q(src.history)} {h}{folded_where}"
        )
    elif src.history is not None:
        h, f = _ALIASES["history"], _ALIASES["first"]
        folded_where = f" WHERE {h}.{q(VALID_FROM)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
        # Only an open version takes the close time (coalesce); the join is on the key alone (one
        # row per key on the right), so DuckDB hashes it rather than looping over every pair.
        parts.append(
            f"SELECT {column_values(spec, h)}, {h}.{q(VALID_FROM)}, "
            f"coalesce({h}.{q(VALID_TO)}, {f}.{q(CLOSED_AT)}) AS {q(VALID_TO)}, {h}.{q(SEQ)} "
            f"FROM {q(src.history)} {h} LEFT JOIN ({first_events_sql(spec, tail)}) {f} "
            f"ON {key_match(spec, h, f)}{folded_where}"
        )
    if not (src.history is not None and src.all_folded):
        parts.append(versions_sql(spec, tail))
    union = " UNION ALL ".join(parts)
    if as_of is None:
        return union
    t = sql_timestamp(as_of)
    return (
        f"SELECT {user_columns(spec)}, {q(VALID_FROM)}, "
        f"CASE WHEN {q(VALID_TO)} > {t} THEN NULL ELSE {q(VALID_TO)} END AS {q(VALID_TO)}, {q(SEQ)} "
        f"FROM ({union})"
    )


def current_sql(spec: TableSpec, history_view: str) -> str:
    return f"SELECT {user_columns(spec)} FROM {q(history_view)} WHERE {q(VALID_TO)} IS NULL"


def mirror_current_sql(spec: TableSpec, src: ViewSources) -> str:
    """Mirror mode's ``t``: the current table's rows whose key has no unfolded event, plus
    each key's last unfolded event unless it is a delete."""
    if src.current is not None and src.all_folded:
        return f"SELECT {column_values(spec)} FROM {q(src.current)}"
    tail = _unfolded(spec, src, None)
    parts = []
    if src.current is not None:
        c, e = _ALIASES["current"], _ALIASES["event"]
        parts.append(
            f"SELECT {column_values(spec, c)} FROM {q(src.current)} {c} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {tail} {e} WHERE {key_match(spec, e, c)})"
        )
    parts.append(f"SELECT {user_columns(spec)} FROM ({latest_events_sql(spec, tail)}) WHERE {q(OP)} <> '{OP_DELETE}'")
    return " UNION ALL ".join(parts)
