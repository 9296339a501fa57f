"""The engine: consume, schedule, replay, re-publish or dead-letter, commit.

One aiokafka consumer in the worker's group reads two topics: the capture topic
(``REDRIVE_TOPIC``) and the retry topic (``REDRIVE_RETRY_TOPIC``). Two tasks share the work:

* the **fetch loop** reads batches, turns each Kafka record into an :class:`Item`, puts
  capture records on the ready queue at once and holds retry records in a due-time heap
  until due, pauses partitions when the backlog, the heap or the circuit breaker says so,
  and commits the offsets the :class:`~retry_worker.offsets.OffsetTracker` allows;
* the **dispatcher** takes ready items in order and starts one replay task per item once
  a concurrency slot, the circuit breaker and the token bucket all allow it.

Each replay task ends in exactly one durable outcome (success; re-published to the retry
topic with ``attempt + 1`` and a due time; or dead-lettered, acknowledged by Kafka) and only
then marks its offset finished. A crash at any point before the commit means the record is
read again and replayed again, with the same Idempotency-Key: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from redrive.admin import Readiness
from redrive.chunks import ChunkSet, chunk_info, without_chunk_headers
from redrive.deadletter import (
    DUE_HEADER,
    HISTORY_HEADER,
    UNSAFE,
    AttemptLog,
    decode_due,
    decode_history,
)
from redrive.envelope import Failure, Record, from_dict
from redrive.errors import RecordError
from redrive.kafka import consumer_options
from redrive.logs import bind
from redrive.retrytopics import tier_topic
from redrive.signing import Verdict as SigVerdict
from retry_worker.limits import CircuitBreaker, TokenBucket
from retry_worker.metrics import Metrics
from retry_worker.offsets import OffsetTracker
from retry_worker.outcomes import Outcomes, Sink
from retry_worker.policy import (
    DeadLetter,
    Done,
    Result,
    RetryAt,
    RetryPolicy,
    Verdict,
    after_attempt,
    before_attempt,
)
from retry_worker.replay import UnsafeTarget
from retry_worker.settings import Settings
from retry_worker.status_hooks import NoStatus

log = logging.getLogger(__name__)

_NO_FAILURE = Failure(kind="malformed", reached_upstream=False)

COMMIT_INTERVAL = 0.25
"""Seconds between commits; a SIGKILL repeats at most this much finished work."""
CHUNK_WAIT = 120.0
"""Seconds an incomplete chunk set may wait for its missing chunks (which follow it on
the same partition, normally within the same fetch) before it is dead-lettered."""


@dataclass(slots=True)
class _Pending:
    chunks: ChunkSet
    since: float


class Sender(Protocol):
    """The outbound HTTP seam (:class:`~retry_worker.replay.Replayer`)."""

    def url(self, record: Record) -> object:
        """Raises UnsafeTarget when the record's uri would leave the target."""

    async def send(self, record: Record, attempt: int) -> Result: ...


@dataclass(slots=True)
class Item:
    """One Kafka record on its way to an outcome."""

    tp: TopicPartition
    offset: int
    epoch: int
    record: Record
    history: list[AttemptLog] = field(default_factory=list)
    due: float = 0.0
    more_offsets: list[int] = field(default_factory=list)
    """Offsets of the record's other chunks (redrive.chunks), finished with it."""
    size: int = 0
    """Bytes of the Kafka value(s), counted against the worker's buffer budget."""


class Engine:
    def __init__(self, settings: Settings, publisher: Sink, replayer: Sender,
                 metrics: Metrics, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._settings = settings
        self._topic = settings.kafka.topic
        self._retry_topic = settings.consumer.retry_topic
        self._dlq_topic = settings.kafka.dlq_topic
        self._publisher = publisher
        self._signing = settings.security.signing_keys
        self._outcomes = Outcomes(publisher, metrics, retry_topic=self._retry_topic,
                                  dlq_topic=self._dlq_topic, clock=clock, sleep=sleep,
                                  signing=self._signing,
                                  quarantine_dir=settings.records.quarantine_dir)
        self._replayer = replayer
        self._metrics = metrics
        self._policy = RetryPolicy.from_settings(settings.retry)
        self._clock, self._monotonic, self._rand, self._sleep = clock, monotonic, rand, sleep
        limits = settings.limits
        self._bucket = TokenBucket(rate=limits.replay_rate)
        self._breaker = CircuitBreaker(failures=limits.breaker_failures,
                                       open_seconds=limits.breaker_open_seconds)
        self._slots = asyncio.Semaphore(limits.replay_concurrency)
        self._backlog_limit = max(4 * limits.replay_concurrency, 200)
        self._ready: asyncio.Queue[Item] = asyncio.Queue()
        # Retry records held until due, per partition, in offset order: the head of each
        # partition is released first, and a partition whose head is not due is paused.
        self._held: dict[TopicPartition, deque[Item]] = {}
        self._tiers = {tier: tier_topic(self._retry_topic, tier)
                       for tier in self._policy.tiers()}
        self._retry_topics = frozenset({self._retry_topic, *self._tiers.values()})
        self._revoking: set[TopicPartition] = set()
        self._buffered = 0
        """Bytes of records read and queued or held, not yet started (replays in flight
        are bounded by REDRIVE_REPLAY_CONCURRENCY)."""
        self._tracker = OffsetTracker[TopicPartition]()
        self._epochs: dict[TopicPartition, int] = {}
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._assigned = False
        self._failure: BaseException | None = None
        self._last_commit = 0.0
        self._last_gauges = 0.0
        self._paused: set[TopicPartition] = set()
        self.status = NoStatus()  # request status (set by running.py)
        self._chunks: dict[tuple[TopicPartition, bytes | None, str], _Pending] = {}

    # -- readiness ---------------------------------------------------------------------

    def readiness(self) -> Readiness:
        if self._consumer is None:
            return Readiness(False, "not connected to Kafka yet (consumer)")
        if not self._publisher.connected:
            return Readiness(False, "not connected to Kafka yet (producer)")
        if not self._assigned:
            return Readiness(False, "waiting for the consumer group to assign partitions")
        if not self._breaker.closed:
            return Readiness(True, "ready; circuit breaker open, replays held back")
        return Readiness(True, "ready")

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set, then drain (bounded), commit and leave."""
        consumer = await self._connect(stopping)
        if consumer is None:
            return
        self._consumer = consumer
        dispatcher = asyncio.create_task(self._dispatch_loop(), name="dispatcher")
        try:
            while not stopping.is_set():
                if self._failure is not None:
                    raise self._failure
                if dispatcher.done():
                    dispatcher.result()
                    raise RuntimeError("the dispatcher stopped unexpectedly")
                self._apply_pauses(consumer)
                batch = await consumer.getmany(timeout_ms=self._poll_ms(),
                                               max_records=self._backlog_limit)
                now = self._clock()
                for tp, messages in batch.items():
                    for message in messages:
                        self._accept(tp, message, now)
                self._release_due(now)
                if self._chunks:
                    self._expire_chunks()
                await self._commit_if_due()
                await self._update_gauges()
        finally:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
            await self._drain(self._settings.shutdown.drain_timeout_seconds)
            await self._commit(timeout=5.0)
            with contextlib.suppress(KafkaError, TimeoutError, OSError):
                async with asyncio.timeout(10):
                    await consumer.stop()
            self._consumer = None
            log.info("consumer stopped", extra={"pending_records": self._tracker.pending()})

    async def _connect(self, stopping: asyncio.Event) -> AIOKafkaConsumer | None:
        """Start the consumer, retrying while Kafka is unreachable; None if stopped first."""
        delay = 0.2
        options = consumer_options(
            self._settings.kafka, group_id=self._settings.consumer.group_id,
            client_id=f"redrive-retry-worker-{self._settings.pod.pod}",
            session_timeout=self._settings.consumer.session_timeout_seconds)
        while not stopping.is_set():
            consumer = AIOKafkaConsumer(**options)
            consumer.subscribe(topics=self.topics, listener=_Listener(self))
            try:
                async with asyncio.timeout(30):
                    await consumer.start()
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("kafka unreachable; retrying", extra={
                    "retry_in_seconds": round(delay, 2), "error": str(exc)})
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stopping.wait()
                delay = min(5.0, delay * 2)
                continue
            log.info("kafka consumer connected", extra={
                "group_id": self._settings.consumer.group_id, "topics": self.topics})
            return consumer
        return None

    async def _drain(self, timeout: float) -> None:
        tasks = list(self._tasks)
        if not tasks:
            return
        log.info("draining in-flight replays", extra={"in_flight": len(tasks),
                                                      "timeout_seconds": timeout})
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.warning("drain timed out; unfinished records will be read again",
                        extra={"unfinished": len(pending)})
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # -- fetch side ----------------------------------------------------------------------

    def _backlog(self) -> int:
        """Records read and not finished, waiting ones aside: queued plus running tasks
        (replays, and dead-letter publishes that need no replay)."""
        return self._ready.qsize() + len(self._tasks)

    def _poll_ms(self) -> int:
        if self._breaker.closed and self._backlog() < self._backlog_limit and any(
                not self._held.get(tp) for tp in self._paused):
            return 10  # the backlog just drained: resume quickly
        heads = [held[0].due for held in self._held.values() if held]
        if heads:
            until = min(heads) - self._clock()
            return max(1, min(100, int(until * 1000)))
        return 100

    def _apply_pauses(self, consumer: AIOKafkaConsumer) -> None:
        backlog = self._backlog()
        # While the breaker holds replays back, fetch only when nothing is queued: one
        # record must be at hand to serve as the probe.
        held = not self._breaker.closed and self._ready.qsize() > 0
        pause: set[TopicPartition] = set()
        full = self._held_count() >= self._settings.consumer.retry_buffer_records
        # Past the byte budget every partition waits, except one with an incomplete chunk
        # set: its missing chunks follow on that partition, and pausing it would stall it.
        over = self._buffered >= self._settings.consumer.buffer_bytes
        assembling = {where[0] for where in self._chunks}
        for tp in consumer.assignment():
            if tp.topic in self._retry_topics:
                # A partition whose head is not due waits: nothing behind it is due
                # earlier (one fixed delay per tier), and fetching more would only fill
                # memory with records that also wait.
                waiting = bool(self._held.get(tp))
                if held or full or waiting or backlog >= self._backlog_limit:
                    pause.add(tp)
            elif held or backlog >= self._backlog_limit:
                pause.add(tp)
            if over and tp not in assembling:
                pause.add(tp)
        if pause != self._paused:
            resume = self._paused - pause
            if resume:
                consumer.resume(*(tp for tp in resume if tp in consumer.assignment()))
            if pause:
                consumer.pause(*pause)
            self._paused = pause

    def _accept(self, tp: TopicPartition, message: ConsumerRecord[bytes, bytes],
                now: float) -> None:
        offset = message.offset
        epoch = self._epochs.get(tp, 0)
        self._tracker.start(tp, offset)
        value = message.value or b""
        raw_headers = list(message.headers or ())
        more: list[int] = []
        try:
            info = chunk_info(raw_headers)
        except ValueError as exc:
            self._spawn_malformed(tp, message.key, value, [str(exc)], epoch, offset)
            return
        if info is not None:
            # A chunk: hold it until its set is complete; the set's offsets stay unfinished
            # (uncommitted) until the whole record's outcome is durable.
            where = (tp, message.key, info.digest)
            pending = self._chunks.get(where)
            if pending is None:
                pending = self._chunks[where] = _Pending(
                    ChunkSet(info.count, info.digest), self._monotonic())
            pending.chunks.add(info.index, value, offset)
            if not pending.chunks.complete:
                return
            del self._chunks[where]
            offset, *more = pending.chunks.offsets
            try:
                value = pending.chunks.join()
            except ValueError as exc:
                self._spawn_malformed(tp, message.key, b"".join(pending.chunks.parts.values()),
                                      [str(exc)], epoch, offset, more)
                return
            raw_headers = without_chunk_headers(raw_headers)
        # Signature first: nothing of an unverified record is trusted, not even its shape.
        verdict = (SigVerdict.VALID if self._signing is None
                   else self._signing.verify_headers(value, raw_headers))
        try:
            obj = json.loads(value)
            record = from_dict(obj)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self._spawn_malformed(tp, message.key, value, [f"not JSON: {exc}"], epoch, offset,
                                  more)
            return
        except RecordError as exc:
            self._spawn_malformed(tp, message.key, value, exc.problems, epoch, offset, more)
            return
        headers = dict(raw_headers)
        item = Item(tp=tp, offset=offset, epoch=epoch, record=record, more_offsets=more,
                    size=len(value))
        if verdict is not SigVerdict.VALID:
            detail = ("no redrive-signature header" if verdict is SigVerdict.UNSIGNED
                      else "redrive-signature does not match (wrong key, unknown kid or "
                           "altered record)")
            self._spawn(item, self._reject(item, verdict.value, detail))
            return
        if tp.topic in self._retry_topics:
            item.due = decode_due(headers.get(DUE_HEADER)) or 0.0
            item.history = decode_history(headers.get(HISTORY_HEADER))
        has_key = isinstance(obj.get("idempotency_key"), str) and bool(obj["idempotency_key"])
        refusal = before_attempt(record, has_idempotency_key=has_key, now=now,
                                 policy=self._policy)
        if refusal is None:
            try:
                self._replayer.url(record)
            except UnsafeTarget as exc:
                refusal = DeadLetter(UNSAFE, str(exc))
        if refusal is not None:
            self._spawn(item, self._finish_without_replay(item, refusal))
        elif item.due > now or self._held.get(tp):
            # Behind a head that is not due, a record waits its turn even if due itself
            # (never before its own due time; see RetryPolicy.tier_for for how long).
            self._held.setdefault(tp, deque()).append(item)
            self._buffered += item.size
        else:
            self._ready.put_nowait(item)
            self._buffered += item.size

    def _release_due(self, now: float) -> None:
        for tp, held in list(self._held.items()):
            while held and held[0].due <= now:
                item = held.popleft()
                if self._dispatchable(item):
                    self._ready.put_nowait(item)
                else:
                    self._buffered -= item.size
            if not held:
                del self._held[tp]

    def _held_count(self) -> int:
        return sum(len(held) for held in self._held.values())

    @property
    def topics(self) -> list[str]:
        """Every topic the worker reads: captures, the retry tiers, and the single retry
        topic of earlier versions (still drained, never written)."""
        return [self._topic, *self._tiers.values(), self._retry_topic]

    def _current(self, item: Item) -> bool:
        """False once the item's partition was revoked (another worker reads it now)."""
        return self._epochs.get(item.tp, 0) == item.epoch

    def _dispatchable(self, item: Item) -> bool:
        """Current, and its partition is not being handed over right now."""
        return self._current(item) and item.tp not in self._revoking

    async def _commit_if_due(self) -> None:
        if self._monotonic() - self._last_commit >= COMMIT_INTERVAL:
            await self._commit(timeout=10.0)

    async def _commit(self, timeout: float, only: Iterable[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        self._last_commit = self._monotonic()
        assigned = consumer.assignment()
        wanted = set(only) if only is not None else assigned
        offsets = {tp: o for tp, o in self._tracker.committable().items()
                   if tp in assigned and tp in wanted}
        if not offsets:
            return
        try:
            async with asyncio.timeout(timeout):
                await consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:
            log.warning("offset commit failed; will retry", extra={"error": repr(exc)})
            return
        self._tracker.committed(offsets)

    async def _update_gauges(self) -> None:
        now = self._monotonic()
        if now - self._last_gauges < 1.0 or self._consumer is None:
            return
        self._last_gauges = now
        self._metrics.waiting.set(self._held_count())
        self._metrics.buffered_bytes.set(self._buffered)
        self._metrics.breaker_open.set(0 if self._breaker.closed else 1)
        lag: dict[str, int] = {self._topic: 0, self._retry_topic: 0}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            with contextlib.suppress(KafkaError):
                position = await self._consumer.position(tp)
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position) \
                    + self._tracker.pending(tp)
        for topic, value in lag.items():
            self._metrics.lag.labels(topic).set(value)

    # -- rebalancing -------------------------------------------------------------------

    async def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Finish (bounded) what is in flight for ``revoked``, commit it, let go of the rest."""
        revoked_set = set(revoked)
        # Order matters: stop starting replays of these partitions, let the ones in flight
        # finish and record their outcome, commit, and only then make everything left of
        # them stale. Bumping the epoch first would drop the outcomes of replays finishing
        # during the wait, and the next owner would replay them again.
        self._revoking |= revoked_set
        try:
            tasks = [t for t, tp in self._tasks.items() if tp in revoked_set]
            if tasks:
                await asyncio.wait(tasks, timeout=min(10.0, self._settings.shutdown
                                                      .drain_timeout_seconds) or 0.1)
            await self._commit(timeout=5.0, only=revoked_set)
        finally:
            self._revoking -= revoked_set
            for tp in revoked_set:
                self._epochs[tp] = self._epochs.get(tp, 0) + 1
                for item in self._held.pop(tp, ()):
                    self._buffered -= item.size
            self._chunks = {k: v for k, v in self._chunks.items() if k[0] not in revoked_set}
            self._tracker.forget(revoked_set)
            self._paused -= revoked_set
        log.info("partitions revoked", extra={"partitions": _names(revoked_set)})

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._assigned = True
        log.info("partitions assigned", extra={"partitions": _names(assigned)})

    # -- dispatch side -------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            item = await self._ready.get()
            self._buffered -= item.size
            if not self._dispatchable(item):
                continue
            await self._slots.acquire()
            try:
                await self._wait_for_permission()
            except BaseException:
                self._slots.release()
                raise
            if not self._dispatchable(item):
                self._breaker.release_probe()
                self._slots.release()
                continue
            self._spawn(item, self._replay(item), slot=True)

    async def _wait_for_permission(self) -> None:
        while (wait := self._breaker.permit(self._monotonic())) > 0:
            self._metrics.breaker_open.set(1)
            await self._sleep(min(wait, 0.5))
        while (wait := self._bucket.take(self._monotonic())) > 0:
            await self._sleep(wait)

    def _spawn(self, item: Item, work: Awaitable[None], *, slot: bool = False) -> None:
        async def guarded() -> None:
            try:
                await work
                if self._current(item):
                    self._tracker.finish(item.tp, item.offset)
                    for offset in item.more_offsets:
                        self._tracker.finish(item.tp, offset)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug, not an outcome: stop the worker (it restarts and reads the record
                # again) rather than skip the record or stall its partition's commits.
                log.exception("replay task failed", extra={"capture_id": item.record.id})
                self._failure = exc
            finally:
                if slot:
                    self._slots.release()

        task = asyncio.create_task(guarded(), name=f"replay-{item.record.id}")
        self._tasks[task] = item.tp
        task.add_done_callback(self._tasks.pop)

    def _spawn_malformed(self, tp: TopicPartition, key: bytes | None, value: bytes,
                         problems: list[str], epoch: int, offset: int,
                         more: list[int] | None = None) -> None:
        work = self._outcomes.malformed(value, problems, topic=tp.topic,
                                        partition=tp.partition, offset=offset, key=key)
        placeholder = Record(id=f"malformed@{tp.topic}/{tp.partition}/{offset}",
                             timestamp=0.0, method="-", uri="/", headers={}, body=b"",
                             error=_NO_FAILURE, idempotency_key="")
        self._spawn(Item(tp=tp, offset=offset, epoch=epoch, record=placeholder,
                         more_offsets=list(more or ())), work)

    def _expire_chunks(self) -> None:
        """Dead-letter (malformed) chunk sets that stayed incomplete for CHUNK_WAIT
        seconds: their missing chunks are not coming (a producer died mid-set), and
        waiting longer would pin the partition's commit point and memory."""
        now = self._monotonic()
        for where, pending in list(self._chunks.items()):
            if now - pending.since < CHUNK_WAIT:
                continue
            del self._chunks[where]
            tp, key, _ = where
            chunks = pending.chunks
            offset, *more = chunks.offsets
            problem = (f"incomplete chunk set: {len(chunks.parts)} of {chunks.count} chunks "
                       f"after {CHUNK_WAIT:g}s")
            self._spawn_malformed(tp, key, b"".join(chunks.parts[i] for i in sorted(
                chunks.parts)), [problem], self._epochs.get(tp, 0), offset, more)

    # -- one record ------------------------------------------------------------------------

    async def _finish_without_replay(self, item: Item, refusal: DeadLetter) -> None:
        with bind(capture_id=item.record.id, topic=item.tp.topic, partition=item.tp.partition,
                  offset=item.offset):
            await self._outcomes.dead_letter(item.record, refusal, item.history)
            self.status.refused(item.record, refusal, item.history)

    async def _reject(self, item: Item, reason: str, detail: str) -> None:
        with bind(capture_id=item.record.id, topic=item.tp.topic, partition=item.tp.partition,
                  offset=item.offset):
            await self._outcomes.rejected(item.record, reason, detail)
            self.status.refused(item.record, DeadLetter(reason, detail), ())

    async def _replay(self, item: Item) -> None:
        record = item.record
        attempt = record.attempt + 1
        with bind(capture_id=record.id, attempt=attempt, topic=item.tp.topic,
                  partition=item.tp.partition, offset=item.offset):
            # Time passes in the queue (a long breaker pause): check the age again.
            refusal = before_attempt(record, has_idempotency_key=True, now=self._clock(),
                                     policy=self._policy)
            if refusal is not None:
                self._breaker.release_probe()
                await self._outcomes.dead_letter(record, refusal, item.history)
                self.status.refused(record, refusal, item.history)
                return
            self._metrics.in_flight.inc()
            try:
                result = await self._replayer.send(record, attempt)
            except BaseException:
                self._breaker.release_probe()
                raise
            finally:
                self._metrics.in_flight.dec()
            verdict = result.verdict
            self._metrics.replays.labels(verdict.value).inc()
            self._metrics.replay_duration.observe(result.duration_seconds)
            self._note_for_breaker(verdict)
            history = [*item.history, result.log()]
            decision = after_attempt(record, attempt, result, now=self._clock(),
                                     rand=self._rand(), policy=self._policy)
            replayed = record.with_attempt(attempt)
            # One summary line per attempt (capture_id and attempt are bound above).
            summary: dict[str, object] = {
                "kind": record.error.kind, "status": result.status, "error": result.error,
                "duration_seconds": round(result.duration_seconds, 6)}
            if isinstance(decision, Done):
                log.info("replay attempt", extra={"outcome": "success", **summary})
            elif isinstance(decision, RetryAt):
                tier = self._policy.tier_for(decision.due - self._clock())
                await self._outcomes.retry_later(replayed, decision.due, history,
                                                 topic=self._tiers[tier])
                log.info("replay attempt", extra={
                    "outcome": "retry_scheduled",
                    "retry_in_seconds": round(decision.due - self._clock(), 3), **summary})
            else:
                await self._outcomes.dead_letter(replayed, decision, history, quiet=True)
                log.warning("replay attempt", extra={
                    "outcome": "dead_lettered", "reason": decision.reason,
                    "detail": decision.detail, **summary})
            self.status.attempted(record, attempt, result, decision)

    def _note_for_breaker(self, verdict: Verdict) -> None:
        if verdict is Verdict.RETRIABLE:
            if self._breaker.failure(self._monotonic()):
                self._metrics.breaker_open.set(1)
                log.warning("circuit breaker opened; consumption paused", extra={
                    "consecutive_failures": self._breaker.consecutive,
                    "open_seconds": self._breaker.open_seconds})
        elif self._breaker.success():
            self._metrics.breaker_open.set(0)
            log.info("circuit breaker closed; consumption resumed")


def _names(tps: Iterable[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}/{tp.partition}" for tp in tps)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        await self._engine.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._engine.on_assigned(assigned)

