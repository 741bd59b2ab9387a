"""Deletes that leave no time behind (hard deletes, soft deletes that keep ``updated_at``):
the version they end stays alive from its ``updated_at`` until the deletion, never for no instant."""

from __future__ import annotations

from datetime import timedelta

import pytest

import rhei_lake
from tests.support.sidecar_source import START, items_table

T1 = START + timedelta(seconds=10)
T2 = START + timedelta(seconds=20)


def _insert(source, key: int, when) -> None:
    source.execute(
        "INSERT INTO items VALUES (?, ?, ?, ?, ?, NULL)", (key, f"n{key}", key * 0.5, key, source.stamp(when))
    )


def _open(source_db, tmp_path) -> rhei_lake.Lake:
    return rhei_lake.open(
        source=source_db.url, storage=str(tmp_path / "lake"), tables=[items_table()], hard_delete_interval=0
    )


def _versions(lake, key: int) -> list[dict]:
    return lake.query(
        f"SELECT name, _rhei_valid_from, _rhei_valid_to FROM items_history WHERE id = {key} ORDER BY _rhei_seq"
    ).to_pylist()


def _alive_at(lake, key: int, instant) -> bool:
    return bool(lake.query(f"SELECT id FROM items WHERE id = {key}", as_of=instant).num_rows)


def _assert_alive_until_deleted(lake, key: int, since) -> None:
    (version,) = _versions(lake, key)
    assert version["_rhei_valid_from"] == since
    assert version["_rhei_valid_to"] is not None and version["_rhei_valid_to"] > since, version
    assert _alive_at(lake, key, since), "the last version is alive at its own updated_at"
    assert not _alive_at(lake, key, version["_rhei_valid_to"])


@pytest.mark.parametrize("compact", [False, True], ids=["merge-on-read", "folded"])
def test_hard_delete_of_cursor_row_keeps_last_version_alive_until_delete(source_db, tmp_path, compact):
    """The row the cursor sits on (the greatest updated_at, the greatest key at it) is hard-deleted."""
    _insert(source_db, 1, T1)
    _insert(source_db, 2, T2)  # the cursor ends on (T2, 2)
    with _open(source_db, tmp_path) as lake:
        lake.sync_now()
        source_db.execute("DELETE FROM items WHERE id = 2")
        assert lake.sync_now().events == 1
        ops = lake.query("SELECT _rhei_op FROM items_changes WHERE id = 2 ORDER BY _rhei_seq").column(0).to_pylist()
        assert ops == ["I", "D"]
        if compact:
            lake.compact()
        _assert_alive_until_deleted(lake, 2, T2)
        assert _alive_at(lake, 1, T2) and not _alive_at(lake, 2, T2 + timedelta(seconds=1))


def test_hard_delete_of_a_row_tied_with_the_cursor_keeps_its_version_alive(source_db, tmp_path):
    """Another row shares the cursor's updated_at (a smaller key): deleting it is the same edge."""
    _insert(source_db, 1, T2)
    _insert(source_db, 2, T2)
    with _open(source_db, tmp_path) as lake:
        lake.sync_now()
        source_db.execute("DELETE FROM items WHERE id = 1")
        lake.sync_now()
        _assert_alive_until_deleted(lake, 1, T2)


def test_soft_delete_that_keeps_updated_at_keeps_the_version_alive_until_delete(source_db, tmp_path):
    """``deleted_at`` is set without bumping ``updated_at`` on the cursor row: the key scan finds it."""
    _insert(source_db, 1, T2)
    with _open(source_db, tmp_path) as lake:
        lake.sync_now()
        source_db.execute("UPDATE items SET deleted_at = ? WHERE id = 1", (source_db.stamp(T2),))
        assert lake.sync_now().events == 1
        _assert_alive_until_deleted(lake, 1, T2)


def test_hard_delete_is_stamped_at_the_cursors_time_when_that_is_later(source_db, tmp_path):
    """Rows polled after the deleted one moved the cursor on: the delete carries the cursor's time."""
    _insert(source_db, 1, T1)
    _insert(source_db, 2, T2)
    with _open(source_db, tmp_path) as lake:
        lake.sync_now()
        source_db.execute("DELETE FROM items WHERE id = 1")
        lake.sync_now()
        (version,) = _versions(lake, 1)
        assert (version["_rhei_valid_from"], version["_rhei_valid_to"]) == (T1, T2)


def test_reinsert_after_a_hard_delete_of_the_cursor_row_opens_a_new_version(source_db, tmp_path):
    """The key comes back with a later updated_at: two versions, one after the other, no overlap."""
    _insert(source_db, 1, T2)
    with _open(source_db, tmp_path) as lake:
        lake.sync_now()
        source_db.execute("DELETE FROM items WHERE id = 1")
        lake.sync_now()
        later = T2 + timedelta(milliseconds=1)
        _insert(source_db, 1, later)
        lake.sync_now()
        first, second = _versions(lake, 1)
        assert first["_rhei_valid_from"] < first["_rhei_valid_to"] <= second["_rhei_valid_from"] == later
        assert second["_rhei_valid_to"] is None
