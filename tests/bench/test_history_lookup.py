"""The ``history_lookup`` bench scenario on a small lake: it runs to its end, in bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIMIT_BYTES = 1536 * 2**20  # the scenario on 3,000 rows stays well under this; a runaway grows ~80 MB/s

_SCENARIO = """
import sys
from pathlib import Path
from bench.core import Settings
from bench.data import create_orders
from bench.scenarios import history_lookup

work = Path(sys.argv[1])
source = create_orders(work / "source.db", 3000)
for layout in (False, True):
    for result in history_lookup._lake(Settings(quick=True, workdir=work), source, layout, 3000, 2):
        print(result.metric, result.value, flush=True)
"""


def _rss(pid: int) -> int:
    """Resident bytes of process ``pid`` (Linux ``/proc``)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc")
def test_history_lookup_runs_to_its_end_in_bounded_memory(tmp_path):
    """Every result of both lakes comes out, and the process never grows past LIMIT_BYTES (the
    scenario once sorted an endless generator of instants at its end, growing without bound)."""
    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SCENARIO, str(tmp_path)], cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT
        )
        peak, deadline = 0, time.monotonic() + 300
        try:
            while proc.poll() is None:
                try:
                    peak = max(peak, _rss(proc.pid))
                except OSError:
                    pass  # it ended between poll() and reading /proc
                assert peak <= LIMIT_BYTES, f"the scenario grew to {peak / 2**20:.0f} MB"
                assert time.monotonic() < deadline, "the scenario did not end within 300 s"
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    printed = out.read_text()
    assert proc.returncode == 0, printed
    metrics = [line for line in printed.splitlines() if line.startswith(("point lookup", "compaction"))]
    assert len(metrics) == 10, printed
