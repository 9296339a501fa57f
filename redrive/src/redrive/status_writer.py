"""Writing status records without making anyone wait for them.

:meth:`StatusWriter.write` is synchronous and never blocks: it queues the record and wakes
one sender task, which publishes everything queued so far together (one Kafka batch per
partition, through the component's existing :class:`~redrive.kafka.Publisher`) and waits
for the acknowledgements. The capture path and the replay path therefore pay for a status
write with a JSON encoding and a list append, nothing more.

Status is informative, the records themselves are the durable truth: the queue is bounded
(the oldest record is dropped and counted past ``max_pending``), and a record Kafka does
not take is retried (the worker: order is kept) or set aside (the sidecar: see
:meth:`StatusWriter.unsent`, so its well-known path can still answer ``queued``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from redrive.errors import PublishError
from redrive.signing import SigningKeys, with_signature
from redrive.status import StatusRecord, encode

log = logging.getLogger(__name__)


class Publish(Protocol):
    async def publish(self, topic: str, key: bytes, value: bytes,
                      headers: Sequence[tuple[str, bytes]], timeout: float) -> object: ...


STATUS_HEADERS: list[tuple[str, bytes]] = [("redrive-status-version", b"1")]


class StatusWriter:
    """Fire-and-forget status records to one topic, in order, bounded."""

    def __init__(self, publisher: Publish, topic: str, *, timeout: float = 5.0,
                 max_pending: int = 10_000, retry: bool = True,
                 signing: SigningKeys | None = None, max_unsent: int = 100_000,
                 unsent_ttl: float = 3600.0,
                 on_result: Callable[[str], None] = lambda _result: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.topic = topic
        self._publisher = publisher
        self._timeout = timeout
        self._max_pending = max_pending
        self._retry = retry
        self._signing = signing
        self._pending: collections.deque[StatusRecord] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsent: dict[str, tuple[float, StatusRecord]] = {}
        self._max_unsent = max_unsent
        self._unsent_ttl = unsent_ttl
        self._on_result = on_result
        self._clock = clock
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def write(self, record: StatusRecord) -> None:
        """Queue ``record``; returns at once. Past ``max_pending`` the oldest is dropped."""
        if self._closing:
            return
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._on_result("dropped")
        self._pending.append(record)
        self._wakeup.set()

    def unsent(self, capture_id: str) -> StatusRecord | None:
        """The last record for ``capture_id`` that Kafka did not take (without ``retry``),
        kept up to ``unsent_ttl`` seconds; None otherwise."""
        hit = self._unsent.get(capture_id)
        if hit is None:
            return None
        if self._clock() - hit[0] > self._unsent_ttl:
            self._unsent.pop(capture_id, None)
            return None
        return hit[1]

    async def start(self) -> None:
        """Start the sender task. Safe to call twice."""
        if self._task is None:
            self._task = asyncio.create_task(self._send_loop(), name=f"status-{self.topic}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by ``timeout``), then stop. Safe to call twice."""
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return
        deadline = asyncio.get_running_loop().time() + timeout
        while self._pending and asyncio.get_running_loop().time() < deadline:
            self._wakeup.set()
            await asyncio.sleep(0.02)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._pending:
            log.warning("status records not written at shutdown",
                        extra={"records": len(self._pending), "topic": self.topic})

    async def _send_loop(self) -> None:
        delay = 0.2
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = list(self._pending)
            self._pending.clear()
            if not batch:
                continue
            results = await asyncio.gather(*(self._publish(r) for r in batch))
            failed = [r for r, ok in zip(batch, results, strict=True) if not ok]
            for _ in range(len(batch) - len(failed)):
                self._on_result("written")
            if not failed:
                delay = 0.2
                continue
            if self._retry:
                # Put them back in front, in order, and try again after a pause.
                self._pending.extendleft(reversed(failed))
                while len(self._pending) > self._max_pending:
                    self._pending.popleft()
                    self._on_result("dropped")
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                self._wakeup.set()
            else:
                now = self._clock()
                for record in failed:
                    self._on_result("failed")
                    self._unsent.pop(record.id, None)
                    self._unsent[record.id] = (now, record)
                while len(self._unsent) > self._max_unsent:
                    self._unsent.pop(next(iter(self._unsent)))

    async def _publish(self, record: StatusRecord) -> bool:
        value = encode(record)
        headers = with_signature(list(STATUS_HEADERS), value, self._signing)
        try:
            await self._publisher.publish(self.topic, record.id.encode(), value, headers,
                                          self._timeout)
        except PublishError as exc:
            log.debug("status record not written", extra={
                "capture_id": record.id, "state": record.state, "error": str(exc)})
            return False
        return True
