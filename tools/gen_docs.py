"""The generated parts of docs/: ``python -m tools.gen_docs`` (``make docs``) rewrites them.

Each part sits between two marker lines in its page, with hand-written prose around it:

* ``docs/cli.md``: every ``rh`` command, its help, usage, arguments and options, from the typer app;
* ``docs/configuration.md``: every option of :class:`rhei_lake.LakeConfig` with its default and
  description, from ``LakeConfig.model_fields``;
* ``docs/reliability.md``: the figures of the last reliability run, from the JSON file the tests
  write (``tests/reliability/summary.py``), committed as ``docs/reliability-last-run.json``.

``--check`` writes nothing and exits 1 naming the pages that differ from what the code generates;
``tests/test_docs_reference.py`` runs the same comparison, so the docs cannot drift from the code.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import typing
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RELIABILITY_JSON = DOCS / "reliability-last-run.json"


def _begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED {name}: written by `make docs` (python -m tools.gen_docs), do not edit -->"


def _end(name: str) -> str:
    return f"<!-- END GENERATED {name} -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def cli_reference() -> str:
    """Every command of ``rh``: help text, usage, arguments and options, in the app's order."""
    import typer

    from rhei_lake.cli.app import app

    group = typer.main.get_command(app)
    root = typer.Context(group, info_name="rh")
    out = ["Options of `rh` itself, before the command:", "", *_params_table(group.params, root, "option")]
    for name in group.list_commands(root):  # type: ignore[attr-defined]
        command = group.commands[name]  # type: ignore[attr-defined]
        context = typer.Context(command, info_name=name, parent=root)
        usage = " ".join(["rh", name, *command.collect_usage_pieces(context)])
        out += ["", f"### `rh {name}`", "", inspect.cleandoc(command.help or ""), "", "```", usage, "```"]
        for kind in ("argument", "option"):
            params = [p for p in command.params if p.param_type_name == kind]
            if params:
                out += ["", *_params_table(params, context, kind)]
    return "\n".join(out)


def _params_table(params: list[Any], context: Any, kind: str) -> list[str]:
    rows = [f"| {kind} | meaning |", "|---|---|"]
    for param in params:
        record = param.get_help_record(context)
        if record is not None:
            rows.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
    return rows


def configuration_reference() -> str:
    """One row per ``LakeConfig`` field: its default and its description (with the allowed values)."""
    from rhei_lake.config import LakeConfig

    out = ["| option | default | meaning |", "|---|---|---|"]
    for name, info in LakeConfig.model_fields.items():
        meaning = info.description or ""
        if typing.get_origin(info.annotation) is typing.Literal:
            meaning += " One of: " + ", ".join(f"`{v}`" for v in typing.get_args(info.annotation)) + "."
        default = info.get_default(call_default_factory=True)
        out.append(f"| `{name}` | {_config_default(default)} | {_cell(meaning)} |")
    return "\n".join(out)


def _config_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, timedelta):
        from rhei_lake.timeutil import format_duration

        return f"`{format_duration(value)}`"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def reliability_figures() -> str:
    """The figures of the run recorded in ``docs/reliability-last-run.json``, and what kind of run it was."""
    run = json.loads(RELIABILITY_JSON.read_text(encoding="utf-8"))
    kind = (
        "with the full crash matrix and every fuzzer family (`make test-crash`)"
        if run["full_matrix"]
        else ("not the full crash matrix")
    )
    outcome = "every test passed" if run["tests_passed"] else "some tests FAILED"
    out = [
        f"Figures from the last recorded run ({run['when'].replace('T', ' ').removesuffix('Z')} UTC, commit "
        f"`{run['commit'] or 'unknown'}`, Python {run['python']}; {kind}; {outcome}), written by the tests to "
        "`RHEI_RELIABILITY_SUMMARY` and kept in [reliability-last-run.json](reliability-last-run.json):",
        "",
        "| kill points survived | faults injected | bad inputs tried | fuzzed programs | fuzzed statements |",
        "|---|---|---|---|---|",
        "| "
        + " | ".join(
            f"{run[key]:,}"
            for key in (
                "kill_points_survived",
                "faults_injected",
                "bad_inputs_tried",
                "fuzz_programs",
                "fuzz_statements",
            )
        )
        + " |",
    ]
    return "\n".join(out)


PARTS: list[tuple[str, str, Callable[[], str]]] = [
    ("cli.md", "cli-reference", cli_reference),
    ("configuration.md", "options", configuration_reference),
    ("reliability.md", "reliability-last-run", reliability_figures),
]


def rendered(page: str) -> str:
    """The text ``docs/<page>`` must have: its committed text with every generated part regenerated."""
    text = (DOCS / page).read_text(encoding="utf-8")
    for target, name, render in PARTS:
        if target != page:
            continue
        pattern = re.compile(re.escape(_begin(name)) + r"\n.*?" + re.escape(_end(name)), re.DOTALL)
        if len(pattern.findall(text)) != 1:
            raise SystemExit(f"docs/{page}: expected one generated part {name!r} between its marker lines")
        block = f"{_begin(name)}\n{render().rstrip()}\n{_end(name)}"
        text = pattern.sub(lambda _match, block=block: block, text)
    return text


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for page in sorted({page for page, _name, _render in PARTS}):
        want = rendered(page)
        if (DOCS / page).read_text(encoding="utf-8") != want:
            stale.append(f"docs/{page}")
            if not check:
                (DOCS / page).write_text(want, encoding="utf-8")
    if check and stale:
        print("out of date (run `make docs`): " + ", ".join(stale), file=sys.stderr)
        return 1
    for page in stale:
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
