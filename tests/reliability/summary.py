"""Figures of a reliability run (kills survived, faults injected, bad inputs tried, fuzzed programs and
statements), counted by the tests.

At the end of the session they are written as JSON to the file named by
``RHEI_RELIABILITY_SUMMARY`` (CI sets it); the README's Reliability section
quotes the last full run's file.
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
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        commit = ""
    totals = {
        "kill_points_survived": FIGURES["kill_points_survived"],
        "faults_injected": sum(v for k, v in FIGURES.items() if k.startswith("faults.")),
        "bad_inputs_tried": FIGURES["bad_inputs_tried"],
        "fuzz_programs": FIGURES["fuzz.programs"],
        "fuzz_statements": FIGURES["fuzz.statements"],
    }
    data = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "full_matrix": FULL,
        "tests_passed": exit_status == 0,
        "python": platform.python_version(),
        **totals,
        "details": dict(sorted(FIGURES.items())),
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
