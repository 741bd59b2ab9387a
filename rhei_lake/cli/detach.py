"""``rh detach``: end a database's binding to its lake, so another lake can take it (with a fresh snapshot)."""

from __future__ import annotations

import rhei_lake
from rhei_lake.cli import common
from rhei_lake.cli.common import ConfigOption, DbOption
from rhei_lake.errors import ConfigError


def detach_command(db: DbOption = None, config: ConfigOption = None) -> None:
    """Detach the SQLite database from the lake it feeds: drop capture triggers, the CDC log's events and the binding.

    Close the lake first. The next lake opened on the database takes a fresh
    snapshot of its tables; the detached lake stays readable (rh query
    --storage URL) but never follows this database again.
    """
    options = common.resolve_options(config=config, db=db)
    path = options.get("oltp_path")
    if not path:
        raise ConfigError("rh detach needs the SQLite database: pass --db PATH (or set oltp_path in --config)")
    report = rhei_lake.detach_database(path)
    common.console.print(str(report), highlight=False, soft_wrap=True)
