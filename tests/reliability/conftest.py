"""Reliability suite: writes the run's figures when RHEI_RELIABILITY_SUMMARY names a file."""

from __future__ import annotations

import pytest

from tests.reliability import summary


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if summary.TARGET and summary.FIGURES:
        summary.write(summary.TARGET, exit_status=int(exitstatus))
