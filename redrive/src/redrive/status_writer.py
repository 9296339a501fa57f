"""Writing status records without making anyone wait for them.

:meth:`StatusWriter.write` is synchronous and never blocks: it queues the record and wakes
one sender task, which publishes everything queued so far together (one Kafka batch per
partition, through the component's existing :class:`~redrive.kafka.Publisher`) and waits
for the acknowledgements. The capture path and the replay path therefore pay for a status
write with a JSON encoding and a list append, nothing more.

Status is informative, the records themselves are the durable truth: the queues are
bounded (the oldest is dropped and counted), and what Kafka does not take is tried again:
:class:`StatusWriter` (the worker's per-id records) in order; :class:`QueuedBatcher`
(the sidecar's batched ``queued`` states) meanwhile answers for them through
:meth:`QueuedBatcher.unsent`, so the sidecar's well-known path can still say ``queued``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redrive import runtime
from redrive.envelope import new_id
from redrive.errors import PublishError
from redrive.signing import SigningKeys, with_signature
from redrive.status import BULK_KEY_PREFIX, StatusRecord, encode, encode_queued_batch

log = logging.getLogger(__name__)


class Enqueue(Protocol):
    """The seam to :meth:`redrive.kafka.Publisher.enqueue`."""

    def enqueue(self, topic: str, key: bytes, value: bytes,
                headers: Sequence[tuple[str, bytes]]) -> asyncio.Future[Any]: ...


STATUS_HEADERS: list[tuple[str, bytes]] = [("redrive-status-version", b"1")]


class StatusWriter:
    """The worker's status records to one topic: fire and forget, in order, bounded."""

    def __init__(self, publisher: Enqueue, topic: str, *, timeout: float = 5.0,
                 max_pending: int = 10_000, signing: SigningKeys | None = None,
                 on_result: Callable[[str, int], None] = lambda _result, _count: None
                 ) -> None:
        self.topic = topic
        self._publisher = publisher
        self._timeout = timeout
        self._max_pending = max_pending
        self._signing = signing
        self._pending: collections.deque[StatusRecord] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_result = on_result
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
            self._on_result("dropped", 1)
        self._pending.append(record)
        self._wakeup.set()

    async def start(self) -> None:
        """Start the sender task. Safe to call twice."""
        if self._task is None:
            self._task = runtime.supervise(
                asyncio.create_task(self._send_loop(), name=f"status-{self.topic}"))

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by ``timeout``), then stop. Safe to call twice."""
        await _finish(self, timeout)
        if self._pending:
            log.warning("status records not written at shutdown",
                        extra={"records": len(self._pending), "topic": self.topic})

    async def _send_loop(self) -> None:
        delay = 0.2
        while not (self._closing and not self._pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = list(self._pending)
            self._pending.clear()
            if not batch:
                continue
            failed = await self._send(batch)
            self._on_result("written", len(batch) - len(failed))
            if not failed:
                delay = 0.2
                continue
            # Put them back in front, in order, and try again after a pause.
            self._on_result("failed", len(failed))
            self._pending.extendleft(reversed(failed))
            while len(self._pending) > self._max_pending:
                self._pending.popleft()
                self._on_result("dropped", 1)
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
            self._wakeup.set()

    async def _send(self, batch: list[StatusRecord]) -> list[StatusRecord]:
        """Hand ``batch`` to the publisher at once (no task or timer per record) and wait,
        at most ``timeout`` seconds for all; the records Kafka did not take."""
        sent: list[tuple[StatusRecord, asyncio.Future[object]]] = []
        failed: list[StatusRecord] = []
        for i, record in enumerate(batch):
            value = encode(record)
            headers = (STATUS_HEADERS if self._signing is None
                       else with_signature(list(STATUS_HEADERS), value, self._signing))
            try:
                sent.append((record, self._publisher.enqueue(self.topic, record.id.encode(),
                                                             value, headers)))
            except PublishError:
                # Kafka is not connected: the rest would be refused too (not encoded).
                failed.extend(batch[i:])
                break
        if sent:
            futures = [f for _, f in sent]
            try:
                async with asyncio.timeout(self._timeout):
                    await asyncio.wait(futures)
            except TimeoutError:
                for f in futures:
                    f.cancel()  # the publisher drops what it has not sent yet
            for record, f in sent:
                if f.cancelled() or f.exception() is not None:
                    failed.append(record)
        return failed


QueuedEntry = tuple[str, float, float, str, str]
"""(capture id, captured_at, updated_at, method, path) of one ``queued`` state."""


class QueuedBatcher:
    """The sidecar's ``queued`` states, many per Kafka record (see
    :func:`redrive.status.encode_queued_batch` for why), fire and forget.

    :meth:`add` appends a tuple and returns; a sender task publishes what gathered every
    ``linger`` seconds, at most ``max_batch`` states a record. States Kafka did not take
    are tried again (backing off up to 5 s) until it takes them or ``unsent_ttl`` seconds
    pass, and meanwhile answered by :meth:`unsent` (bounded by ``max_unsent``).
    """

    def __init__(self, publisher: Enqueue, topic: str, source: str, *, timeout: float = 5.0,
                 linger: float = 0.05, max_batch: int = 500, max_pending: int = 100_000,
                 signing: SigningKeys | None = None, max_unsent: int = 100_000,
                 unsent_ttl: float = 3600.0,
                 on_result: Callable[[str, int], None] = lambda _result, _count: None,
                 clock: Callable[[], float] = time.monotonic,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.topic = topic
        self._ready = ready
        self._aside = 0
        """How many of the oldest pending states :meth:`unsent` already answers for."""
        self._publisher = publisher
        self._source = source
        self._timeout = timeout
        self._linger = linger
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._signing = signing
        self._pending: list[QueuedEntry] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsent: dict[str, tuple[float, QueuedEntry]] = {}
        self._max_unsent = max_unsent
        self._unsent_ttl = unsent_ttl
        self._on_result = on_result
        self._clock = clock
        self._closing = False

    def add(self, capture_id: str, captured_at: float, method: str, path: str) -> None:
        """Queue the ``queued`` state of one capture; returns at once."""
        if self._closing:
            return
        if len(self._pending) >= self._max_pending:
            self._on_result("dropped", 1)
            return
        self._pending.append((capture_id, captured_at, time.time(), method, path))
        if len(self._pending) == 1:
            self._wakeup.set()

    def unsent(self, capture_id: str) -> StatusRecord | None:
        hit = self._unsent.get(capture_id)
        if hit is None:
            return None
        if self._clock() - hit[0] > self._unsent_ttl:
            self._unsent.pop(capture_id, None)
            return None
        rid, captured, updated, method, path = hit[1]
        return StatusRecord(id=rid, state="queued", attempts=0, updated_at=updated,
                            captured_at=captured, method=method, path=path,
                            source=self._source)

    async def start(self) -> None:
        if self._task is None:
            self._task = runtime.supervise(
                asyncio.create_task(self._send_loop(), name=f"status-{self.topic}"))

    async def stop(self, timeout: float = 5.0) -> None:
        await _finish(self, timeout)

    async def _send_loop(self) -> None:
        delay = 0.5
        while not (self._closing and not self._pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._closing:
                await asyncio.sleep(self._linger)
            if not self._ready() and not self._closing:
                # Kafka is known to be down (the publisher's probe): keep the states
                # pending, untouched, and remember only the new ones for unsent(). Each
                # state costs this once, not once per retry: with a hundred thousand
                # pending, a pass over all of them every retry stalled the event loop
                # (and the spool path's answers) for a tenth of a second.
                self._set_aside(self._pending[self._aside:])
                self._aside = len(self._pending)
                await asyncio.sleep(0.5)
                self._wakeup.set()
                continue
            entries, self._pending = self._pending, []
            self._aside = 0
            if not entries:
                continue
            failed = await self._send(entries)
            written = len(entries) - len(failed)
            self._on_result("written", written)
            if self._unsent and written:
                refused = {e[0] for e in failed}
                for entry in entries:
                    if entry[0] not in refused:
                        self._unsent.pop(entry[0], None)
            if not failed:
                delay = 0.5
            else:
                self._on_result("failed", len(failed))
                self._set_aside(failed)
                if not self._closing:
                    # A late `queued` is harmless (it never overrides a later state, and
                    # its batch key is unique), so keep trying until Kafka takes it or it
                    # expires: then every replica knows the request, not only this sidecar.
                    retry = [e for e in failed if e[0] in self._unsent][-self._max_pending:]
                    self._pending[:0] = retry
                    self._aside = len(retry)  # all set aside just now
                    await asyncio.sleep(delay)
                    delay = min(5.0, delay * 2)
            if self._pending:
                self._wakeup.set()

    def _set_aside(self, failed: list[QueuedEntry]) -> None:
        """Remember ``failed`` for :meth:`unsent` (first failure time), bounded by count
        and ``unsent_ttl``."""
        now = self._clock()
        for entry in failed:
            if entry[0] not in self._unsent:
                self._unsent[entry[0]] = (now, entry)
        while len(self._unsent) > self._max_unsent:
            self._unsent.pop(next(iter(self._unsent)))
        while self._unsent:
            oldest = next(iter(self._unsent))
            if now - self._unsent[oldest][0] <= self._unsent_ttl:
                break
            del self._unsent[oldest]

    async def _send(self, entries: list[QueuedEntry]) -> list[QueuedEntry]:
        chunks = [entries[i:i + self._max_batch]
                  for i in range(0, len(entries), self._max_batch)]
        sent: list[tuple[list[QueuedEntry], asyncio.Future[Any]]] = []
        failed: list[QueuedEntry] = []
        for i, chunk in enumerate(chunks):
            value = encode_queued_batch(chunk, self._source)
            headers = (STATUS_HEADERS if self._signing is None
                       else with_signature(list(STATUS_HEADERS), value, self._signing))
            key = (BULK_KEY_PREFIX + new_id()).encode()
            try:
                sent.append((chunk, self._publisher.enqueue(self.topic, key, value, headers)))
            except PublishError:
                # Kafka is not connected: the rest would be refused too (not encoded).
                for rest in chunks[i:]:
                    failed.extend(rest)
                break
        if sent:
            futures = [f for _, f in sent]
            try:
                async with asyncio.timeout(self._timeout):
                    await asyncio.wait(futures)
            except TimeoutError:
                for f in futures:
                    f.cancel()
            for chunk, f in sent:
                if f.cancelled() or f.exception() is not None:
                    failed.extend(chunk)
        return failed


class _Sender(Protocol):
    _closing: bool
    _task: asyncio.Task[None] | None
    _wakeup: asyncio.Event


async def _finish(sender: _Sender, timeout: float) -> None:
    """Stop a writer's supervised send loop: it returns once nothing is left to send;
    past ``timeout`` it is cancelled. Safe to call twice."""
    sender._closing = True
    task, sender._task = sender._task, None
    if task is None:
        return
    runtime.release(task)
    sender._wakeup.set()
    await asyncio.wait({task}, timeout=timeout)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
