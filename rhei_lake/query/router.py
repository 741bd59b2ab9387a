"""Query routing: point reads to SQLite, everything else to the lake (DataFusion).

A statement goes to SQLite (the *OLTP* route: fresh, read-your-writes, an index
lookup) only when both engines would give the same answer with the same types:

* one ``SELECT`` of one mirrored table (no join, subquery, CTE, grouping,
  aggregate, window, ``DISTINCT``), projecting plain columns (``*``,
  ``t.*``, ``col``, ``col AS name``);
* a ``WHERE`` that is a conjunction of ``col = literal`` / ``col IN (literals)``
  with literals of the column's kind (integer, real or text columns), which

  - pins the whole primary key (a point read, or up to :data:`TINY_LIMIT`
    points), or
  - pins a leading part of the key, or is absent with ``ORDER BY`` the key,
    and has ``LIMIT`` <= :data:`TINY_LIMIT` (a tiny lookup by key);
* ``ORDER BY`` only on key columns; no ``as_of``.

Everything else (aggregates, joins, scans, windows, the ``_history`` and
``_changes`` views, ``as_of``) goes to DataFusion (the *OLAP* route), which
sees what has been synced. ``hint="oltp"|"olap"`` forces a route. Writes are
refused on both routes with :class:`~rhei_lake.errors.WriteRefusedError`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from rhei_lake.catalog import TableSpec
from rhei_lake.errors import QueryError, WriteRefusedError

Target = Literal["oltp", "olap"]
TINY_LIMIT = 100
"""The largest LIMIT (or number of key values) a lookup may have and still go to SQLite."""

_READ_COMMANDS = frozenset({"EXPLAIN", "SHOW", "DESCRIBE", "DESC"})
_ALLOWED_SELECT_ARGS = frozenset({"expressions", "from_", "where", "order", "limit", "offset"})


@dataclass(frozen=True)
class OutputColumn:
    """One result column of a point read: its name and the table column it shows."""

    name: str
    column: str


@dataclass(frozen=True)
class Predicate:
    """``column IN values`` (one value: ``column = value``)."""

    column: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class PointRead:
    """A point read, reduced to what SQLite must run: no user SQL text reaches SQLite."""

    table: str
    outputs: tuple[OutputColumn, ...]
    predicates: tuple[Predicate, ...] = ()
    order: tuple[tuple[str, bool], ...] = ()  # (column, descending)
    limit: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class Route:
    """Where a query runs, and why.

    ``target`` is ``"oltp"`` (SQLite, fresh) or ``"olap"`` (the lake through
    DataFusion, as synced); ``table`` is the mirrored table a point read reads.
    """

    target: Target
    reason: str
    table: str | None = None
    forced: bool = False
    plan: PointRead | None = field(default=None, repr=False, compare=False)
    column_types: tuple[pa.DataType | None, ...] | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.target}: {self.reason}"


def route(
    sql: str,
    specs: Mapping[str, TableSpec],
    *,
    as_of: int | None = None,
    hint: str | None = None,
    oltp_available: bool = True,
) -> Route:
    """Decide where ``sql`` runs. Raises WriteRefusedError for writes, QueryError for bad input."""
    if hint not in (None, "oltp", "olap"):
        raise QueryError(f"hint must be 'oltp', 'olap' or None, not {hint!r}")
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("query: SQL must be a non-empty string")
    statement = _read_statement(sql)
    if hint == "olap":
        return Route("olap", "forced by hint='olap'", forced=True)
    if hint == "oltp":
        return _forced_oltp(statement, specs, as_of=as_of, oltp_available=oltp_available)
    if not oltp_available:
        return Route("olap", "no SQLite database: the lake answers every query")
    if as_of is not None:
        return Route("olap", "as_of: the lake's history answers it")
    if statement is None:
        return Route("olap", "not a plain SELECT")
    result = _point_read(statement, specs)
    if isinstance(result, str):
        return Route("olap", result)
    plan, reason = result
    return Route("oltp", reason, table=plan.table, plan=plan)


# -- classification ------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _read_statement(sql: str) -> Any:
    """The parsed statement if it is a query; ``None`` for read-only commands or SQL sqlglot cannot read.

    Writes are refused here; whatever is not understood goes to DataFusion,
    which refuses DDL/DML itself, so no write ever runs through ``query()``.
    Parsed once per distinct text (a dashboard repeats its statements); the
    tree is only read, never changed.
    """
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import SqlglotError

    dialect = Dialect.get_or_raise(None)
    try:
        tokens = dialect.tokenize(sql)
        if tokens and tokens[0].text.upper() in _READ_COMMANDS:
            return None  # parsing them would only log sqlglot's "unsupported syntax" warning
        statements = [s for s in dialect.parser().parse(tokens, sql) if s is not None]
    except SqlglotError:
        return _unreadable(sql)
    if len(statements) > 1:
        raise QueryError("query() runs one statement at a time; use execute_batch() for several writes")
    if not statements:
        raise QueryError("query: SQL must contain a statement")
    statement = statements[0]
    writes = (
        exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
        exp.TruncateTable, exp.Copy, exp.Transaction, exp.Commit, exp.Rollback, exp.Set, exp.Pragma,
    )  # fmt: skip
    if isinstance(statement, writes) or statement.find(*writes[:8]) is not None:
        keyword = type(statement.find(*writes) or statement).__name__.upper()
        raise WriteRefusedError(f"query() is read-only ({keyword} refused); run writes with execute()")
    if isinstance(statement, exp.Command):
        if str(statement.this).upper() in _READ_COMMANDS:
            return None
        raise WriteRefusedError(f"query() is read-only ({statement.this} refused); run it with execute()")
    if isinstance(statement, exp.Describe):
        return None
    if not isinstance(statement, exp.Query):
        raise WriteRefusedError(f"query() runs SELECT statements only, not {type(statement).__name__.upper()}")
    return statement


def _unreadable(sql: str) -> None:
    """SQL the generic dialect cannot read: refused if SQLite's dialect reads a write in it, else DataFusion's."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    try:
        statements = [s for s in sqlglot.parse(sql, read="sqlite") if s is not None]
    except SqlglotError:
        return None
    writes = [s for s in statements if not isinstance(s, exp.Query)]
    if writes:
        keyword = str(writes[0].this).upper() if isinstance(writes[0], exp.Command) else type(writes[0]).__name__
        raise WriteRefusedError(f"query() is read-only ({keyword.upper()} refused); run writes with execute()")
    return None


def _forced_oltp(statement: Any, specs: Mapping[str, TableSpec], *, as_of: int | None, oltp_available: bool) -> Route:
    if not oltp_available:
        raise QueryError("hint='oltp' needs the lake's SQLite database: open it with oltp_path=")
    if as_of is not None:
        raise QueryError("as_of is answered by the lake's history; it cannot be combined with hint='oltp'")
    if statement is None:
        raise QueryError("hint='oltp' runs SELECT statements only")
    table, types = _projection_types(statement, specs)
    return Route("oltp", "forced by hint='oltp'", table=table, forced=True, column_types=types)


# -- point reads -----------------------------------------------------------------
def _point_read(statement: Any, specs: Mapping[str, TableSpec]) -> tuple[PointRead, str] | str:
    """The plan of a point read, or why ``statement`` is not one."""
    from sqlglot import exp

    if not isinstance(statement, exp.Select):
        return "not a single SELECT"
    extra = sorted(k for k, v in statement.args.items() if v and k not in _ALLOWED_SELECT_ARGS)
    if extra:
        return f"uses {', '.join(a.rstrip('_').upper() for a in extra)}"
    found = _single_table(statement, specs)
    if isinstance(found, str):
        return found
    spec, qualifiers = found
    outputs = _outputs(statement, spec, qualifiers)
    if isinstance(outputs, str):
        return outputs
    predicates = _predicates(statement, spec, qualifiers)
    if isinstance(predicates, str):
        return predicates
    order = _order(statement, spec, qualifiers)
    if isinstance(order, str):
        return order
    limit = _int_arg(statement, "limit")
    offset = _int_arg(statement, "offset")
    if isinstance(limit, str):
        return limit
    if isinstance(offset, str):
        return offset
    plan = PointRead(spec.name, outputs, predicates, order, limit, offset)
    return _classify(plan, spec)


def _classify(plan: PointRead, spec: TableSpec) -> tuple[PointRead, str] | str:
    key = spec.primary_key
    pinned: dict[str, int] = {}
    for pred in plan.predicates:
        pinned[pred.column] = min(pinned.get(pred.column, len(pred.values)), len(pred.values))
    points = 1
    for column in key:
        points *= pinned.get(column, 0) or 0
    if all(c in pinned for c in key) and points <= TINY_LIMIT:
        what = "point read" if points == 1 else f"{points}-point read"
        return plan, f"{what} on the primary key ({', '.join(key)})"
    tiny = plan.limit is not None and plan.limit <= TINY_LIMIT
    if tiny and key[0] in pinned:
        return plan, f"key-prefix lookup with LIMIT {plan.limit}"
    if tiny and not plan.predicates and plan.order and plan.order[0][0] == key[0]:
        return plan, f"first {plan.limit} rows in key order"
    if plan.limit is not None and not tiny:
        return f"LIMIT {plan.limit} is above {TINY_LIMIT}"
    return f"the WHERE clause does not pin the primary key ({', '.join(key)})"


def _single_table(statement: Any, specs: Mapping[str, TableSpec]) -> tuple[TableSpec, set[str]] | str:
    from sqlglot import exp

    source = statement.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table):
        return "does not read one table"
    table = source.this
    if not isinstance(table.args.get("this"), exp.Identifier):
        return "reads a table function"
    if table.args.get("db") and table.db.lower() != "main" or table.args.get("catalog"):
        return "reads a qualified table name"
    spec = _resolve_table(table.args["this"], specs)
    if spec is None:
        name = table.name
        if name.lower().endswith(("_history", "_changes")):
            return "reads a _history/_changes view (lake only)"
        return f"{name!r} is not a mirrored table"
    alias = table.args.get("alias")
    qualifiers = {_ident_key(alias.this)} if alias is not None and alias.this else {_ident_key(table.args["this"])}
    return spec, qualifiers


def _resolve_table(ident: Any, specs: Mapping[str, TableSpec]) -> TableSpec | None:
    name = ident.this
    for canonical, spec in specs.items():
        if (ident.quoted and name in (canonical, canonical.lower())) or (
            not ident.quoted and name.lower() == canonical.lower()
        ):
            return spec
    return None


def _ident_key(ident: Any) -> str:
    """How DataFusion normalises an identifier: unquoted ones are lower-cased."""
    name = str(ident.this)
    return name if ident.quoted else name.lower()


def _column(node: Any, spec: TableSpec, qualifiers: set[str]) -> str | None:
    """The spec column a Column node names (as DataFusion would resolve it), or None."""
    from sqlglot import exp

    if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
        return None
    if node.args.get("db") or node.args.get("catalog"):
        return None
    qualifier = node.args.get("table")
    if qualifier is not None and _ident_key(qualifier) not in qualifiers:
        return None
    wanted = _ident_key(node.this)
    return wanted if wanted in spec.column_names else None


def _outputs(statement: Any, spec: TableSpec, qualifiers: set[str]) -> tuple[OutputColumn, ...] | str:
    from sqlglot import exp

    outputs: list[OutputColumn] = []
    for item in statement.expressions:
        if isinstance(item, exp.Star) or (
            isinstance(item, exp.Column)
            and isinstance(item.this, exp.Star)
            and (item.args.get("table") is None or _ident_key(item.args["table"]) in qualifiers)
        ):
            if item.args.get("except_") or item.args.get("replace") or item.args.get("rename"):
                return "modifies *"
            outputs.extend(OutputColumn(c, c) for c in spec.column_names)
            continue
        name = None
        node = item
        if isinstance(item, exp.Alias):
            node = item.this
            name = _ident_key(item.args["alias"])
        column = _column(node, spec, qualifiers)
        if column is None:
            return "selects an expression, not a plain column"
        outputs.append(OutputColumn(name or column, column))
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        return "repeats a result column name"
    return tuple(outputs)


def _predicates(statement: Any, spec: TableSpec, qualifiers: set[str]) -> tuple[Predicate, ...] | str:
    from sqlglot import exp

    where = statement.args.get("where")
    if where is None:
        return ()
    out = []
    for term in _conjuncts(where.this):
        if isinstance(term, exp.EQ):
            column = _column(term.this, spec, qualifiers)
            value_node = term.expression
            if column is None:
                column = _column(term.expression, spec, qualifiers)
                value_node = term.this
            if column is None:
                return "the WHERE clause is not only column = literal terms"
            value = _literal(value_node, spec.column(column).arrow_type)
            if value is _NO_VALUE:
                return f"compares {column!r} with something other than a literal of its type"
            out.append(Predicate(column, (value,)))
        elif isinstance(term, exp.In) and not term.args.get("query") and not term.args.get("unnest"):
            column = _column(term.this, spec, qualifiers)
            if column is None:
                return "the WHERE clause is not only column = literal terms"
            dtype = spec.column(column).arrow_type
            values = tuple(_literal(v, dtype) for v in term.expressions)
            if not values or any(v is _NO_VALUE for v in values):
                return f"compares {column!r} with something other than literals of its type"
            if len(values) > TINY_LIMIT:
                return f"IN list of {len(values)} values is above {TINY_LIMIT}"
            out.append(Predicate(column, tuple(dict.fromkeys(values))))
        else:
            return "the WHERE clause is not only column = literal terms"
    return tuple(out)


def _conjuncts(node: Any) -> list[Any]:
    from sqlglot import exp

    node = node.unnest()
    if isinstance(node, exp.And):
        return _conjuncts(node.this) + _conjuncts(node.expression)
    return [node]


_NO_VALUE = object()
_INT64 = (-(2**63), 2**63 - 1)


def _literal(node: Any, dtype: pa.DataType) -> Any:
    """The Python value of a literal if it suits a column of ``dtype`` on both engines alike."""
    from sqlglot import exp

    negative = isinstance(node, exp.Neg)
    if negative:
        node = node.this
    if not isinstance(node, exp.Literal):
        return _NO_VALUE
    text = node.this
    if node.is_string:
        return text if pa.types.is_string(dtype) and not negative else _NO_VALUE
    try:
        if pa.types.is_int64(dtype):
            if not text.isdigit():
                return _NO_VALUE
            value = -int(text) if negative else int(text)
            return value if _INT64[0] <= value <= _INT64[1] else _NO_VALUE
        if pa.types.is_float64(dtype):
            number = float(text)
            if number in (float("inf"), float("-inf")):
                return _NO_VALUE
            return -number if negative else number
    except ValueError:
        return _NO_VALUE
    return _NO_VALUE


def _order(statement: Any, spec: TableSpec, qualifiers: set[str]) -> tuple[tuple[str, bool], ...] | str:
    order = statement.args.get("order")
    if order is None:
        return ()
    out = []
    for item in order.expressions:
        column = _column(item.this, spec, qualifiers)
        if column is None or column not in spec.primary_key:
            return "orders by something other than key columns"
        out.append((column, bool(item.args.get("desc"))))
    return tuple(out)


def _int_arg(statement: Any, name: str) -> int | None | str:
    from sqlglot import exp

    node = statement.args.get(name)
    if node is None:
        return None
    value = node.args.get("expression")
    if not isinstance(value, exp.Literal) or value.is_string or not value.this.isdigit():
        return f"{name.upper()} is not a plain number"
    return int(value.this)


def _projection_types(
    statement: Any, specs: Mapping[str, TableSpec]
) -> tuple[str | None, tuple[pa.DataType | None, ...] | None]:
    """For a forced OLTP read of plain columns of one mirrored table: the declared Arrow types."""
    from sqlglot import exp

    if not isinstance(statement, exp.Select):
        return None, None
    found = _single_table(statement, specs)
    if isinstance(found, str):
        return None, None
    spec, qualifiers = found
    types: list[pa.DataType | None] = []
    for item in statement.expressions:
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star)):
            types.extend(c.arrow_type for c in spec.columns)
            continue
        column = _column(node, spec, qualifiers)
        types.append(spec.column(column).arrow_type if column else None)
    return spec.name, tuple(types)
