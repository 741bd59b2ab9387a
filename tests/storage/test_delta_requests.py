"""Requests a Delta table store makes on S3 to see whether its table moved, counted by a proxy in front of moto."""

from __future__ import annotations

import pyarrow as pa

from rhei_lake.storage.lake_storage import open_storage
from rhei_lake.storage.location import parse_storage_url

SCHEMA = pa.schema([pa.field("id", pa.int64())])


def test_refresh_asks_for_the_next_log_entry_only_and_still_sees_every_commit(proxied_lake):
    """refresh() let delta-rs list the log and read _last_checkpoint (two requests with nothing new, every time
    a compaction step starts): the next log entry missing says the same in one, while the loaded version was
    known newest within the hour (log entries are deleted only weeks after they were written)."""
    url, options, proxy = proxied_lake
    mine = open_storage(parse_storage_url(url, options)).table_store("t", "changes")
    mine.create(SCHEMA, properties={})
    mine.append(pa.table({"id": [1]}, schema=SCHEMA))
    other = open_storage(parse_storage_url(url, options)).table_store("t", "changes")
    other.append(pa.table({"id": [2]}, schema=SCHEMA))

    proxy.reset()
    mine.refresh()  # another writer's commit: read
    assert mine.version() == other.version() == 2
    proxy.reset()
    mine.refresh()
    paths = proxy.requests()["paths"]
    assert len(paths) == 1 and paths[0].split("?")[0].endswith("/_delta_log/00000000000000000003.json"), paths

    mine._newest_at = float("-inf")  # known newest long ago: the missing entry proves nothing, delta-rs lists
    other.append(pa.table({"id": [3]}, schema=SCHEMA))
    proxy.reset()
    mine.refresh()
    assert mine.version() == 3
    assert any("list-type" in p for p in proxy.requests()["paths"])
