"""``rh restore``: a new SQLite database of the lake's tables at an instant, from the lake alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

import rhei_lake
from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, StorageOption
from rhei_lake.errors import ConfigError, SchemaError


def restore_command(
    output: Annotated[Path, typer.Argument(metavar="FILE", help="The SQLite database file to create.")],
    storage: StorageOption = None,
    config: ConfigOption = None,
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of",
            metavar="INSTANT",
            help="Restore the state at this instant (ISO 8601 with Z or an offset, or epoch seconds).",
        ),
    ] = None,
    table: Annotated[
        Optional[list[str]], typer.Option("--table", "-t", help="Restore only this table (repeat for several).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
) -> None:
    """Write the tables as they were at --as-of (default: latest synced) into a new SQLite file.

    Reads only the lake (no source database needed); the file appears atomically.
    """
    instant = common.parse_instant(as_of)
    if output.exists() and not overwrite:
        raise ConfigError(f"{str(output)!r} exists; pass --overwrite to replace it")
    options = common.resolve_options(config=config, storage=storage)
    live = options.get("oltp_path")
    if "storage" not in options:
        raise ConfigError("rh restore needs the lake: pass --storage URL (or set storage in --config)")
    if live and os.path.abspath(output) == os.path.abspath(live):
        raise ConfigError(f"rh restore: {str(output)!r} is the lake's own live database; restore into a new file")
    with rhei_lake.open(**common.lake_only(options), read_only=True) as lake:  # the lake alone, never the source
        if not lake.tables():
            raise SchemaError(f"no mirrored tables in {lake.location.url}: nothing to restore")
        with common.sync_progress("restoring") as progress:
            report = lake.restore_sqlite(output, as_of=instant, tables=table, overwrite=overwrite, progress=progress)
    common.console.print(str(report), highlight=False, soft_wrap=True)
