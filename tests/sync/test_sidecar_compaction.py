"""A compacted sidecar table: events folded into history (or current) and expired from the change
feed are still what the sidecar knows of their keys. Before, a key known only to the folded table
looked new: each key scan re-inserted every such row, and their hard deletes were never seen."""

from __future__ import annotations

from datetime import timedelta

import pytest

import rhei_lake
from tests.support.sidecar_source import START, items_table

LATER = START + timedelta(days=1)


def _insert(source, key: int, when) -> None:
    source.execute(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL)", (key, f"n{key}", key * 0.5, key, source.stamp(when))
    )


def _lake_items(lake) -> dict[int, tuple]:
    rows = lake.query("SELECT id, name, price, qty, updated_at, deleted_at FROM items").to_pylist()
    return {r["id"]: tuple(r.values()) for r in rows}


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_keys_known_only_to_the_folded_table_are_neither_reinserted_nor_kept_after_delete(source_db, tmp_path, mode):
    for key in range(1, 7):
        _insert(source_db, key, START + timedelta(seconds=key))
    with rhei_lake.open(
        source=source_db.url,
        storage=str(tmp_path / "lake"),
        tables=[items_table()],
        hard_delete_interval=0,
        sync_mode=mode,
        changelog_retention="0s",
    ) as lake:
        lake.sync_now()
        lake.compact()  # folded, and (their updated_at being past the retention) expired from the feed
        assert lake.query("SELECT count(*) FROM items_changes").column(0)[0].as_py() == 0
        assert lake.sync_now().events == 0, "the key scan took folded rows for new ones"

        source_db.execute("DELETE FROM items WHERE id = 1")
        source_db.execute("UPDATE items SET name = 'changed', updated_at = ? WHERE id = 2", (source_db.stamp(LATER),))
        source_db.execute(
            "UPDATE items SET deleted_at = ?, updated_at = ? WHERE id = 3",
            (source_db.stamp(LATER), source_db.stamp(LATER)),
        )
        assert lake.sync_now().events == 3
        ops = {r["id"]: r["_rhei_op"] for r in lake.query("SELECT id, _rhei_op FROM items_changes").to_pylist()}
        assert ops == {1: "D", 2: "U", 3: "D"}
        assert _lake_items(lake) == source_db.live_items()
        assert lake.sync_now().events == 0
        lake.compact()
        assert lake.sync_now().events == 0
        assert _lake_items(lake) == source_db.live_items()
        if mode == "temporal":
            versions = lake.query(
                "SELECT id, _rhei_valid_from, _rhei_valid_to FROM items_history ORDER BY id, _rhei_valid_from"
            ).to_pylist()
            by_key: dict[int, list] = {}
            for v in versions:
                by_key.setdefault(v["id"], []).append((v["_rhei_valid_from"], v["_rhei_valid_to"]))
            assert len(by_key[1]) == 1 and by_key[1][0][1] is not None, "deleted: one closed version"
            assert [to for _, to in by_key[2]] == [LATER, None], "updated: closed at the update, then open"
            assert all(len(by_key[k]) == 1 and by_key[k][0][1] is None for k in (4, 5, 6))
