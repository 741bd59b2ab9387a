"""Strings with characters Python treats as line breaks (U+2028, U+2029, \\x1c-\\x1e, \\x85) in the
values a fold rewrites: they reach a data file's min/max statistics unescaped in the Delta log."""

from __future__ import annotations

import sqlite3

import pytest

import rhei_lake
from tests.support.oracle import assert_same_state

ODD = ["a\u2028b", "\u2029", "x\x1cy", "\x1d", "\x1e\x1e", "\x85z", "line\nbreak", "cr\rlf"]


@pytest.mark.parametrize("mode", ["temporal", "mirror"])
def test_a_fold_over_strings_with_unicode_line_separators_compacts(tmp_path, mode):
    db = tmp_path / "app.db"
    with rhei_lake.open(oltp_path=str(db), storage=str(tmp_path / "lake"), sync_mode=mode) as lake:
        lake.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)")
        lake.register_table("t")
        lake.execute_batch([("INSERT INTO t VALUES (?, ?)", (value, value)) for value in ODD])
        lake.sync_now()
        lake.compact()
        lake.execute_batch([("UPDATE t SET v = ? || v WHERE k = ?", ("\u2028", value)) for value in ODD[::2]])
        lake.execute("DELETE FROM t WHERE k = ?", (ODD[1],))
        lake.sync_now()
        lake.compact()
        with sqlite3.connect(db) as conn:
            assert_same_state(lake, conn, "t")
