"""Named fault points: the moments that matter for crash safety, where tests break the engine on purpose.

Library code marks them with ``faults.point("sync.after_commit_before_prune")``.
Nothing is armed in normal operation, and then a point costs one global read
and a comparison. Tests arm points in-process with :func:`armed`, or in a child
process from a spec string that the child's *entry point* reads (library code
never reads the environment)::

    faults.arm_spec(os.environ.get("RHEI_FAULTS"))   # e.g. "flush.before_commit=kill@2"

A spec is comma-separated ``point=action[@hit][*times]`` items: the action
fires on the ``hit``-th time the point is reached (default 1), then on the
next ``times - 1`` hits (default 1; ``*0`` means every hit from then on).
Actions:

``kill``
    SIGKILL this process at once: a crash at exactly that moment.
``kill~MS``
    SIGKILL this process after a random delay of up to MS milliseconds, from
    another thread, while the engine goes on: a crash somewhere inside the
    work that follows (for example inside a Delta commit, which delta-rs
    performs in one call that no point can split).
``enospc`` / ``eio``
    Raise ``OSError(ENOSPC)`` / ``OSError(EIO)``, as a full or failing disk does.
``sleep~MS``
    Sleep MS milliseconds (a stall).

In-process tests may also pass any callable as the action.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

POINTS: dict[str, str] = {
    "sync.after_read_before_commit": "a batch was read from the CDC log and converted; nothing of it committed",
    "changelog.before_commit": "a table's new events are ready; the write that commits them has not started",
    "blob.after_data_before_commit": (
        "local tier: an object's bytes are written and fsynced under a temporary name, not yet linked into place"
    ),
    "changelog.after_commit": "the commit of a table's events returned; the process has not recorded it yet",
    "sync.after_commit_before_prune": "every event read is committed; the CDC log is not pruned yet",
    "cdc.before_prune_commit": "the CDC log prune ran inside its SQLite transaction, not committed yet",
    "flush.before_commit": "the hot-path tail is read; its fold into the Delta changelog has not started",
    "flush.after_commit_before_discard": "the tail is folded into Delta; its segment files are not deleted yet",
    "delta.before_commit": "a Delta write (data files and commit, one delta-rs call) is about to start",
    "delta.rewrite_before_commit": (
        "a Delta merge wrote its new data files (unreferenced yet); the commit that swaps them in has not started"
    ),
    "snapshot.before_start": "a registered table's changelog exists (maybe empty); its snapshot has not started",
    "first_read.batch_converted": (
        "a big table's first read (a columnar snapshot, a sidecar's first sync) converted a batch in its reader "
        "thread; the Delta writer may be writing earlier ones, nothing is committed (a snapshot's changelog may "
        "not exist yet: its read starts while the changelog is made)"
    ),
    "first_read.before_count": (
        "a PostgreSQL table's first read pinned its snapshot; the thread that counts its rows and reads its last "
        "row is about to count them, while the ADBC connection opens and the rows stream"
    ),
    "first_sync.after_events_before_cursor": (
        "sidecar: a table's first columnar read is committed as events; the cursor it ended on is not yet"
    ),
    "snapshot.after_commit_before_ready": "a snapshot is committed to the lake; SQLite's registry not updated yet",
    "schema.after_lake_prepare": "schema change: the Delta tables have the new columns; SQLite not altered yet",
    "schema.after_source_commit": "schema change: SQLite, triggers and registry altered; the lake's spec not yet",
    "schema.mid_apply_spec": "schema change: Delta columns added, the table's spec property not written yet",
    "schema.follow_detected": "a mirrored table was changed outside rhei_lake; the sync noticed, nothing done yet",
    "schema.follow_before_commit": (
        "following an outside schema change: triggers reinstalled and derived events stored, SQLite not committed"
    ),
    "schema.follow_after_commit": (
        "following an outside schema change: SQLite committed (triggers, registry, derived events); lake not yet"
    ),
    "restore.after_table": "restore: one table copied into the temporary file",
    "restore.before_rename": "restore: the temporary file is complete and synced, not renamed into place yet",
    "compact.feed_packed": (
        "compaction: the change feed's small files are read and staged as one file; the commit swapping them not started"
    ),
    "fold.before_commit": "compaction: a batch of events is read and turned into versions; its commit not started",
    "fold.after_commit": "compaction: one fold batch committed (with its folded watermark); the next not read",
    "compact.after_fold": "compaction: the table is folded; expiry, bin-packing and checkpoint not started",
    "compact.before_vacuum": "compaction: bin-packed and checkpointed; unreferenced files not vacuumed yet",
    "binding.after_check": "a lake checked a database's binding inside its write transaction; nothing recorded yet",
}
"""Every fault point and the state the engine is in when it is reached."""

Action = Callable[[str], None]

_armed: dict[str, _Fault] | None = None
_lock = threading.Lock()


@dataclass
class _Fault:
    action: Action
    hit: int = 1
    times: int = 1
    seen: int = 0
    fired: int = 0


def point(name: str) -> None:
    """Mark fault point ``name`` (one of :data:`POINTS`); does nothing unless a test armed it."""
    if _armed is None:
        return
    _reach(name)


def _reach(name: str) -> None:
    with _lock:
        fault = (_armed or {}).get(name)
        if fault is None:
            return
        fault.seen += 1
        due = fault.seen >= fault.hit and (fault.times == 0 or fault.fired < fault.times)
        if due:
            fault.fired += 1
    if due:
        fault.action(name)


def arm(name: str, action: Action | str, *, hit: int = 1, times: int = 1) -> None:
    """Arm point ``name`` with ``action`` (a callable or an action word, see the module notes)."""
    global _armed
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r}; known: {sorted(POINTS)}")
    if hit < 1 or times < 0:
        raise ValueError("hit must be >= 1 and times >= 0")
    resolved = action if callable(action) else _parse_action(action)
    with _lock:
        armed = dict(_armed or {})
        armed[name] = _Fault(resolved, hit, times)
        _armed = armed


def disarm(name: str | None = None) -> None:
    """Disarm ``name``, or every point."""
    global _armed
    with _lock:
        if name is None or _armed is None:
            _armed = None
            return
        armed = {k: v for k, v in _armed.items() if k != name}
        _armed = armed or None


def fired(name: str) -> int:
    """How many times the action armed on ``name`` has run."""
    with _lock:
        fault = (_armed or {}).get(name)
        return fault.fired if fault else 0


@contextmanager
def armed(name: str, action: Action | str, *, hit: int = 1, times: int = 1) -> Iterator[None]:
    """Arm ``name`` for the duration of a ``with`` block."""
    arm(name, action, hit=hit, times=times)
    try:
        yield
    finally:
        disarm(name)


def arm_spec(spec: str | None) -> None:
    """Arm every point of a spec string (see the module notes); ``None`` or ``""`` arms nothing."""
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, rest = item.partition("=")
        if not sep:
            raise ValueError(f"fault spec item {item!r} is not point=action")
        times = 1
        if "*" in rest:
            rest, _, count = rest.rpartition("*")
            times = int(count)
        hit = 1
        if "@" in rest:
            rest, _, at = rest.rpartition("@")
            hit = int(at)
        arm(name.strip(), rest.strip(), hit=hit, times=times)


def _parse_action(word: str) -> Action:
    kind, _, arg = word.partition("~")
    if kind == "kill" and not arg:
        return _kill_now
    if kind == "kill":
        return _kill_within(float(arg) / 1000)
    if kind == "sleep" and arg:
        seconds = float(arg) / 1000
        return lambda _name: time.sleep(seconds)
    if kind == "enospc" and not arg:
        return _raise_errno(errno.ENOSPC)
    if kind == "eio" and not arg:
        return _raise_errno(errno.EIO)
    raise ValueError(f"unknown fault action {word!r} (kill, kill~MS, sleep~MS, enospc, eio)")


def _kill_now(_name: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_within(seconds: float) -> Action:
    def action(_name: str) -> None:
        delay = random.uniform(0, seconds)
        killer = threading.Timer(delay, _kill_now, args=(_name,))
        killer.daemon = True
        killer.start()

    return action


def _raise_errno(code: int) -> Action:
    def action(name: str) -> None:
        raise OSError(code, f"{os.strerror(code)} (injected at {name})")

    return action
