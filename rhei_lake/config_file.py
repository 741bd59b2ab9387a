"""Read a TOML configuration file into options for :class:`~rhei_lake.LakeConfig`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from rhei_lake.errors import ConfigError


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The options in a TOML file (top-level keys, or a ``[lake]`` table)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    if "lake" in data and isinstance(data["lake"], dict):
        options = dict(data.pop("lake"))
        options.update(data)
        return options
    return data
