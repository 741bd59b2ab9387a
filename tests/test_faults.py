"""The fault-point facility: inert unless armed, fires on the chosen hit, parses specs strictly."""

from __future__ import annotations

import errno

import pytest

from rhei_lake import faults


@pytest.fixture(autouse=True)
def _disarmed():
    faults.disarm()
    yield
    faults.disarm()


def test_points_do_nothing_unless_armed():
    for name in faults.POINTS:
        faults.point(name)
    faults.point("not even a known point")  # unarmed: not even looked up


def test_an_armed_point_fires_on_its_hit_for_its_times():
    calls = []
    faults.arm("flush.before_commit", calls.append, hit=2, times=2)
    for _ in range(5):
        faults.point("flush.before_commit")
        faults.point("changelog.before_commit")
    assert calls == ["flush.before_commit", "flush.before_commit"]
    assert faults.fired("flush.before_commit") == 2


def test_times_zero_fires_on_every_hit_from_then_on():
    calls = []
    with faults.armed("delta.before_commit", calls.append, hit=3, times=0):
        for _ in range(6):
            faults.point("delta.before_commit")
    assert len(calls) == 4
    faults.point("delta.before_commit")
    assert len(calls) == 4, "disarmed when the block ended"


def test_spec_arms_errno_actions():
    faults.arm_spec("blob.after_data_before_commit=enospc@2, restore.after_table=eio*0")
    faults.point("blob.after_data_before_commit")
    with pytest.raises(OSError) as info:
        faults.point("blob.after_data_before_commit")
    assert info.value.errno == errno.ENOSPC and "injected at blob.after_data_before_commit" in str(info.value)
    for _ in range(3):
        with pytest.raises(OSError) as info:
            faults.point("restore.after_table")
        assert info.value.errno == errno.EIO


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no.such.point=kill", "unknown fault point"),
        ("flush.before_commit", "not point=action"),
        ("flush.before_commit=explode", "unknown fault action"),
        ("flush.before_commit=kill@0", "hit must be"),
        ("flush.before_commit=sleep", "unknown fault action"),
    ],
)
def test_bad_specs_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        faults.arm_spec(spec)


def test_every_point_is_placed_in_the_library():
    from pathlib import Path

    source = "\n".join(p.read_text() for p in Path(faults.__file__).parent.rglob("*.py") if p.name != "faults.py")
    missing = [name for name in faults.POINTS if f'faults.point("{name}")' not in source]
    assert not missing, f"documented but never reached: {missing}"
