"""Making an outcome durable: re-publish for a later attempt, or dead-letter.

Each write waits for Kafka's acknowledgement and keeps trying while Kafka is unavailable;
the caller marks the record's offset finished only after it returns. A record Kafka
refuses for good (:func:`redrive.kafka.publish_error`) is appended to the quarantine file
instead and counted, never retried forever and never dropped. Cancelling a write
(shutdown) leaves the offset uncommitted, so the record is read again after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from redrive import quarantine
from redrive.deadletter import (
    DUE_HEADER,
    HISTORY_HEADER,
    MALFORMED,
    AttemptLog,
    dead_letter,
    encode_due,
    encode_history,
    malformed_letter,
)
from redrive.envelope import KAFKA_HEADERS, Record, encode
from redrive.errors import PublishError
from redrive.kafka import Headers
from redrive.quarantine import Quarantined
from redrive.signing import SigningKeys, with_signature
from retry_worker.metrics import Metrics
from retry_worker.policy import DeadLetter
from retry_worker.settings import DEFAULT_QUARANTINE_DIR

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT = 10.0
"""Longest wait for one acknowledgement of a retry or dead-letter record."""


class Sink(Protocol):
    """The Kafka producer seam (:class:`redrive.kafka.Publisher`)."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers,
                      timeout: float) -> object: ...

    async def publish_many(self, topic: str, records: Sequence[tuple[bytes, bytes, Headers]],
                           timeout: float, *, alone: bool = False
                           ) -> Sequence[object]: ...


class Outcomes:
    def __init__(self, publisher: Sink, metrics: Metrics, *, retry_topic: str, dlq_topic: str,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 signing: SigningKeys | None = None,
                 quarantine_dir: Path = DEFAULT_QUARANTINE_DIR) -> None:
        self._publisher = publisher
        self._quarantine_dir = quarantine_dir
        self._signing = signing
        self._metrics = metrics
        self._retry_topic = retry_topic
        self._dlq_topic = dlq_topic
        self._clock = clock
        self._sleep = sleep

    async def retry_later(self, record: Record, due: float, history: Sequence[AttemptLog],
                          *, topic: str | None = None) -> None:
        """Park ``record`` (its ``attempt`` = replays made) until ``due`` on ``topic`` (the
        retry tier of its delay; the single retry topic when None)."""
        headers = [*KAFKA_HEADERS, (DUE_HEADER, encode_due(due)),
                   (HISTORY_HEADER, encode_history(history))]
        await self._publish(topic or self._retry_topic, record.id.encode(), encode(record),
                            headers)
        self._metrics.retries_scheduled.inc()

    async def dead_letter(self, record: Record, decision: DeadLetter,
                          history: Sequence[AttemptLog], *, quiet: bool = False) -> None:
        """Publish the letter; ``quiet`` when the caller logs the outcome itself."""
        letter = dead_letter(record, decision.reason, history, at=self._clock(),
                             detail=decision.detail)
        await self._publish(self._dlq_topic, record.id.encode(), encode(letter), KAFKA_HEADERS)
        self._metrics.dead_letters.labels(decision.reason).inc()
        if not quiet:
            log.warning("record dead-lettered", extra={
                "reason": decision.reason, "detail": decision.detail,
                "attempts": len(history)})

    async def rejected(self, record: Record, reason: str, detail: str) -> None:
        """Dead-letter a record whose signature failed (``unsigned``/``forged``), unsigned,
        so the letter never gains a valid signature it did not have."""
        letter = dead_letter(record, reason, (), at=self._clock(), detail=detail)
        await self._publish(self._dlq_topic, record.id.encode(), encode(letter), KAFKA_HEADERS,
                            sign=False)
        self._metrics.rejected.labels(reason).inc()
        self._metrics.dead_letters.labels(reason).inc()
        log.warning("record rejected", extra={"reason": reason, "detail": detail})

    async def malformed(self, value: bytes, problems: Sequence[str], *, topic: str,
                        partition: int, offset: int, key: bytes | None) -> None:
        """Dead-letter a value that is not a record, wrapped with its raw bytes."""
        letter_id, wrapped = malformed_letter(value, problems, at=self._clock(), topic=topic,
                                              partition=partition, offset=offset, key=key)
        await self._publish(self._dlq_topic, key or letter_id.encode(), wrapped, KAFKA_HEADERS)
        self._metrics.rejected.labels(MALFORMED).inc()
        self._metrics.dead_letters.labels(MALFORMED).inc()
        log.warning("malformed record dead-lettered", extra={
            "topic": topic, "partition": partition, "offset": offset,
            "dead_letter_id": letter_id, "problems": list(problems[:5])})

    async def _publish(self, topic: str, key: bytes, value: bytes, headers: Headers, *,
                       sign: bool = True) -> None:
        """Publish until Kafka acknowledges (backing off up to 5 s between tries).

        With signing on, the value is (re-)signed with the first key, so a signed pipeline
        stays signed across the retry topic and the DLQ."""
        headers = with_signature(list(headers), value, self._signing if sign else None)
        delay = 0.2
        while True:
            try:
                await self._publisher.publish(topic, key, value, headers, PUBLISH_TIMEOUT)
                return
            except PublishError as exc:
                if not exc.retriable and await self._refused(topic, key, value, headers, exc):
                    return
                log.warning("publish failed; retrying", extra={
                    "topic": topic, "error": str(exc), "retry_in_seconds": delay})
                await self._sleep(delay)
                delay = min(5.0, delay * 2)

    async def _refused(self, topic: str, key: bytes, value: bytes, headers: Headers,
                       exc: PublishError) -> bool:
        """Kafka refused the record for good: try it once in a batch of its own (a broker
        refuses a whole batch that is too large), then quarantine it. True when the record
        is safe (delivered, or fsync'd in the quarantine file); False to keep retrying
        (the quarantine file cannot be written: never drop)."""
        (result,) = await self._publisher.publish_many(topic, [(key, value, headers)],
                                                       PUBLISH_TIMEOUT, alone=True)
        if not isinstance(result, PublishError):
            return True
        if result.retriable:
            return False
        entry = Quarantined(topic=topic, key=key, value=value, headers=tuple(headers),
                            reason=result.reason, detail=str(result), at=self._clock())
        try:
            await asyncio.to_thread(quarantine.append, self._quarantine_dir, [entry])
        except OSError as err:
            log.error("cannot write the quarantine file; the record stays unacknowledged",
                      extra={"topic": topic, "error": repr(err),
                             "quarantine_dir": str(self._quarantine_dir)})
            return False
        self._metrics.quarantined.labels(result.reason).inc()
        log.error("kafka refused a record for good; quarantined", extra={
            "topic": topic, "capture_id": entry.id, "reason": result.reason,
            "error": str(result), "value_bytes": len(value),
            "quarantine_file": str(quarantine.path_in(self._quarantine_dir))})
        return True
