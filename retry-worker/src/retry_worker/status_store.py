"""Every replica's local view of the status topic, and the task that keeps it current.

:class:`StatusView` holds the latest state of every tracked request in a compact form: a
16-byte key (the capture id's UUID bytes) and a 22-byte packed value (state, reason,
attempts, response status, two times) in one dict ordered by last update. It is bounded
twice: at most ``max_tracked`` ids (the least recently updated go first) and nothing
older than ``max_age`` seconds. docs/status.md gives the measured cost per million ids.
Beside it, the last ``recent`` updated requests keep their full record and attempt
history, for the console; per-minute counts feed the console's chart.

:class:`StatusFeed` reads the whole status topic with no consumer group (each replica
reads every partition from the beginning, so any replica answers for any id) and applies
each record to the view. The view never depends on compaction: it keeps the latest state
itself, and a ``queued`` that arrives after any other state never overrides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from redrive.deadletter import REASONS
from redrive.kafka import consumer_options
from redrive.settings import KafkaSettings
from redrive.signing import SigningKeys, Verdict
from redrive.status import (
    DEAD_LETTERED,
    DELIVERED,
    STATES,
    StatusError,
    StatusRecord,
    decode_any,
    supersedes,
)

log = logging.getLogger(__name__)

_PACK = struct.Struct("<BBHHdd")
_STATE_INDEX = {s: i for i, s in enumerate(STATES)}
_REASONS = ("", *REASONS, "replayed", "unknown")
_REASON_INDEX = {r: i for i, r in enumerate(_REASONS)}
HISTORY_LIMIT = 32
"""Attempts kept per request in the console's recent set."""
CHART_MINUTES = 24 * 60


@dataclass(slots=True)
class Recent:
    """A recently updated request as the console shows it."""

    record: StatusRecord
    attempts: list[dict[str, Any]] = field(default_factory=list)
    states: list[tuple[float, str]] = field(default_factory=list)


class StatusView:
    """The latest state per capture id, bounded in count and age (see the module doc)."""

    def __init__(self, *, max_tracked: int = 1_000_000, max_age: float = 7 * 86_400.0,
                 recent: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.max_tracked = max_tracked
        self.max_age = max_age
        self._entries: dict[bytes, bytes] = {}
        self._recent: dict[str, Recent] = {}
        self._recent_max = recent
        self._clock = clock
        self.minutes: dict[int, list[int]] = {}
        """Minute (epoch // 60) -> [captured, replayed, delivered, dead_lettered]."""
        self.caught_up = False
        """True once the feed has read the topic up to its end as first seen."""

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, record: StatusRecord) -> bool:
        """Merge one record read from the topic; False when it changes nothing."""
        key = uuid.UUID(record.id).bytes
        old = self._entries.get(key)
        if old is not None:
            state, _, _, _, updated, _ = _PACK.unpack(old)
            if not supersedes(record.state, record.updated_at, STATES[state], updated):
                return False  # a late, stale or repeated write never goes back in time
            del self._entries[key]
        else:
            self._count(record.captured_at, 0)
        self._entries[key] = _PACK.pack(
            _STATE_INDEX[record.state], _REASON_INDEX.get(record.reason or "", len(_REASONS) - 1),
            min(record.attempts, 65535), record.response or 0, record.updated_at,
            record.captured_at)
        if record.attempt is not None:
            self._count(record.updated_at, 1)
        if record.state == DELIVERED:
            self._count(record.updated_at, 2)
        elif record.state == DEAD_LETTERED:
            self._count(record.updated_at, 3)
        self._remember(record)
        self._bound()
        return True

    def _remember(self, record: StatusRecord) -> None:
        recent = self._recent.pop(record.id, None)
        if recent is None:
            recent = Recent(record)
        elif not record.method and recent.record.method:
            # Worker records of a request whose queued record we saw: keep what it knew.
            record = _with_origin(record, recent.record)
        recent.record = record
        if record.attempt is not None and len(recent.attempts) < HISTORY_LIMIT:
            recent.attempts.append(record.attempt)
        if len(recent.states) < HISTORY_LIMIT:
            recent.states.append((record.updated_at, record.state))
        self._recent[record.id] = recent
        while len(self._recent) > self._recent_max:
            self._recent.pop(next(iter(self._recent)))

    def _count(self, at: float, column: int) -> None:
        minute = int(at // 60)
        row = self.minutes.get(minute)
        if row is None:
            row = self.minutes[minute] = [0, 0, 0, 0]
            oldest = minute - CHART_MINUTES
            for stale in [m for m in self.minutes if m < oldest]:
                del self.minutes[stale]
        row[column] += 1

    def _bound(self) -> None:
        entries = self._entries
        while len(entries) > self.max_tracked:
            entries.pop(next(iter(entries)))

    def expire(self) -> int:
        """Forget ids not updated for ``max_age`` seconds; how many were forgotten."""
        cutoff = self._clock() - self.max_age
        entries, dropped = self._entries, 0
        while entries:
            key = next(iter(entries))
            if _PACK.unpack(entries[key])[4] >= cutoff:
                break
            del entries[key]
            dropped += 1
        return dropped

    def get(self, capture_id: str) -> StatusRecord | None:
        """The latest known state of ``capture_id`` (a valid id), or None."""
        packed = self._entries.get(uuid.UUID(capture_id).bytes)
        if packed is None:
            return None
        state, reason, attempts, response, updated, captured = _PACK.unpack(packed)
        return StatusRecord(id=capture_id.lower(), state=STATES[state], attempts=attempts,
                            updated_at=updated, captured_at=captured,
                            response=response or None, reason=_REASONS[reason] or None)

    def recent(self, capture_id: str) -> Recent | None:
        return self._recent.get(capture_id.lower())

    def recents(self) -> Iterator[Recent]:
        """The recently updated requests, newest update first."""
        return reversed(list(self._recent.values()))


def _with_origin(record: StatusRecord, origin: StatusRecord) -> StatusRecord:
    return replace(record, method=origin.method, path=origin.path,
                   source=record.source or origin.source)


class StatusFeed:
    """Reads the whole status topic into a :class:`StatusView`, forever (a root task)."""

    def __init__(self, kafka: KafkaSettings, topic: str, view: StatusView, *,
                 client_id: str, signing: SigningKeys | None = None,
                 on_record: Callable[[str], None] = lambda _result: None,
                 refresh_seconds: float = 2.0) -> None:
        self._kafka = kafka
        self.topic = topic
        self._view = view
        self._client_id = client_id
        self._signing = signing
        self._on_record = on_record
        self._refresh = refresh_seconds

    async def run(self, stopping: asyncio.Event) -> None:
        delay = 0.2
        while not stopping.is_set():
            consumer = AIOKafkaConsumer(**self._options())
            try:
                async with asyncio.timeout(30):
                    await consumer.start()
                await self._consume(consumer, stopping)
                return
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("status feed: kafka unreachable; retrying", extra={
                    "topic": self.topic, "error": str(exc) or type(exc).__name__,
                    "retry_in_seconds": delay})
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await consumer.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()
            delay = min(5.0, delay * 2)

    def _options(self) -> dict[str, Any]:
        options = consumer_options(self._kafka, client_id=self._client_id, group_id=None)
        options["fetch_max_wait_ms"] = 200
        # Subscribed without a group, the consumer is assigned every partition and follows
        # the metadata, so a topic created later (by its first write) is read too.
        options["metadata_max_age_ms"] = int(self._refresh * 1000)
        return options

    async def _consume(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        async with asyncio.timeout(30):
            exists = self.topic in await consumer.topics()
        consumer.subscribe(topics=[self.topic])
        loop = asyncio.get_running_loop()
        next_expiry = loop.time() + 60.0
        while not stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for messages in batch.values():
                for m in messages:
                    self._apply(m.value or b"", list(m.headers or ()))
            if not self._view.caught_up and (consumer.assignment() or not exists) \
                    and await self._at_end(consumer):
                self._view.caught_up = True
                log.info("status view loaded", extra={"topic": self.topic,
                                                      "tracked_requests": len(self._view)})
            if loop.time() >= next_expiry:
                next_expiry = loop.time() + 60.0
                self._view.expire()

    async def _at_end(self, consumer: AIOKafkaConsumer) -> bool:
        """True once every assigned partition was read up to its end (no partitions: the
        topic does not exist yet, so there is nothing to know)."""
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None or await consumer.position(tp) < high:
                return False
        return True

    def _apply(self, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if self._signing is not None and \
                self._signing.verify_headers(value, headers) is not Verdict.VALID:
            self._on_record("unverified")
            return
        try:
            records = decode_any(value)
        except StatusError:
            self._on_record("unreadable")
            return
        for record in records:
            self._on_record("applied" if self._view.apply(record) else "superseded")
