"""Commit points move only past contiguous finished offsets."""

from __future__ import annotations

from retry_worker.offsets import OffsetTracker


def test_the_commit_point_waits_for_the_lowest_unfinished_offset() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    for offset in (5, 6, 7):
        t.start("p", offset)
    t.finish("p", 7)
    t.finish("p", 6)
    assert t.committable() == {}
    t.finish("p", 5)
    assert t.committable() == {"p": 8}
    assert t.pending() == 0


def test_confirmed_commits_are_not_offered_again() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.start("p", 0)
    t.finish("p", 0)
    t.committed(t.committable())
    assert t.committable() == {}
    t.start("p", 1)
    t.finish("p", 1)
    assert t.committable() == {"p": 2}


def test_partitions_are_independent() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.start("a", 0)
    t.start("b", 0)
    t.finish("b", 0)
    assert t.committable() == {"b": 1}
    assert t.pending("a") == 1 and t.pending("b") == 0


def test_finishing_on_a_forgotten_partition_is_ignored() -> None:
    t: OffsetTracker[str] = OffsetTracker()
    t.start("a", 3)
    t.forget(["a"])
    t.finish("a", 3)
    assert t.committable() == {} and t.pending() == 0
