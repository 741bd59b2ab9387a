"""SQL of the per-table views (merge-on-read), as DESIGN.md defines them.

For a table ``t`` with change feed ``C``, folded history ``H`` and folded
watermark ``F``:

* ``t_changes``: ``C``.
* ``t_history``: ``H`` with each open version closed by the first unfolded
  event of its key, ``UNION ALL`` the versions of the unfolded tail
  (``_rhei_seq > F``): every ``I``/``U`` event opens a version that the next
  event of its key closes (``LEAD``), a ``D`` opens none.
* ``t``: the user columns of the ``t_history`` rows with ``_rhei_valid_to IS NULL``.

``as_of=T`` rebinds the three to what was known at ``T``: events with
``_rhei_ts <= T``, versions that began by ``T`` (a close after ``T`` reads as
still open), and the rows alive at ``T``.
"""

from __future__ import annotations

from dataclasses import dataclass

from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import OP, OP_DELETE, SEQ, TS, VALID_FROM, VALID_TO, TableSpec
from rhei_lake.timeutil import sql_timestamp


@dataclass(frozen=True)
class ViewSources:
    """The registered tables a table's views read from."""

    changes: str
    history: str | None = None
    folded: int = 0


def _cols(spec: TableSpec, alias: str | None = None) -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{q(c)}" for c in spec.column_names)


def _key_match(spec: TableSpec, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in spec.primary_key)


def changes_sql(spec: TableSpec, src: ViewSources, as_of: int | None = None) -> str:
    where = f" WHERE {q(TS)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
    cols = ", ".join(q(c) for c in spec.changes_schema.names)
    return f"SELECT {cols} FROM {q(src.changes)}{where}"


def history_sql(spec: TableSpec, src: ViewSources, as_of: int | None = None) -> str:
    pk = ", ".join(q(k) for k in spec.primary_key)
    cutoff = f" AND {q(TS)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
    tail = f"SELECT * FROM {q(src.changes)} WHERE {q(SEQ)} > {int(src.folded)}{cutoff}"
    tail_versions = (
        f"SELECT {_cols(spec)}, {q(TS)} AS {q(VALID_FROM)}, {q(VALID_TO)}, {q(SEQ)} FROM ("
        f"SELECT *, LEAD({q(TS)}) OVER (PARTITION BY {pk} ORDER BY {q(SEQ)}) AS {q(VALID_TO)} FROM ({tail})"
        f") WHERE {q(OP)} <> '{OP_DELETE}'"
    )
    parts = []
    if src.history is not None:
        first = (
            f"SELECT {pk}, first_value({q(TS)} ORDER BY {q(SEQ)}) AS __closed_at FROM ({tail}) GROUP BY {pk}"
        )
        folded_where = f" WHERE h.{q(VALID_FROM)} <= {sql_timestamp(as_of)}" if as_of is not None else ""
        parts.append(
            f"SELECT {_cols(spec, 'h')}, h.{q(VALID_FROM)}, "
            f"coalesce(h.{q(VALID_TO)}, f.__closed_at) AS {q(VALID_TO)}, h.{q(SEQ)} "
            f"FROM {q(src.history)} h LEFT JOIN ({first}) f ON {_key_match(spec, 'h', 'f')} "
            f"AND h.{q(VALID_TO)} IS NULL{folded_where}"
        )
    parts.append(tail_versions)
    union = " UNION ALL ".join(parts)
    if as_of is None:
        return union
    t = sql_timestamp(as_of)
    return (
        f"SELECT {_cols(spec)}, {q(VALID_FROM)}, "
        f"CASE WHEN {q(VALID_TO)} > {t} THEN NULL ELSE {q(VALID_TO)} END AS {q(VALID_TO)}, {q(SEQ)} "
        f"FROM ({union})"
    )


def current_sql(spec: TableSpec, history_view: str) -> str:
    return f"SELECT {_cols(spec)} FROM {q(history_view)} WHERE {q(VALID_TO)} IS NULL"
