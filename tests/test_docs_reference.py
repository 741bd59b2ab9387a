"""The generated parts of docs/ are what ``make docs`` (``python -m tools.gen_docs``) writes today, as
sqlite-utils checks its docs with cog, and no page carries placeholder text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import gen_docs

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted({page for page, _name, _render in gen_docs.PARTS})


@pytest.mark.parametrize("page", PAGES)
def test_generated_part_is_current(page):
    committed = (gen_docs.DOCS / page).read_text(encoding="utf-8")
    assert committed == gen_docs.rendered(page), f"docs/{page} is out of date: run `make docs` and commit it"


def test_every_command_and_option_is_in_the_references():
    import typer

    from rhei_lake.cli.app import app
    from rhei_lake.config import LakeConfig

    cli = (gen_docs.DOCS / "cli.md").read_text(encoding="utf-8")
    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        assert f"### `rh {name}`" in cli
    configuration = (gen_docs.DOCS / "configuration.md").read_text(encoding="utf-8")
    for field in LakeConfig.model_fields:
        assert f"| `{field}` |" in configuration


def test_the_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    for page in PAGES:
        (tmp_path / page).write_text((gen_docs.DOCS / page).read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(gen_docs, "DOCS", tmp_path)
    assert gen_docs.main(["--check"]) == 0
    stale = (tmp_path / "configuration.md").read_text(encoding="utf-8").replace("| `storage` |", "| `storge` |")
    (tmp_path / "configuration.md").write_text(stale, encoding="utf-8")
    assert gen_docs.main(["--check"]) == 1
    assert gen_docs.main([]) == 0 and gen_docs.main(["--check"]) == 0


def test_the_reliability_figures_come_from_a_run():
    run = gen_docs.json.loads(gen_docs.RELIABILITY_JSON.read_text(encoding="utf-8"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", run["when"]) and run["commit"]
    assert sum(run[key] for key in ("kill_points_survived", "faults_injected", "bad_inputs_tried")) > 0


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))])
def test_no_placeholder_text(page):
    text = (ROOT / page).read_text(encoding="utf-8")
    assert not re.search(r"FIXME|TODO|XXX", text), f"{page} has placeholder text"


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings (code blocks skipped)."""
    found, fenced = set(), False
    for line in text.split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.*)", line)):
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower().replace("`", "")).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))])
def test_links_between_pages_resolve(page):
    source = ROOT / page
    text = source.read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\((?!https?://)([^)#\s]*)(?:#([^)\s]+))?\)", text):
        path = (source.parent / target).resolve() if target else source
        assert path.exists(), f"{page}: link to missing {target}"
        if anchor:
            assert anchor in _anchors(path.read_text(encoding="utf-8")), f"{page}: no #{anchor} in {target or page}"
