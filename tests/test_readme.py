"""The README's examples run as written: every ```python block right after a ``<!-- test -->`` line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^<!-- test -->\n```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _examples() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 3, m.group(1)) for m in _BLOCK.finditer(text)]


def test_the_readme_has_tested_examples():
    assert len(_examples()) >= 5


@pytest.mark.parametrize(("line", "code"), _examples(), ids=[f"README.md:{line}" for line, _ in _examples()])
def test_readme_example_runs(line, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})  # noqa: S102
