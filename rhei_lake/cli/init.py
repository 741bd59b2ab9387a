"""``rh init``: write a commented configuration file that ``rh`` loads as it is.

The template is generated from the option models themselves (every field of
:class:`~rhei_lake.LakeConfig` and of the ``[serve]`` table, with its
description and default), so it cannot drift from what ``rh`` accepts.
"""

from __future__ import annotations

import json
import textwrap
import typing
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from rhei_lake.cli import common
from rhei_lake.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

DEFAULT_PATH = Path("rhei.toml")

# Which options each part of the file shows, in order; options not listed land in "Other options".
LAKE_SECTIONS: list[tuple[str, list[str]]] = [
    ("Where the lake lives", ["storage", "storage_options"]),
    (
        "HTAP mode: rhei_lake owns this SQLite database and captures its changes with triggers",
        ["oltp_path", "auto_register"],
    ),
    (
        "Sidecar mode: follow a database rhei_lake does not own (and its [[tables]] below)",
        ["source", "hard_delete_interval"],
    ),
    (
        "Syncing",
        [
            "sync_interval",
            "sync_max_backoff",
            "final_sync",
            "batch_size",
            "prune_interval",
            "tail_flush_segments",
            "tail_flush_rows",
        ],
    ),
    ("History and compaction", ["sync_mode"]),
]
SKIPPED = {"tables"}  # written as a [[tables]] block

EXAMPLES: dict[str, Any] = {
    "storage_options": {"AWS_ENDPOINT_URL": "http://localhost:9000", "AWS_REGION": "us-east-1"},
    "oltp_path": "app.db",
    "source": "postgresql://app@db.internal:5432/shop",
    "sync_interval": 1.0,
    "refresh_interval": 0.5,
    "flight_port": 50051,
    "flight_token": "change-me (better: set RHEI_FLIGHT_TOKEN)",
    "flight_tls_cert": "/etc/rhei/tls/server.crt",
    "flight_tls_key": "/etc/rhei/tls/server.key",
    "compact_interval": "1h",
    "compact_schedule": "0 * * * *",
    "metrics_port": 9108,
}

HEADER = """\
# rhei_lake configuration, written by `rh init`.
#
# Use it with any command: `rh serve --config {name}`, `rh query --config {name} "SELECT ..."`;
# a file named rhei.toml in the working folder (or the file $RHEI_CONFIG names) is used
# without --config.
# A commented line shows an option's default (or an example); remove the `# ` to set it.
# Every option can also come from an environment variable RHEI_<OPTION> (RHEI_STORAGE,
# RHEI_SYNC_INTERVAL, RHEI_METRICS_PORT, ...; lists and tables as JSON), which overrides
# this file; command-line flags override both. S3 credentials and endpoint come from
# storage_options or the usual AWS_* variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...).
# Unknown options are errors, so a misspelt one never silently does nothing.
"""


def init_command(
    path: Annotated[
        Optional[Path], typer.Argument(metavar="FILE", help=f"The file to write (default {DEFAULT_PATH}).")
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", metavar="FILE", help="The file to write (the same as FILE).")
    ] = None,
    db: common.DbOption = None,
    storage: common.StorageOption = None,
    source: Annotated[
        Optional[str],
        typer.Option("--source", help="Sidecar mode: the database to follow (sqlite:///path or postgresql://...)."),
    ] = None,
    table: Annotated[
        Optional[list[str]], typer.Option("--table", "-t", help="Sidecar mode: a table to follow (repeat).")
    ] = None,
    updated_at: Annotated[
        str, typer.Option("--updated-at", help="Sidecar mode: the tables' last-modified column.")
    ] = "updated_at",
    force: Annotated[bool, typer.Option("--force", help="Overwrite PATH if it exists.")] = False,
) -> None:
    """Write a commented configuration file (every option, its meaning and default).

    --db, --storage, --source and --table fill in the options they name; the
    result is checked by loading it before anything is written.
    """
    from rhei_lake.config_file import read_config_file

    if path is not None and config is not None and path != config:
        common.usage_error("give the file to write once: as FILE or as --config")
    path = path or config or DEFAULT_PATH
    if path.exists() and not force:
        raise ConfigError(f"{str(path)!r} exists; pass --force to overwrite it")
    if table and source is None:
        common.usage_error("--table names a sidecar table: pass --source too")
    if source is not None and not table:
        common.usage_error("sidecar mode follows named tables: pass --table NAME (repeat for several)")
    values: dict[str, Any] = {"storage": storage or (common.default_storage(db) if db else "./lake")}
    if db is not None:
        values["oltp_path"] = db
    if source is not None:
        values["source"] = source
    if db is not None or source is not None:
        values["sync_interval"] = 1.0
    tables = [{"name": name, "updated_at": updated_at} for name in table or []]
    text = config_template(values, tables=tables, name=path.name)

    check = path.with_name(f".{path.name}.rh-init")
    check.write_text(text, encoding="utf-8")
    try:
        written = read_config_file(check)
        from rhei_lake.config import build_config
        from rhei_lake.service.config import build_service_config

        build_config(written.lake)
        build_service_config(written.serve)
        check.replace(path)
    finally:
        check.unlink(missing_ok=True)
    common.console.print(f"wrote {path}", highlight=False)


def config_template(values: dict[str, Any], *, tables: list[dict[str, Any]], name: str = "rhei.toml") -> str:
    """The commented TOML text: ``values`` set, every other option shown commented out."""
    from rhei_lake.config import LakeConfig
    from rhei_lake.service.config import ServiceConfig

    parts = [HEADER.format(name=name)]
    listed = {field for _title, fields in LAKE_SECTIONS for field in fields} | SKIPPED
    sections = [(title, list(fields)) for title, fields in LAKE_SECTIONS]
    flight = [f for f in LakeConfig.model_fields if f.startswith("flight_")]
    if flight:
        sections.append(("Arrow Flight SQL server, started by `rh serve` when flight_port is set", flight))
        listed |= set(flight)
    other = [f for f in LakeConfig.model_fields if f not in listed]
    history = next(fields for title, fields in sections if title.startswith("History"))
    history.extend(f for f in other if f in ("vacuum_retention", "changelog_retention", "target_file_size"))
    rest = [f for f in other if f not in history]
    if rest:
        sections.append(("Other options", rest))
    for title, fields in sections:
        parts.append(_section(title, LakeConfig, fields, values))
    parts.append(_tables_block(tables))
    parts.append(
        "\n# == Service mode (`rh serve`) ==========================================================\n[serve]\n"
    )
    parts.append(_section(None, ServiceConfig, list(ServiceConfig.model_fields), {}))
    return "".join(parts)


def _section(title: str | None, model: type[BaseModel], fields: list[str], values: dict[str, Any]) -> str:
    out = [f"\n# -- {title} " + "-" * max(3, 84 - len(title)) + "\n"] if title else []
    for field in fields:
        info = model.model_fields[field]
        comment = info.description or ""
        choices = _choices(info.annotation)
        if choices:
            comment += f" One of: {', '.join(choices)}."
        out.append("\n".join(textwrap.wrap(comment, 88, initial_indent="# ", subsequent_indent="# ")) + "\n")
        if field in values:
            out.append(f"{field} = {_toml(values[field])}\n\n")
            continue
        default = info.get_default(call_default_factory=True)
        shown = EXAMPLES.get(field) if default is None or default in ({}, []) else default
        if shown is None:
            shown = default
        if shown is None:
            out.append(f"# {field} =\n\n")
        else:
            out.append(f"# {field} = {_toml(shown)}\n\n")
    return "".join(out)


def _tables_block(tables: list[dict[str, Any]]) -> str:
    out = [
        "# Sidecar tables: one [[tables]] block per table to follow. Keys: name, updated_at (required),\n"
        "# primary_key (default: the declared key), deleted_at (soft deletes), epoch_unit (s/ms/us for an\n"
        "# integer updated_at), hard_deletes (default true), types, source_schema (PostgreSQL).\n"
    ]
    for table in tables:
        out.append("[[tables]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items()) + "\n")
    if not tables:
        out.append('# [[tables]]\n# name = "orders"\n# updated_at = "updated_at"\n# deleted_at = "deleted_at"\n')
    return "\n" + "".join(out)


def _choices(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return []


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, timedelta):
        from rhei_lake.timeutil import format_duration

        return json.dumps(format_duration(value))
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if hasattr(value, "get_secret_value"):
        return json.dumps("***")
    return json.dumps(str(value))
