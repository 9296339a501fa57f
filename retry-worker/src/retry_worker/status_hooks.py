"""What the engine tells the status topic: one call per attempt outcome or refusal.

The engine calls :meth:`RequestStatus.attempted` after each replay and
:meth:`RequestStatus.refused` when a record is dead-lettered without one. Both return at
once (a :class:`~redrive.status_writer.StatusWriter` sends in the background), so status
never slows a replay. :class:`NoStatus` is the engine's default: tests and embedders that
build an Engine without status keep working unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from redrive.deadletter import AttemptLog
from redrive.envelope import Record
from redrive.status import DEAD_LETTERED, DELIVERED, RETRYING, StatusRecord, valid_id
from redrive.status_writer import StatusWriter
from retry_worker.policy import DeadLetter, Decision, Done, Result, RetryAt


class NoStatus:
    """Status off: every call does nothing."""

    def attempted(self, record: Record, attempt: int, result: Result,
                  decision: Decision) -> None:
        pass

    def refused(self, record: Record, decision: DeadLetter,
                history: Sequence[AttemptLog]) -> None:
        pass


def _source(record: Record) -> str:
    return f"{record.source.namespace}/{record.source.pod}".strip("/")


class RequestStatus(NoStatus):
    """Status records from the engine's outcomes, through a StatusWriter."""

    def __init__(self, writer: StatusWriter, clock: Callable[[], float] = time.time) -> None:
        self._writer = writer
        self._clock = clock

    def attempted(self, record: Record, attempt: int, result: Result,
                  decision: Decision) -> None:
        if not valid_id(record.id):
            return
        if isinstance(decision, Done):
            state, reason, detail = DELIVERED, None, None
        elif isinstance(decision, RetryAt):
            state, reason, detail = RETRYING, None, None
        else:
            state, reason, detail = DEAD_LETTERED, decision.reason, decision.detail
        self._writer.write(StatusRecord(
            id=record.id, state=state, attempts=attempt, updated_at=self._clock(),
            captured_at=record.timestamp, response=result.status, reason=reason,
            detail=detail, method=record.method, path=record.path or record.uri.split("?")[0],
            source=_source(record), attempt=result.log().to_dict()))

    def refused(self, record: Record, decision: DeadLetter,
                history: Sequence[AttemptLog]) -> None:
        if not valid_id(record.id):
            return
        last = history[-1] if history else None
        self._writer.write(StatusRecord(
            id=record.id, state=DEAD_LETTERED, attempts=max(record.attempt, len(history)),
            updated_at=self._clock(), captured_at=record.timestamp,
            response=last.status if last is not None else None, reason=decision.reason,
            detail=decision.detail, method=record.method,
            path=record.path or record.uri.split("?")[0], source=_source(record)))
