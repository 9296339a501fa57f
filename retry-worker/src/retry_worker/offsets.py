"""Which offsets may be committed: the lowest unfinished offset of each partition.

Records of one partition finish out of order (replays run concurrently, retry records
wait for different due times), but Kafka keeps one committed offset per partition: the
*next* one to read. So a partition's commit point only moves past a contiguous run of
finished offsets. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass(slots=True)
class _Partition:
    started: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    commit_point: int | None = None
    committed: int | None = None


class OffsetTracker(Generic[P]):
    """Tracks started and finished offsets per partition (any hashable partition key)."""

    def __init__(self) -> None:
        self._parts: dict[P, _Partition] = {}

    def start(self, partition: P, offset: int) -> None:
        """Record that ``offset`` was read. Offsets of one partition arrive in order."""
        self._parts.setdefault(partition, _Partition()).started.append(offset)

    def finish(self, partition: P, offset: int) -> None:
        """Record that ``offset``'s outcome is durable. Unknown partitions are ignored
        (the partition was revoked while the record was in flight)."""
        part = self._parts.get(partition)
        if part is None:
            return
        part.finished.add(offset)
        while part.started and part.started[0] in part.finished:
            done = part.started.popleft()
            part.finished.discard(done)
            part.commit_point = done + 1

    def pending(self, partition: P | None = None) -> int:
        """Offsets read and not finished, for one partition or all."""
        parts = self._parts.values() if partition is None else \
            [self._parts[partition]] if partition in self._parts else []
        return sum(len(p.started) for p in parts)

    def committable(self) -> dict[P, int]:
        """Commit points that moved since :meth:`committed` last confirmed them."""
        return {tp: p.commit_point for tp, p in self._parts.items()
                if p.commit_point is not None and p.commit_point != p.committed}

    def committed(self, offsets: dict[P, int]) -> None:
        """Confirm that ``offsets`` were committed."""
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None:
                part.committed = offset

    def forget(self, partitions: Iterable[P]) -> None:
        """Drop partitions this worker no longer owns."""
        for tp in partitions:
            self._parts.pop(tp, None)
