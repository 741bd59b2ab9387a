"""A distributed engine reads the lake: Daft, on its local runner and on a local Ray cluster, gets SQLite's answers.

Daft filters the history table itself (the open versions for the current
state, the versions alive at an instant for ``as_of``); the rows must be the
ones SQLite held at the end and at every recorded instant. The Ray cluster is
started (and shut down) by the reader process with ``ray.init``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.outside.test_reader_matrix import run_workload
from tests.support.outside import arrow_rows, table_uri
from tests.support.readers import read_with_daft
from tests.support.workload import SCHEMA


@pytest.mark.parametrize("runner", ["native", pytest.param("ray", marks=pytest.mark.slow)])
def test_daft_gives_sqlites_current_state_and_as_of(tmp_path, durable_storage, runner):
    url, options = durable_storage
    _db, snapshots = run_workload(tmp_path, url, options, "temporal", seed=77)
    reads = {}
    for t in SCHEMA:
        uri = table_uri(url, t, "history")
        reads[f"{t}_current"] = (uri, "current")
        for i, (instant, _state) in enumerate(snapshots):
            reads[f"{t}_as_of_{i}"] = (uri, datetime.fromtimestamp(instant / 1e6, UTC).isoformat())
    info: dict = {}
    got = read_with_daft(reads, options, runner=runner, info=info)
    assert info["runner"] == runner and (runner != "ray" or info["ray_nodes"] >= 1), info
    for t in SCHEMA:
        columns, final = snapshots[-1][1][t]
        assert final and arrow_rows(got[f"{t}_current"], columns) == final, f"{runner}: current {t}"
        for i, (_instant, state) in enumerate(snapshots):
            columns, rows = state[t]
            assert arrow_rows(got[f"{t}_as_of_{i}"], columns) == rows, f"{runner}: {t} as of snapshot {i}"
