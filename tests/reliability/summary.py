"""Figures of a reliability run (kills survived, faults injected, bad inputs tried, fuzzed programs and
statements), counted by the tests.

At the end of the session they are written as JSON to the file named by
``RHEI_RELIABILITY_SUMMARY`` (CI sets it); docs/reliability.md
quotes the last full run's file (docs/reliability-last-run.json).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections import Counter
from pathlib import Path

FIGURES: Counter[str] = Counter()
LINES: list[str] = []
"""One line per finished run worth reading in the test output (the terminal summary prints them)."""
TARGET = os.environ.get("RHEI_RELIABILITY_SUMMARY")
FULL = os.environ.get("RHEI_CRASH_FULL") == "1"


def count(kind: str, n: int = 1) -> None:
    FIGURES[kind] += n


def report(line: str) -> None:
    LINES.append(line)


def write(path: str | os.PathLike[str], *, exit_status: int) -> None:
    """Add this run's figures to the JSON file at ``path`` (started anew if missing or another commit's).

    Runs add up: CI's ``make test`` (its reliability tests, from every xdist worker) and ``make
    test-crash`` (the long budgets) write one file. A file lock keeps parallel writers apart.
    """
    import fcntl

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        commit = ""
    target = Path(path)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous: dict = {}
        if target.exists():
            try:
                previous = json.loads(target.read_text())
            except ValueError:
                previous = {}
            if previous.get("commit") != commit:
                previous = {}
        figures = Counter(previous.get("details", {}))
        figures.update(FIGURES)
        totals = {
            "kill_points_survived": figures["kill_points_survived"],
            "faults_injected": sum(v for k, v in figures.items() if k.startswith("faults.")),
            "bad_inputs_tried": figures["bad_inputs_tried"],
            "fuzz_programs": figures["fuzz.programs"],
            "fuzz_statements": figures["fuzz.statements"],
        }
        data = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "commit": commit,
            "full_matrix": FULL or bool(previous.get("full_matrix")),
            "tests_passed": exit_status == 0 and previous.get("tests_passed", True),
            "python": platform.python_version(),
            **totals,
            "details": dict(sorted(figures.items())),
        }
        target.write_text(json.dumps(data, indent=2) + "\n")
