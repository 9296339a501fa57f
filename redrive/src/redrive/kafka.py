"""The Kafka boundary: one producer, connected in the background, publishing with a deadline.

aiokafka's exceptions stop here: callers see :class:`~redrive.errors.PublishError` or a
:class:`Delivery`. The producer uses ``acks="all"`` and *not* aiokafka's idempotent
mode, which needs InitProducerId v1+ (the embedded Tansu broker speaks v0 only);
duplicates are resolved downstream by capture id and Idempotency-Key instead.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import ssl
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.errors import KafkaError

from redrive import chunks, runtime
from redrive.chunks import DEFAULT_MAX_RECORD_BYTES, split
from redrive.errors import PublishError
from redrive.settings import KafkaSettings, kafka_ssl_context

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]


PERMANENT_REASONS = ("too_large", "invalid", "unauthorized", "rejected")
"""Why Kafka refused a record for good: the ``reason`` label of the quarantine metrics."""

_PERMANENT: tuple[tuple[type[BaseException], str], ...] = (
    (kafka_errors.MessageSizeTooLargeError, "too_large"),
    (kafka_errors.RecordTooLargeError, "too_large"),
    (kafka_errors.RecordListTooLargeError, "too_large"),
    (kafka_errors.CorruptRecordException, "invalid"),
    (kafka_errors.InvalidTimestampError, "invalid"),
    (kafka_errors.UnsupportedForMessageFormatError, "invalid"),
    (kafka_errors.TopicAuthorizationFailedError, "unauthorized"),
    (kafka_errors.ClusterAuthorizationFailedError, "unauthorized"),
    (kafka_errors.TransactionalIdAuthorizationFailed, "unauthorized"),
    (kafka_errors.InvalidTopicError, "rejected"),
    (kafka_errors.PolicyViolationError, "rejected"),
)


def publish_error(exc: BaseException) -> PublishError:
    """The one place that decides whether Kafka's refusal of a record can change.

    Permanent (``retriable=False``): the record itself or our rights are at fault (too
    large, corrupt or invalid, not authorised, a topic the broker refuses); sending it
    again gives the same answer, so callers move it aside (quarantine) instead of retrying
    forever. Everything else (connection lost, timeouts, leader moves, and errors aiokafka
    cannot name, such as ``UnknownError``) is retriable: back off and try again.
    """
    if isinstance(exc, PublishError):
        return exc
    for kind, reason in _PERMANENT:
        if isinstance(exc, kind):
            return PublishError(f"kafka refused the record for good: {exc!r}",
                                retriable=False, reason=reason)
    return PublishError(f"kafka did not take the record: {exc!r}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where Kafka stored an acknowledged record."""

    topic: str
    partition: int
    offset: int


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of ``kafka``, built once per settings and shared by every client;
    None when the protocol is not TLS."""
    if not kafka.uses_ssl:
        return None
    return _cached_ssl_context(kafka.ssl_ca_file, kafka.ssl_cert_file, kafka.ssl_key_file,
                               kafka.ssl_check_hostname)


@functools.lru_cache(maxsize=8)
def _cached_ssl_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                        check_hostname: bool) -> ssl.SSLContext:
    return kafka_ssl_context(ca_file, cert_file, key_file, check_hostname)


def security_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka's TLS and SASL arguments, common to producers and consumers."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.uses_sasl:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password
    return options


def producer_options(kafka: KafkaSettings, *, client_id: str,
                     max_record_bytes: int) -> dict[str, Any]:
    """aiokafka producer arguments, TLS and SASL included. Seconds become aiokafka's
    ``*_ms`` only here; no other module builds aiokafka arguments."""
    return {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": False,
        "linger_ms": 0,
        # zstd (level 3, via cramjam): ~300 MB/s on one core and a 10x smaller JSON
        # batch; base64 bodies shrink by a quarter. lz4 (level 9 in aiokafka) was slower
        # and compressed less. Size limits are checked before compression, so it only
        # ever leaves more room.
        "compression_type": "zstd",
        # Records are split to fit max_record_bytes (redrive.chunks); a request may hold
        # a batch for each of several partitions.
        "max_request_size": max(1_048_576, 2 * max_record_bytes),
        "request_timeout_ms": 30_000,
        "retry_backoff_ms": 100,
        "metadata_max_age_ms": 60_000,
        "partitioner": key_partitioner,
        # Publisher builds its own batches from what one event-loop turn published; a
        # batch never passes max_record_bytes, which is what the broker limits (a single
        # record larger than the batch size gets a batch of its own, and fits too).
        "max_batch_size": min(512 * 1024, max_record_bytes),
        **security_options(kafka),
    }


def key_partitioner(key: bytes | None, all_partitions: list[int],
                    available: list[int]) -> int:
    """The partition of a record: CRC-32 of its key over every partition.

    Redrive's keys are capture ids, unique per request, so no two records need to share a
    partition, and Java's murmur2 (aiokafka's default, in pure Python on the capture
    path) buys nothing. A record without a key goes to any available one.
    """
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[zlib.crc32(key) % len(all_partitions)]


def _outcome(group: list[asyncio.Future[Delivery]], timeout: float) -> Delivery | PublishError:
    """One record's result from its chunks' futures (one future when it was not split):
    the first chunk's Delivery when all were acknowledged, else the first error."""
    error: PublishError | None = None
    for future in group:
        if not future.done():
            future.cancel()
            error = error or PublishError(f"no acknowledgement from Kafka within {timeout:g}s")
        elif (exc := future.exception()) is not None:
            error = error or publish_error(exc)
    return error if error is not None else group[0].result()


@dataclass(eq=False, slots=True)
class _Outgoing:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    future: asyncio.Future[Delivery]
    alone: bool = False
    """In a batch of its own: isolates a record when Kafka refused a whole batch."""
    keyed: bool = False
    """Its key picks the partition even on a spread topic: the chunks of one record."""


_COMPACT_MIN = 1024


class _Lane:
    """The records waiting to be sent to one topic, and the task sending them."""

    def __init__(self) -> None:
        self.records: list[_Outgoing] = []
        self.compact_at = _COMPACT_MIN
        self.wakeup = asyncio.Event()
        self.closing = False
        self.task: asyncio.Task[None] | None = None
        self.spread = False
        """Fill one partition's batch at a time (see :class:`Publisher`)."""
        self.next_partition = 0


def _settle(records: list[_Outgoing], topic: str, partition: int,
            acked: asyncio.Future[Any]) -> None:
    """Resolve each record of one batch from the batch's acknowledgement."""
    if acked.cancelled():
        error: Exception | None = PublishError("the batch was cancelled")
    else:
        exc = acked.exception()
        error = None if exc is None else publish_error(exc)
    if error is not None:
        for record in records:
            if not record.future.done():
                record.future.set_exception(error)
        return
    base = acked.result().offset
    for i, record in enumerate(records):
        if not record.future.done():
            record.future.set_result(Delivery(topic=topic, partition=partition,
                                              offset=base + i))


class _Deadlines:
    """Gives up on records whose acknowledgement is late: one sweep every ``tick`` seconds
    for every waiting record, instead of a timer armed and cancelled per publish. A late
    record's future fails with :class:`PublishError` (at most ``tick`` after its deadline),
    so the sender drops it if it was not handed to Kafka yet, as a cancelled one."""

    def __init__(self, tick: float = 0.05) -> None:
        self._tick = tick
        # One queue per timeout value: each is in deadline order, as records are appended.
        self._queues: dict[float, collections.deque[tuple[float, asyncio.Future[Delivery]]]] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, future: asyncio.Future[Delivery], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = collections.deque()
        queue.append((loop.time() + timeout, future))
        if self._task is None:
            self._task = loop.create_task(self._sweep(), name="kafka-publish-deadlines")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queues:
                await asyncio.sleep(self._tick)
                now = loop.time()
                for timeout, queue in list(self._queues.items()):
                    while queue and (queue[0][1].done() or queue[0][0] <= now):
                        _, future = queue.popleft()
                        if not future.done():
                            future.set_exception(PublishError(
                                f"no acknowledgement from Kafka within {timeout:g}s"))
                    if not queue:
                        del self._queues[timeout]
        finally:
            self._task = None

    def give_up_all(self, error: PublishError) -> int:
        """Fail every record still waiting (Kafka went away); how many there were."""
        count = 0
        for queue in self._queues.values():
            for _, future in queue:
                if not future.done():
                    future.set_exception(error)
                    count += 1
        self._queues.clear()
        return count

    def close(self) -> None:
        """Stop sweeping; a record still waiting is given up on now."""
        if self._task is not None:
            self._task.cancel()
        self.give_up_all(PublishError("the publisher stopped"))


class Publisher:
    """Owns one AIOKafkaProducer for the life of the process.

    :meth:`start` returns at once; a background task connects and keeps retrying while
    Kafka is unreachable, so a component can serve traffic before Kafka is up. Once
    connected, a probe asks the cluster for its metadata every ``probe_interval`` seconds
    (at once after a failed or late publish) and :attr:`connected` follows its answer, so
    an outage after start is seen within ``probe_interval + probe_timeout`` seconds.
    :meth:`publish` waits at most ``timeout`` seconds for the acknowledgement.

    Partitions: a record's key (CRC-32) picks its partition, except on ``spread_topics``:
    topics whose keys are unique (capture ids) and never compacted, where any partition
    will do. There the sender fills one partition's batch with whatever is waiting and
    takes the next partition for the next batch (Kafka's sticky partitioner, KIP-480), so
    a send cycle of a few dozen captures is one batch, not one small batch per partition:
    each batch costs a compression context, a CRC and aiokafka's bookkeeping. The chunks
    of one large record still share the partition of their key, in order.
    """

    def __init__(self, kafka: KafkaSettings, *, client_id: str,
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
                 spread_topics: Collection[str] = (),
                 reconnect_initial: float = 0.2, reconnect_max: float = 5.0,
                 probe_interval: float = 2.0, probe_timeout: float = 2.0,
                 producer_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer) -> None:
        self._options = producer_options(kafka, client_id=client_id,
                                         max_record_bytes=max_record_bytes)
        self._factory = producer_factory
        self._max_record = max_record_bytes
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._reachable = False
        self._probe_now = asyncio.Event()
        self._probe = (probe_interval, probe_timeout)
        self._closed = False
        self._reconnect = (reconnect_initial, reconnect_max)
        self.last_error: str = "not connected yet"
        self._lanes: dict[str, _Lane] = {}
        self._spread = frozenset(spread_topics)
        self._deadlines = _Deadlines()

    @property
    def connected(self) -> bool:
        """True while the producer is started and Kafka answered the latest probe."""
        return self._reachable and self._connected.is_set()

    async def start(self) -> None:
        """Begin connecting in the background. Safe to call twice."""
        if self._connector is None and not self._closed:
            # Supervised: a connect loop that dies (say, a compression library missing)
            # must stop the process, not leave it serving without Kafka.
            self._connector = runtime.supervise(
                asyncio.create_task(self._connect_loop(), name="kafka-connect"))

    async def wait_connected(self, timeout: float) -> bool:
        """True once connected; False if ``timeout`` seconds pass first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        return self.connected

    def suspect(self) -> None:
        """Something suggests Kafka is gone (a late or failed publish): probe now."""
        self._probe_now.set()

    async def _connect_loop(self) -> None:
        delay, cap = self._reconnect
        while not self._closed:
            producer = self._factory(**self._options)
            try:
                await producer.start()
            except (KafkaError, OSError) as exc:
                self.last_error = f"cannot reach Kafka: {exc}"
                log.warning("kafka unreachable; retrying", extra={
                    "retry_in_seconds": round(delay, 2), "error": str(exc)})
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
                continue
            self._producer = producer
            self._reachable = True
            self._connected.set()
            self.last_error = ""
            log.info("kafka producer connected",
                     extra={"bootstrap_servers": self._options["bootstrap_servers"]})
            await self._watch(producer)
            return

    async def _watch(self, producer: AIOKafkaProducer) -> None:
        """Probe Kafka for as long as the producer lives; :attr:`connected` follows."""
        interval, timeout = self._probe
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._probe_now.wait()
            self._probe_now.clear()
            try:
                async with asyncio.timeout(timeout):
                    # A metadata request to any known broker: the cheapest round trip that
                    # proves the cluster answers (aiokafka's public client API).
                    await producer.client.fetch_all_metadata()
            except (KafkaError, OSError, TimeoutError) as exc:
                if self._reachable:
                    # Records still waiting for their acknowledgement are given up on now
                    # (callers spool them) rather than left to aiokafka's own retries: a
                    # broker that comes back empty may acknowledge those into a topic it
                    # no longer has (Tansu does; so would a Kafka that lost its disk).
                    # Some may still arrive: a duplicate, never a loss.
                    waiting = self._deadlines.give_up_all(PublishError(
                        "kafka stopped answering before it acknowledged the record"))
                    log.warning("kafka unreachable", extra={
                        "error": repr(exc), "records_given_up": waiting})
                self._reachable = False
                self.last_error = f"kafka did not answer a metadata probe: {exc!r}"
                continue
            if not self._reachable:
                # Refresh the metadata of the topics we produce to before anything is
                # sent: a broker that came back empty (Tansu, or a Kafka that lost its
                # disk) recreates them from a metadata request, while a produce to a
                # topic it no longer has, on stale metadata, was acknowledged but never
                # readable (Tansu).
                with contextlib.suppress(KafkaError, OSError, TimeoutError):
                    async with asyncio.timeout(timeout):
                        await producer.client.force_metadata_update()
                log.info("kafka reachable again")
            self._reachable = True
            self.last_error = ""

    def _lane(self, producer: AIOKafkaProducer, topic: str) -> _Lane:
        lane = self._lanes.get(topic)
        if lane is None:
            lane = self._lanes[topic] = _Lane()
            lane.spread = topic in self._spread
            lane.task = runtime.supervise(asyncio.create_task(
                self._send_loop(producer, topic, lane), name=f"kafka-send-{topic}"))
        return lane

    async def publish_many(self, topic: str, records: Sequence[tuple[bytes, bytes, Headers]],
                           timeout: float, *, alone: bool = False
                           ) -> list[Delivery | PublishError]:
        """Send ``records`` (key, value, headers) in order and wait at most ``timeout``
        seconds for all of them; return each one's :class:`Delivery` or
        :class:`PublishError` (``retriable`` says whether trying again can help).

        They travel in as few batches as fit (per partition, in order), with every batch
        in flight at once: the spool drain's path, instead of one await per record.
        ``alone`` sends each record in a batch of its own: Kafka refuses a whole batch
        that is too large, so a permanent refusal is only the record's own once it was
        refused alone.
        """
        producer = self._producer
        if producer is None:
            error = PublishError(self.last_error or "kafka producer not started")
            return [error] * len(records)
        loop = asyncio.get_running_loop()
        lane = self._lane(producer, topic)
        # Each record becomes one or more Kafka records (chunks, when it is too large).
        groups: list[list[asyncio.Future[Delivery]] | PublishError] = []
        for key, value, headers in records:
            try:
                parts = split(key, value, headers, self._max_record)
            except ValueError as exc:
                groups.append(PublishError(str(exc), retriable=False, reason="too_large"))
                continue
            futures_of: list[asyncio.Future[Delivery]] = [loop.create_future() for _ in parts]
            keyed = len(parts) > 1
            lane.records.extend(_Outgoing(k, v, h, f, alone, keyed)
                                for (k, v, h), f in zip(parts, futures_of, strict=True))
            groups.append(futures_of)
        lane.wakeup.set()
        futures = [f for g in groups if not isinstance(g, PublishError) for f in g]
        if futures:
            await asyncio.wait(futures, timeout=timeout)
        out: list[Delivery | PublishError] = []
        for entry in groups:
            out.append(entry if isinstance(entry, PublishError) else _outcome(entry, timeout))
        if any(isinstance(r, PublishError) and r.retriable for r in out):
            self.suspect()
        return out

    async def publish(self, topic: str, key: bytes, value: bytes, headers: Headers,
                      timeout: float) -> Delivery:
        """Send one record and wait for ``acks=all``, at most ``timeout`` seconds (checked
        by one sweep for all waiting records, so up to 50 ms more).

        Raises :class:`PublishError` when Kafka is not connected, refuses the record, or
        does not acknowledge in time. After a timeout the record may still be delivered
        later (a duplicate, never a loss): callers treat it as not safe.

        Records published in the same event-loop turn travel together: one batch per
        partition, built here, instead of aiokafka's per-record ``send`` (about a fifth of
        the CPU per record). Order is kept within a partition.
        """
        producer = self._producer
        if producer is None:
            raise PublishError(self.last_error or "kafka producer not started")
        if chunks.encoded_size(key, value, headers) > self._max_record:
            (result,) = await self.publish_many(topic, [(key, value, headers)], timeout)
            if isinstance(result, PublishError):
                raise result
            return result
        future = self._queue(producer, topic, key, value, headers)
        self._deadlines.watch(future, timeout)
        try:
            return await future
        except PublishError as exc:
            if exc.retriable:
                self.suspect()
            raise

    def enqueue(self, topic: str, key: bytes, value: bytes,
                headers: Headers) -> asyncio.Future[Delivery]:
        """Queue one small record and return at once (fire-and-forget status records).

        The future resolves with the :class:`Delivery` or a :class:`PublishError`; it has no
        deadline of its own: cancel it to give up (a record not yet sent is then dropped).
        Raises :class:`PublishError` at once when Kafka is not connected, or when the record
        would need chunking (only :meth:`publish` splits records).
        """
        producer = self._producer
        if producer is None:
            raise PublishError(self.last_error or "kafka producer not started")
        if chunks.encoded_size(key, value, headers) > self._max_record:
            raise PublishError("record larger than REDRIVE_MAX_RECORD_BYTES",
                               retriable=False, reason="too_large")
        return self._queue(producer, topic, key, value, headers)

    def _queue(self, producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes,
               headers: Headers) -> asyncio.Future[Delivery]:
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        lane = self._lane(producer, topic)
        lane.records.append(_Outgoing(key, value, list(headers), future))
        if len(lane.records) >= lane.compact_at:
            # Kafka is stalled and the sender is stuck: drop what callers gave up on (they
            # spooled it or reported it lost), so a long stall does not hold every record.
            lane.records = [r for r in lane.records if not r.future.done()]
            lane.compact_at = max(_COMPACT_MIN, 2 * len(lane.records))
        lane.wakeup.set()
        return future

    async def _send_loop(self, producer: AIOKafkaProducer, topic: str, lane: _Lane) -> None:
        """One sender per topic: whatever was published while the previous batch was being
        handed over goes out as the next batch (per partition), so batches grow with load
        and aiokafka's one-batch-per-partition queue never has two waiters."""
        while True:
            await lane.wakeup.wait()
            lane.wakeup.clear()
            records, lane.records = lane.records, []
            lane.compact_at = _COMPACT_MIN
            # A caller that stopped waiting has spooled its record (or reported it lost):
            # sending it now would only make a duplicate.
            records = [r for r in records if not r.future.done()]
            if records:
                last = await self._send(producer, topic, lane, records)
                if lane.spread and last is not None:
                    # The next batch goes to the next partition, so it would not wait
                    # behind this one in aiokafka's queue: wait for the acknowledgement
                    # here instead, and whatever is published meanwhile travels together.
                    await asyncio.wait([last])
            elif lane.closing:
                return

    async def _send(self, producer: AIOKafkaProducer, topic: str, lane: _Lane,
                    records: list[_Outgoing]) -> asyncio.Future[Any] | None:
        """Hand ``records`` to aiokafka as batches; each record's future is resolved by its
        batch's acknowledgement (or failure). Returns the last batch's acknowledgement."""
        submitted: set[int] = set()
        acked: asyncio.Future[Any] | None = None
        try:
            partitions = sorted(await producer.partitions_for(topic))
            by_partition: dict[int | None, list[_Outgoing]] = {}
            for record in records:
                # None: the next partition in turn (a spread topic's free records).
                part = None if lane.spread and not record.keyed else \
                    key_partitioner(record.key, partitions, partitions)
                by_partition.setdefault(part, []).append(record)
            for fixed, queued in by_partition.items():
                start = 0
                while start < len(queued):
                    if fixed is None:
                        part = partitions[lane.next_partition % len(partitions)]
                        lane.next_partition += 1
                    else:
                        part = fixed
                    batch = producer.create_batch()
                    end = start
                    # The first record always fits (a batch grows to hold one large record).
                    while end < len(queued) and (end == start or not (
                            queued[end].alone or queued[end - 1].alone)) and batch.append(
                            key=queued[end].key, value=queued[end].value, timestamp=None,
                            headers=queued[end].headers) is not None:
                        end += 1
                    batch.close()
                    members = queued[start:end]
                    acked = await producer.send_batch(batch, topic, partition=part)
                    submitted.update(id(r) for r in members)
                    acked.add_done_callback(functools.partial(_settle, members, topic, part))
                    start = end
        except Exception as exc:
            error = publish_error(exc)
            for record in records:
                if id(record) not in submitted and not record.future.done():
                    record.future.set_exception(error)
        return acked

    async def stop(self, timeout: float = 10.0) -> None:
        """Flush what is buffered (bounded by ``timeout``) and close. Safe to call twice."""
        self._closed = True
        self._reachable = False
        if self._connector is not None:
            runtime.release(self._connector)
            self._connector.cancel()
            # A loop that died was logged and reported by the supervisor already.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connector
            self._connector = None
        producer, self._producer = self._producer, None
        self._connected.clear()
        if producer is None:
            return
        lanes, self._lanes = list(self._lanes.values()), {}
        try:
            async with asyncio.timeout(timeout):
                # Hand over what is still queued, then wait for every acknowledgement.
                for lane in lanes:
                    if lane.task is not None:
                        runtime.release(lane.task)
                    lane.closing = True
                    lane.wakeup.set()
                await asyncio.gather(*(lane.task for lane in lanes if lane.task))
                await producer.flush()
        except (TimeoutError, KafkaError) as exc:
            log.warning("kafka flush incomplete at shutdown", extra={"error": repr(exc)})
        for lane in lanes:
            if lane.task is not None:
                lane.task.cancel()
        with contextlib.suppress(TimeoutError, KafkaError):
            async with asyncio.timeout(timeout):
                await producer.stop()
        self._deadlines.close()


def consumer_options(kafka: KafkaSettings, *, client_id: str, group_id: str | None,
                     request_timeout: float = 30.0,
                     session_timeout: float = 10.0) -> dict[str, Any]:
    """aiokafka consumer arguments for manual commits. Seconds become ``*_ms`` only here.

    Offsets are committed by the caller once each record's outcome is durable, never
    automatically; a group that has no committed offset starts from the earliest record,
    because a captured request that nobody read yet must not be skipped.
    """
    return {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": int(request_timeout * 1000),
        "retry_backoff_ms": 100,
        "metadata_max_age_ms": 60_000,
        # A dead member's partitions move after this; joining also waits about half of
        # it on some brokers (Tansu), so tests use a short one.
        "session_timeout_ms": int(session_timeout * 1000),
        "heartbeat_interval_ms": max(100, int(session_timeout * 1000 / 3)),
        # A record holds a request body (up to the sidecar's limit, base64 grows it).
        "max_partition_fetch_bytes": 4 * 1_048_576,
        **security_options(kafka),
    }
