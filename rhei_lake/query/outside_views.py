"""``CREATE VIEW`` statements that give engines outside rhei_lake the lake's views, over the Delta tables alone.

For each mirrored table ``t``: ``t_changes``, ``t_history`` (temporal mode)
and ``t``, plus an ``as_of`` form, in the SQL of DuckDB, Spark or Trino. The
view bodies are the merge-on-read SQL rhei_lake runs itself
(:mod:`rhei_lake.query.views`), transpiled by sqlglot, with two substitutions:

* the folded watermark, which rhei_lake reads from the derived table's app
  transaction, is the highest ``_rhei_seq`` in ``history`` (``current``),
  evaluated at query time. Events between that and the real watermark can only
  be deletes already applied by the fold, and re-applying one changes nothing,
  so the views are right at any flush and fold state;
* DataFusion-only functions become portable ones (``first_value(x ORDER BY y)``
  as an aggregate is ``arg_min``/``min_by``; instants are timestamp literals).

They show what is in the Delta changelog: events still in a syncing process's
hot-path tail appear once it is flushed (``tail_flush_interval``, ``close()``).
Regenerate them after a schema change, and once after the first compaction of
a table (before it, there is no derived table to read).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlparse

from rhei_lake.capture.sqlite_schema import quote_ident as q
from rhei_lake.catalog import SEQ, VALID_TO, TableSpec
from rhei_lake.compaction.versions import user_columns
from rhei_lake.config import is_secret_key
from rhei_lake.errors import ConfigError
from rhei_lake.query import views

Dialect = Literal["duckdb", "spark", "trino"]
DIALECTS: tuple[Dialect, ...] = ("duckdb", "spark", "trino")

AS_OF_PARAMETER = "_rhei_as_of"
"""The parameter of DuckDB's ``t_as_of(...)`` table macros (the reserved prefix: no user column has it)."""

TRINO_CATALOG = "lake"
TRINO_SCHEMA = "rhei"
_SENTINEL = 4_102_444_800_123_457  # 2100-01-01T00:00:00.123457Z: a stand-in for the as_of instant, replaced


@dataclass(frozen=True)
class OutsideTable:
    """One mirrored table as outside engines find it: its spec and its Delta tables' URIs."""

    spec: TableSpec
    mode: Literal["temporal", "mirror"]
    changes_uri: str
    derived_uri: str | None  # history (temporal) or current (mirror); None before the first compaction


def render(
    tables: Sequence[OutsideTable],
    dialect: str,
    *,
    storage_options: Mapping[str, str] | None = None,
    as_of: int | None = None,
    show_secrets: bool = False,
) -> str:
    """The statements for ``dialect``, ``;``-terminated, with the store settings it needs first.

    Secrets in the settings read ``***`` unless ``show_secrets``. DuckDB gets
    ``t_as_of(instant)`` table macros; Spark and Trino, which have none, get
    ``t_as_of`` views at ``as_of`` (UTC microseconds) when it is given.
    """
    if dialect not in DIALECTS:
        raise ConfigError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
    target = _DIALECT_CLASSES[dialect](storage_options or {}, show_secrets)
    lines = [f"-- rhei_lake views for {dialect}: the state held in the Delta tables (see docs/outside-engines.md)"]
    lines += target.preamble([t.changes_uri for t in tables])
    for table in tables:
        lines += _table_statements(table, target, as_of)
    return "\n".join(lines) + "\n"


def _table_statements(table: OutsideTable, target: _Target, as_of: int | None) -> list[str]:
    spec, name = table.spec, table.spec.name
    changes_src, derived_src, unfolded = f"{name}__rhei_changes", f"{name}__rhei_derived", f"{name}__rhei_unfolded"
    out = [f"-- table {name} ({table.mode})"]
    out.append(target.source(changes_src, table.changes_uri))
    if table.derived_uri is not None:
        out.append(target.source(derived_src, table.derived_uri))
        folded = f"(SELECT coalesce(max({q(SEQ)}), 0) FROM {q(derived_src)})"
        out.append(target.view(unfolded, f"SELECT * FROM {q(changes_src)} WHERE {q(SEQ)} > {folded}"))
    else:
        out.append(f"-- {name} is not compacted yet: regenerate these views after its first compaction")
        out.append(target.view(unfolded, f"SELECT * FROM {q(changes_src)}"))
    derived = derived_src if table.derived_uri is not None else None
    if table.mode == "mirror":
        src = views.ViewSources(changes_src, current=derived, unfolded=unfolded)
        out.append(target.view(f"{name}_changes", views.changes_sql(spec, src)))
        out.append(target.view(name, views.mirror_current_sql(spec, src)))
        out.append(f"-- {name} is kept in mirror mode: no history, so only {name}_changes can be read as of an instant")
        if target.macros or as_of is not None:
            out.append(target.as_of_view(f"{name}_changes_as_of", views.changes_sql(spec, src, _SENTINEL), as_of))
        return out
    src = views.ViewSources(changes_src, history=derived, unfolded=unfolded)
    out.append(target.view(f"{name}_changes", views.changes_sql(spec, src)))
    out.append(target.view(f"{name}_history", views.history_sql(spec, src)))
    out.append(target.view(name, views.current_sql(spec, f"{name}_history")))
    if target.macros or as_of is not None:
        history = views.history_sql(spec, src, _SENTINEL)
        current = f"SELECT {user_columns(spec)} FROM ({history}) WHERE {q(VALID_TO)} IS NULL"
        out.append(target.as_of_view(f"{name}_as_of", current, as_of))
        out.append(target.as_of_view(f"{name}_history_as_of", history, as_of))
        out.append(target.as_of_view(f"{name}_changes_as_of", views.changes_sql(spec, src, _SENTINEL), as_of))
    return out


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class _Target:
    """What differs between dialects: how a Delta table is named, how views and instants are written."""

    name: Dialect
    macros = False

    def __init__(self, options: Mapping[str, str], show_secrets: bool) -> None:
        self.options = {k.upper(): v for k, v in options.items()}
        self.show_secrets = show_secrets

    def secret(self, key: str) -> str:
        value = self.options.get(key, "")
        return value if self.show_secrets or not is_secret_key(key) else "***"

    def preamble(self, uris: Sequence[str]) -> list[str]:
        return []

    def source(self, name: str, uri: str) -> str:
        return self.view(name, f"SELECT * FROM {self.scan(uri)}", transpile=False)

    def scan(self, uri: str) -> str:
        raise NotImplementedError

    def create_view(self, name: str) -> str:
        raise NotImplementedError

    def view(self, name: str, sql: str, *, transpile: bool = True) -> str:
        body = self.transpile(sql) if transpile else sql
        return f"{self.create_view(name)} AS {body};"

    def instant(self, micros: int) -> str:
        raise NotImplementedError

    def as_of_view(self, name: str, sql: str, as_of: int | None) -> str:
        assert as_of is not None
        return self.view(name, sql.replace(_sentinel_text(), _sentinel_text(as_of)))

    def transpile(self, sql: str) -> str:
        import sqlglot
        from sqlglot import exp

        def portable(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.FirstValue) and isinstance(node.this, exp.Order):
                order = node.this.expressions
                if len(order) == 1 and not order[0].args.get("desc"):
                    return exp.ArgMin(this=node.this.this, expression=order[0].this)
            if isinstance(node, exp.Anonymous) and node.name.lower() == "arrow_cast":
                return self.instant_expression(int(node.expressions[0].name))
            return node

        tree = sqlglot.parse_one(sql, read="postgres").transform(portable)
        return tree.sql(dialect=self.name)

    def instant_expression(self, micros: int):
        import sqlglot

        return sqlglot.parse_one(self.instant(micros), read=self.name)


def _sentinel_text(micros: int = _SENTINEL) -> str:
    from rhei_lake.timeutil import sql_timestamp

    return sql_timestamp(micros)


class _DuckDB(_Target):
    name: Dialect = "duckdb"
    macros = True

    def preamble(self, uris: Sequence[str]) -> list[str]:
        lines = ["-- needs DuckDB's delta extension (INSTALL delta; LOAD delta;), and httpfs for S3"]
        if any(u.startswith("s3://") for u in uris):
            lines.append(self.s3_secret())
        return lines

    def s3_secret(self) -> str:
        parts = ["TYPE s3"]
        if "AWS_ACCESS_KEY_ID" in self.options:
            parts += [
                f"KEY_ID '{_sql_string(self.secret('AWS_ACCESS_KEY_ID'))}'",
                f"SECRET '{_sql_string(self.secret('AWS_SECRET_ACCESS_KEY'))}'",
            ]
        if "AWS_SESSION_TOKEN" in self.options:
            parts.append(f"SESSION_TOKEN '{_sql_string(self.secret('AWS_SESSION_TOKEN'))}'")
        parts.append(f"REGION '{_sql_string(self.options.get('AWS_REGION', 'us-east-1'))}'")
        endpoint = self.options.get("AWS_ENDPOINT_URL")
        if endpoint:
            parsed = urlparse(endpoint)
            vhost = self.options.get("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "").lower() in ("1", "true", "yes")
            parts += [
                f"ENDPOINT '{parsed.netloc or endpoint}'",
                f"URL_STYLE '{'vhost' if vhost else 'path'}'",
                f"USE_SSL {'false' if parsed.scheme == 'http' else 'true'}",
            ]
        return f"CREATE OR REPLACE SECRET rhei_lake ({', '.join(parts)});"

    def scan(self, uri: str) -> str:
        return f"delta_scan('{_sql_string(uri)}')"

    def create_view(self, name: str) -> str:
        return f"CREATE OR REPLACE VIEW {q(name)}"

    def instant(self, micros: int) -> str:
        return f"TIMESTAMPTZ '{_iso(micros)}+00:00'"

    def as_of_view(self, name: str, sql: str, as_of: int | None) -> str:
        body = self.transpile(sql)
        return f"CREATE OR REPLACE MACRO {q(name)}({AS_OF_PARAMETER}) AS TABLE {body};"

    def instant_expression(self, micros: int):
        from sqlglot import exp

        if micros == _SENTINEL:
            return exp.column(AS_OF_PARAMETER)
        return super().instant_expression(micros)


class _Spark(_Target):
    name: Dialect = "spark"

    def preamble(self, uris: Sequence[str]) -> list[str]:
        lines = ["-- needs Delta Lake for Spark (delta-spark) and, for S3, hadoop-aws"]
        if not any(u.startswith("s3://") for u in uris):
            return lines
        settings = {
            "fs.s3a.access.key": self.secret("AWS_ACCESS_KEY_ID"),
            "fs.s3a.secret.key": self.secret("AWS_SECRET_ACCESS_KEY"),
        }
        if "AWS_SESSION_TOKEN" in self.options:
            settings["fs.s3a.session.token"] = self.secret("AWS_SESSION_TOKEN")
        settings["fs.s3a.endpoint.region"] = self.options.get("AWS_REGION", "us-east-1")
        endpoint = self.options.get("AWS_ENDPOINT_URL")
        if endpoint:
            settings["fs.s3a.endpoint"] = endpoint
            settings["fs.s3a.path.style.access"] = "true"
            settings["fs.s3a.connection.ssl.enabled"] = "false" if endpoint.startswith("http://") else "true"
        return lines + [f"SET spark.hadoop.{k}={v};" for k, v in settings.items() if v]

    def scan(self, uri: str) -> str:
        if uri.startswith("s3://"):
            uri = "s3a://" + uri[len("s3://") :]
        elif uri.startswith("/"):
            uri = "file://" + uri
        return f"delta.`{uri.replace('`', '``')}`"

    def create_view(self, name: str) -> str:
        return f"CREATE OR REPLACE TEMPORARY VIEW `{name.replace('`', '``')}`"

    def instant(self, micros: int) -> str:
        return f"TIMESTAMP '{_iso(micros)}+00:00'"


class _Trino(_Target):
    name: Dialect = "trino"

    def preamble(self, uris: Sequence[str]) -> list[str]:
        lines = [
            f"-- a catalog {TRINO_CATALOG!r} with the Delta Lake connector, e.g. etc/catalog/{TRINO_CATALOG}.properties:",
            "--   connector.name=delta_lake",
            "--   delta.register-table-procedure.enabled=true",
        ]
        if any(u.startswith("s3://") for u in uris):
            lines += ["--   fs.native-s3.enabled=true", f"--   s3.region={self.options.get('AWS_REGION', 'us-east-1')}"]
            if "AWS_ACCESS_KEY_ID" in self.options:
                lines += [
                    f"--   s3.aws-access-key={self.secret('AWS_ACCESS_KEY_ID')}",
                    f"--   s3.aws-secret-key={self.secret('AWS_SECRET_ACCESS_KEY')}",
                ]
            if self.options.get("AWS_ENDPOINT_URL"):
                lines += [f"--   s3.endpoint={self.options['AWS_ENDPOINT_URL']}", "--   s3.path-style-access=true"]
        return lines + [
            f"CREATE SCHEMA IF NOT EXISTS {TRINO_CATALOG}.{TRINO_SCHEMA};",
            f"USE {TRINO_CATALOG}.{TRINO_SCHEMA};",
        ]

    def source(self, name: str, uri: str) -> str:
        location = "file://" + uri if uri.startswith("/") else uri
        return (
            f"CALL {TRINO_CATALOG}.system.register_table(schema_name => '{TRINO_SCHEMA}', "
            f"table_name => '{_sql_string(name)}', table_location => '{_sql_string(location)}');"
        )

    def create_view(self, name: str) -> str:
        return f"CREATE OR REPLACE VIEW {q(name)}"

    def instant(self, micros: int) -> str:
        return f"TIMESTAMP '{_iso(micros)} UTC'"


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


_DIALECT_CLASSES: dict[str, type[_Target]] = {"duckdb": _DuckDB, "spark": _Spark, "trino": _Trino}


@functools.lru_cache(maxsize=1024)
def to_duckdb(sql: str) -> str:
    """rhei_lake's own view SQL (DataFusion's dialect) in DuckDB's, as the outside views write it."""
    return _DuckDB({}, False).transpile(sql)


def duckdb_s3_secret(options: Mapping[str, str], *, show_secrets: bool) -> str:
    """The ``CREATE SECRET`` statement that gives DuckDB the lake's S3 store (secrets ``***`` unless shown)."""
    return _DuckDB(options, show_secrets).s3_secret()
