"""``rh views``: CREATE VIEW statements that let DuckDB, Spark or Trino read the lake without rhei_lake."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, StorageOption


def views_command(
    storage: StorageOption = None,
    config: ConfigOption = None,
    dialect: Annotated[
        str, typer.Option("--dialect", "-d", help="The engine's SQL: duckdb, spark or trino.")
    ] = "duckdb",
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of",
            help="Spark and Trino: also t_as_of views at this instant (ISO 8601 with Z or an offset, or epoch seconds).",
        ),
    ] = None,
    show_secrets: Annotated[
        bool, typer.Option("--show-secrets", help="Print credentials in the S3 settings instead of ***.")
    ] = False,
) -> None:
    """Print SQL that gives another engine the lake's t, t_history, t_changes and as_of views.

    The views read the Delta tables alone (no rhei_lake at query time), with the
    same merge-on-read rhei_lake runs; pipe the output into the engine, e.g.
    `rh views -s ./lake | duckdb`.
    """
    instant = common.parse_instant(as_of)
    with common.open_reader(config=config, storage=storage, command="rh views") as lake:  # reads only
        text = lake.outside_views(dialect, as_of=instant, show_secrets=show_secrets)
    sys.stdout.write(text)
