"""pyproject.toml: the version written once, extras that do not repeat one another."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import rhei_lake

PROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_version_is_written_once_in_the_package():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", rhei_lake.__version__)


def test_extras_name_each_requirement_once():
    """An extra takes what another extra has by naming it (``rhei-lake[postgres]``), never by copying it."""
    extras = PROJECT["optional-dependencies"]

    def names(extra: str) -> list[str]:
        out = []
        for requirement in extras[extra]:
            included = re.fullmatch(r"rhei-lake\[([a-z,\s]+)\]", requirement)
            if included:
                for other in included.group(1).split(","):
                    out += names(other.strip())
            else:
                out.append(_name(requirement))
        return out

    core = [_name(r) for r in PROJECT["dependencies"]]
    assert len(core) == len(set(core))
    for extra in extras:
        everything = core + names(extra)
        assert len(everything) == len(set(everything)), (
            extra,
            sorted(n for n in everything if everything.count(n) > 1),
        )
