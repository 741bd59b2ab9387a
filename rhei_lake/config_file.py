"""Read a TOML configuration file and ``RHEI_*`` environment overrides into options.

The file holds the options of :class:`~rhei_lake.LakeConfig` as top-level keys
(or in a ``[lake]`` table), sidecar tables as ``[[tables]]``, and the settings
of ``rh serve`` in a ``[serve]`` table. Nothing here looks at the process
environment by itself: the command line passes ``os.environ`` in.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhei_lake.errors import ConfigError

ENV_PREFIX = "RHEI_"
SERVE_SECTION = "serve"
CONFIG_ENV = "RHEI_CONFIG"
"""The environment variable naming the configuration file when none is given."""
DEFAULT_CONFIG_NAME = "rhei.toml"
"""The configuration file found in the working folder when neither a file nor RHEI_CONFIG is given."""


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file's options: for the lake, and for ``rh serve``."""

    lake: dict[str, Any] = field(default_factory=dict)
    serve: dict[str, Any] = field(default_factory=dict)


def read_config_file(path: str | Path) -> ConfigFile:
    """Parse a TOML configuration file; a missing file or invalid TOML is a ConfigError."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {str(path)!r} is a directory") from None
    except PermissionError:
        raise ConfigError(f"config file {str(path)!r} is not readable (permission denied)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    serve = data.pop(SERVE_SECTION, {})
    if not isinstance(serve, dict):
        raise ConfigError(f"config file {str(path)!r}: [{SERVE_SECTION}] must be a table of settings")
    if "lake" in data and isinstance(data["lake"], dict):
        options = dict(data.pop("lake"))
        options.update(data)
        return ConfigFile(options, serve)
    return ConfigFile(data, serve)


def find_config_file(environ: Mapping[str, str], cwd: str | Path) -> Path | None:
    """The configuration file to use when none is named: ``$RHEI_CONFIG``, else ``rhei.toml`` in ``cwd``.

    As Litestream finds its file. ``RHEI_CONFIG`` naming a file that does not
    exist is a ConfigError (a typo must not silently fall back to no file);
    an empty one means none. Returns ``None`` when there is no file to use.
    """
    named = environ.get(CONFIG_ENV)
    if named is not None:
        if not named.strip():
            return None
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named!r}: no such configuration file")
        return path
    local = Path(cwd) / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The lake's options in a TOML file (top-level keys, or a ``[lake]`` table)."""
    return read_config_file(path).lake


def environment_options(
    environ: Mapping[str, str], fields: Iterable[str], *, structured: Iterable[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """Options set as ``RHEI_<FIELD>`` variables in ``environ``, and warnings about near misses.

    ``fields`` are the option names the caller accepts; ``structured`` ones
    (lists and tables, such as ``storage_options``) are written as JSON. Other
    ``RHEI_*`` variables are left alone (the test suite and tools use some),
    except that a name close to an option's draws a "did you mean" warning.
    Values are the variables' text: pydantic converts them as it validates.
    """
    names = {f"{ENV_PREFIX}{name.upper()}": name for name in fields}
    structured = set(structured)
    options: dict[str, Any] = {}
    warnings: list[str] = []
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        if var == CONFIG_ENV:  # names the file, not an option
            continue
        name = names.get(var)
        if name is None:
            close = difflib.get_close_matches(var, names, n=1, cutoff=0.85)
            if close:
                warnings.append(f"ignoring {var}: not a configuration option (did you mean {close[0]}?)")
            continue
        if name in structured:
            try:
                options[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{var}: expected JSON for {name} ({exc.msg} at character {exc.pos})") from None
        else:
            options[name] = value
    return options, warnings
