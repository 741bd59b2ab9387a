"""A seeded random workload of INSERT/UPDATE/DELETE, primary-key changes and NULLs."""

from __future__ import annotations

import random
import sqlite3
import struct
from collections.abc import Callable

SCHEMA = {
    "items": ("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, qty INTEGER, tag BLOB, note TEXT)"),
    "pairs": (
        "CREATE TABLE pairs (region TEXT NOT NULL, code INTEGER NOT NULL, score REAL, label TEXT, "
        "PRIMARY KEY (region, code)) WITHOUT ROWID"
    ),
}

REGIONS = ("eu", "us", "ap", "sa", "éü", "x'y")


def random_double(rng: random.Random) -> float:
    """A random finite double from raw bits: most do not survive 15-digit printing."""
    while True:
        value = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if value == value and abs(value) != float("inf"):
            return value


def _value(rng: random.Random, kind: str):
    if rng.random() < 0.12:
        return None
    if kind == "text":
        return "".join(rng.choice("abcdefghij ñ漢'\"") for _ in range(rng.randint(0, 12)))
    if kind == "real":
        return random_double(rng) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6)
    if kind == "int":
        return rng.randint(-(2**63), 2**63 - 1) if rng.random() < 0.2 else rng.randint(-1000, 1000)
    if kind == "blob":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 16)))
    raise ValueError(kind)


class Workload:
    """Generates statements against the two tables, keeping track of live keys."""

    def __init__(self, seed: int, key_space: int = 60) -> None:
        self.rng = random.Random(seed)
        self.key_space = key_space

    def _item_key(self) -> int:
        return self.rng.randint(1, self.key_space)

    def _pair_key(self) -> tuple[str, int]:
        return self.rng.choice(REGIONS), self.rng.randint(1, self.key_space // 4)

    def statement(self) -> tuple[str, tuple]:
        rng = self.rng
        roll = rng.random()
        if rng.random() < 0.6:
            if roll < 0.4:
                return (
                    "INSERT OR IGNORE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        self._item_key(),
                        _value(rng, "text"),
                        _value(rng, "real"),
                        _value(rng, "int"),
                        _value(rng, "blob"),
                        _value(rng, "text"),
                    ),
                )
            if roll < 0.65:
                return (
                    "UPDATE items SET price = ?, qty = ? WHERE id = ?",
                    (_value(rng, "real"), _value(rng, "int"), self._item_key()),
                )
            if roll < 0.75:
                return ("UPDATE OR IGNORE items SET id = ? WHERE id = ?", (self._item_key(), self._item_key()))
            if roll < 0.8:
                return (
                    "UPDATE items SET note = ? WHERE id BETWEEN ? AND ?",
                    (_value(rng, "text"), self._item_key(), self._item_key()),
                )
            if roll < 0.95:
                return ("DELETE FROM items WHERE id = ?", (self._item_key(),))
            return (
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self._item_key(),
                    _value(rng, "text"),
                    _value(rng, "real"),
                    _value(rng, "int"),
                    _value(rng, "blob"),
                    _value(rng, "text"),
                ),
            )
        region, code = self._pair_key()
        if roll < 0.45:
            return (
                "INSERT OR IGNORE INTO pairs VALUES (?, ?, ?, ?)",
                (region, code, _value(rng, "real"), _value(rng, "text")),
            )
        if roll < 0.7:
            return (
                "UPDATE pairs SET score = ?, label = ? WHERE region = ? AND code = ?",
                (_value(rng, "real"), _value(rng, "text"), region, code),
            )
        if roll < 0.8:
            new_region, new_code = self._pair_key()
            return (
                "UPDATE OR IGNORE pairs SET region = ?, code = ? WHERE region = ? AND code = ?",
                (new_region, new_code, region, code),
            )
        return ("DELETE FROM pairs WHERE region = ? AND code = ?", (region, code))

    def run(self, execute: Callable[[str, tuple], object], count: int) -> None:
        for _ in range(count):
            execute(*self.statement())


def create_tables(db) -> sqlite3.Connection:
    """Create the workload's tables in the SQLite file ``db``; returns an autocommit connection to it."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    for ddl in SCHEMA.values():
        conn.execute(ddl)
    return conn
