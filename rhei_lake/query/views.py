"""SQL of the per-table views (merge-on-read), as DESIGN.md defines them.

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
    """

    changes: str
    history: str | None = None
    folded: int = 0
    current: str | None = None


# Relation aliases carry the reserved prefix, so no user column can shadow one
# (inside a subquery DataFusion would read ``c."id"`` as field ``id`` of a column ``c``).
_ALIASES = {"history": "_rhei_h", "first": "_rhei_f", "current": "_rhei_c", "event": "_rhei_e"}


def changes_sql(spec: TableSpec, src: ViewSources, as_of: int | None = None) -> str:
    where = f" WHERE {q(TS)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
    cols = ", ".join(q(c) for c in spec.changes_schema.names)
    return f"SELECT {cols} FROM {q(src.changes)}{where}"


def _unfolded(src: ViewSources, as_of: int | None) -> str:
    cutoff = f" AND {q(TS)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
    return f"(SELECT * FROM {q(src.changes)} WHERE {q(SEQ)} > {int(src.folded)}{cutoff})"


def history_sql(spec: TableSpec, src: ViewSources, as_of: int | None = None) -> str:
    tail = _unfolded(src, as_of)
    parts = []
    if src.history is not None:
        h, f = _ALIASES["history"], _ALIASES["first"]
        folded_where = f" WHERE {h}.{q(VALID_FROM)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
        parts.append(
            f"SELECT {user_columns(spec, h)}, {h}.{q(VALID_FROM)}, "
            f"coalesce({h}.{q(VALID_TO)}, {f}.{q(CLOSED_AT)}) AS {q(VALID_TO)}, {h}.{q(SEQ)} "
            f"FROM {q(src.history)} {h} LEFT JOIN ({first_events_sql(spec, tail)}) {f} "
            f"ON {key_match(spec, h, f)} AND {h}.{q(VALID_TO)} IS NULL{folded_where}"
        )
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
    tail = _unfolded(src, None)
    parts = []
    if src.current is not None:
        c, e = _ALIASES["current"], _ALIASES["event"]
        parts.append(
            f"SELECT {user_columns(spec, c)} FROM {q(src.current)} {c} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {tail} {e} WHERE {key_match(spec, e, c)})"
        )
    parts.append(
        f"SELECT {user_columns(spec)} FROM ({latest_events_sql(spec, tail)}) WHERE {q(OP)} <> '{OP_DELETE}'"
    )
    return " UNION ALL ".join(parts)
