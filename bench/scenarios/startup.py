"""Start-up of ``rh``: ``rh --help`` and a trivial ``rh query``, as whole processes.

Targets: ``rh --help`` <= 0.3 s; ``rh query "SELECT 1"`` on a local lake at most
0.5 s more than the same query through the library in a bare ``python -c``
(the limit: importing pyarrow, DataFusion and delta-rs and opening the lake,
which any query needs). Medians of several runs, each a fresh process.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import rhei_lake
from bench.core import Result, Settings

RH = Path(sys.executable).parent / "rh"


def _median_seconds(command: list[str], runs: int, cwd: Path) -> float:
    times = []
    for _ in range(runs + 1):  # the first run warms the page cache and is not counted
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def run(settings: Settings) -> list[Result]:
    runs = settings.size(5, 15)
    lake_dir = settings.workdir / "startup-lake"
    with rhei_lake.open(oltp_path=str(settings.workdir / "startup.db"), storage=str(lake_dir)) as lake:
        lake.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY)")
        lake.register_table("t")
    help_seconds = _median_seconds([str(RH), "--help"], runs, settings.workdir)
    python_seconds = _median_seconds([sys.executable, "-c", "pass"], runs, settings.workdir)
    query = _median_seconds([str(RH), "query", "--storage", str(lake_dir), "SELECT 1"], runs, settings.workdir)
    library = _median_seconds(
        [
            sys.executable,
            "-c",
            f"import rhei_lake; rhei_lake.open(storage={str(lake_dir)!r}, read_only=True).query('SELECT 1')",
        ],
        runs,
        settings.workdir,
    )
    overhead = query - library
    return [
        Result(
            "startup",
            "rh --help",
            help_seconds,
            "s",
            limit=python_seconds,
            ratio=help_seconds / python_seconds,
            target="<= 0.3 s",
            met=help_seconds <= 0.3,
            higher_is_better=False,
            details={"python -c pass": python_seconds},
        ),
        Result(
            "startup",
            "rh query SELECT 1, over the library",
            overhead,
            "s",
            limit=library,
            ratio=query / library,
            target="<= 0.5 s more",
            met=overhead <= 0.5,
            higher_is_better=False,
            details={"rh query": query, "python -c library query": library},
        ),
    ]
