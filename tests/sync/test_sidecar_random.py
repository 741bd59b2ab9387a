"""The sidecar against a randomly mutated source: current state and full history checked after random syncs."""

from __future__ import annotations

import os

import pytest

import rhei_lake
from tests.support.sidecar_source import SidecarWorkload, items_table

COLUMNS = "id, name, price, qty, updated_at, deleted_at"
# RHEI_SIDECAR_SEEDS=20 runs twenty seeds instead of one (a longer soak).
SEEDS = list(range(7, 7 + int(os.environ.get("RHEI_SIDECAR_SEEDS", "1"))))


def _collapse(states: list) -> list:
    out: list = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    while out and out[0] is None:
        out.pop(0)
    return out


def check_history(lake: rhei_lake.Lake, source, observed: dict[int, list]) -> None:
    """Versions in items_history equal the states the source showed at each sync, with source validity."""
    rows = lake.query(
        f"SELECT {COLUMNS}, _rhei_valid_from, _rhei_valid_to FROM items_history ORDER BY id, _rhei_seq"
    ).to_pylist()
    versions: dict[int, list[dict]] = {}
    for row in rows:
        versions.setdefault(row["id"], []).append(row)
    expected_keys = {k for k, states in observed.items() if _collapse(states)}
    assert set(versions) == expected_keys
    for key, states in observed.items():
        states = _collapse(states)
        lake_versions = versions.get(key, [])
        live = [s for s in states if s is not None]
        assert [tuple(v[c] for c in COLUMNS.split(", ")) for v in lake_versions] == live, f"id {key}"
        it = iter(lake_versions)
        for i, state in enumerate(states):
            if state is None:
                continue
            version = next(it)
            valid_from = source.ts_micros(version["_rhei_valid_from"])
            assert valid_from == source.ts_micros(state[4]), f"id {key}: validity starts at updated_at"
            following = states[i + 1] if i + 1 < len(states) else "end"
            if following == "end":
                assert version["_rhei_valid_to"] is None, f"id {key}: the last version is open"
            elif following is None:
                assert version["_rhei_valid_to"] is not None
                assert source.ts_micros(version["_rhei_valid_to"]) > valid_from, f"id {key}: alive until deleted"
            else:
                assert source.ts_micros(version["_rhei_valid_to"]) == source.ts_micros(following[4])


@pytest.mark.parametrize("seed", SEEDS)
def test_random_mutations_match_the_source(source_db, durable_storage, seed):
    url, options = durable_storage
    workload = SidecarWorkload(source_db, seed)
    workload.run(60)  # rows that exist before the first sync
    observed: dict[int, list] = {}

    def observe() -> None:
        live = source_db.live_items()
        for key in set(observed) | set(live):
            observed.setdefault(key, []).append(live.get(key))

    with rhei_lake.open(
        source=source_db.url,
        storage=url,
        storage_options=options,
        tables=[items_table()],
        batch_size=5,
        hard_delete_interval=0,
        tail_flush_segments=7,
    ) as lake:
        for round_ in range(10):
            lake.sync_now()
            workload.synced()
            observe()
            current = {r["id"]: tuple(r.values()) for r in lake.query(f"SELECT {COLUMNS} FROM items").to_pylist()}
            assert current == source_db.live_items(), f"round {round_}"
            workload.run(workload.rng.randint(0, 30))
        lake.sync_now()
        observe()
        check_history(lake, source_db, observed)
        feed = lake.query("SELECT _rhei_seq, _rhei_op FROM items_changes").to_pylist()
        seqs = [r["_rhei_seq"] for r in feed]
        assert len(seqs) == len(set(seqs))
        opened = sum(1 for r in feed if r["_rhei_op"] != "D")
        assert opened == sum(len([s for s in _collapse(v) if s is not None]) for v in observed.values())
