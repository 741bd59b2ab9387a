"""The examples in README.md and docs/*.md run as written: every ```python block right after a
``<!-- test -->`` line. A block that cannot run here says why on a ``<!-- not run: ... -->`` line
instead, and no block goes without one of the two."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^<!-- test -->\n```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_ANY_PYTHON = re.compile(r"^(.*)\n```python\n", re.MULTILINE)


def _examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT).as_posix()
        found += [(f"{name}:{text.count(chr(10), 0, m.start()) + 3}", m.group(1)) for m in _BLOCK.finditer(text)]
    return found


def test_the_docs_have_tested_examples():
    places = [where for where, _ in _examples()]
    assert len(places) >= 12
    assert any(where.startswith("README.md:") for where in places)


@pytest.mark.parametrize("page", PAGES, ids=[page.name for page in PAGES])
def test_every_python_block_runs_or_says_why_not(page):
    text = page.read_text(encoding="utf-8")
    for match in _ANY_PYTHON.finditer(text):
        before = match.group(1)
        assert before == "<!-- test -->" or re.fullmatch(r"<!-- not run: .{10,} -->", before), (
            f"{page.name}:{text.count(chr(10), 0, match.start()) + 2}: a ```python block needs <!-- test --> "
            "(or <!-- not run: why --> when it cannot run in the suite)"
        )


@pytest.mark.parametrize(("where", "code"), _examples(), ids=[where for where, _ in _examples()])
def test_docs_example_runs(where, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__readme__"})  # noqa: S102
