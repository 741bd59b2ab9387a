"""The differential fuzzer's crash child: holds the lake, runs a piece of a program, is killed at a fault point.

Usage: python -m tests.support.fuzz_child DB STORAGE   (the work as JSON on stdin)

The work is a list of steps, ``["batch", [[sql, params], ...]]``, ``["sync"]``,
``["flush"]`` or ``["compact"]``; parameters are encoded by :func:`encode`
(reals by their bits). ``RHEI_FAULTS`` (a :mod:`rhei_lake.faults` spec) names
the point at which the child SIGKILLs itself; if the work never reaches it the
child exits 0. A batch that fails is part of the program (SQLite refused it),
not a failure of the child; a terminal error of the lake exits with
:data:`STOPPED_EXIT`.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import Any

import rhei_lake
from rhei_lake import faults
from rhei_lake.errors import RheiError

LAKE_OPTIONS: dict[str, Any] = {"prune_interval": 0, "tail_flush_segments": 3}
"""How the fuzzer opens its lakes, in the parent and in this child alike."""
STOPPED_EXIT = 3
"""The child's exit code when the lake stopped with a terminal error (its last stderr line)."""


def encode(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return {"i": str(int(value))}
    if isinstance(value, int):
        return {"i": str(value)}
    if isinstance(value, float):
        return {"f": struct.pack("<d", value).hex()}
    if isinstance(value, str):
        return {"s": value}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    raise TypeError(f"cannot encode {value!r}")


def decode(value: Any) -> Any:
    if value is None:
        return None
    ((kind, text),) = value.items()
    if kind == "i":
        return int(text)
    if kind == "f":
        return struct.unpack("<d", bytes.fromhex(text))[0]
    if kind == "s":
        return text
    if kind == "b":
        return bytes.fromhex(text)
    raise ValueError(f"unknown encoded value {value!r}")


def encode_work(work: list[tuple]) -> str:
    steps = []
    for step in work:
        if step[0] == "batch":
            steps.append(["batch", [[sql, [encode(p) for p in params]] for sql, params in step[1]]])
        else:
            steps.append([step[0]])
    return json.dumps(steps)


def main() -> None:
    db, storage = sys.argv[1], sys.argv[2]
    work = json.loads(sys.stdin.read())
    faults.arm_spec(os.environ.get("RHEI_FAULTS"))
    try:
        run(db, storage, work)
    except RheiError as exc:
        if exc.transient:
            raise
        print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(STOPPED_EXIT) from None


def run(db: str, storage: str, work: list) -> None:
    with rhei_lake.open(oltp_path=db, storage=storage, **LAKE_OPTIONS) as lake:
        for step in work:
            if step[0] == "batch":
                statements = [(sql, tuple(decode(p) for p in params)) for sql, params in step[1]]
                try:
                    lake.execute_batch(statements)
                except RheiError as exc:
                    print(f"batch refused: {exc}", file=sys.stderr)
            elif step[0] == "sync":
                lake.sync_now()
            elif step[0] == "flush":
                lake.flush()
            elif step[0] == "compact":
                lake.compact(vacuum_retention=0)
            else:
                raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main()
