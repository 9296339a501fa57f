"""Kafka access for the operator CLI: read a whole topic, follow it, publish; all bounded.

Every wait has a deadline, and aiokafka's exceptions become :class:`CliError` with a
sentence an operator can act on ("cannot reach Kafka at ...").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from redrive.chunks import ChunkSet, chunk_info, without_chunk_headers
from redrive.errors import PublishError, RedriveError
from redrive.kafka import Headers, Publisher, consumer_options
from redrive.settings import KafkaSettings


class CliError(RedriveError):
    """A failure the CLI reports in one line and exits 1 for."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def _where(kafka: KafkaSettings) -> str:
    return ",".join(kafka.bootstrap_servers)


@contextlib.asynccontextmanager
async def _consumer(kafka: KafkaSettings, timeout: float) -> AsyncIterator[AIOKafkaConsumer]:
    options = consumer_options(kafka, client_id="redrive-cli", group_id=None,
                               request_timeout=max(timeout, 1.0))
    options["fetch_max_wait_ms"] = 100  # empty partitions answer (with their end) quickly
    # One fetch at most 4 MiB over all partitions (aiokafka's default is 50 MB): reading
    # a large topic streams in bounded steps. A larger first batch is still returned whole.
    options["fetch_max_bytes"] = 4 * 1_048_576
    consumer = AIOKafkaConsumer(**options)
    try:
        async with asyncio.timeout(timeout):
            await consumer.start()
    except (KafkaError, OSError, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise CliError(f"cannot reach Kafka at {_where(kafka)} within {timeout:g}s: "
                       f"{exc or type(exc).__name__}") from None
    try:
        yield consumer
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str,
                      timeout: float) -> list[TopicPartition]:
    async with asyncio.timeout(timeout):
        await consumer.topics()  # refreshes metadata
    partitions = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(partitions)]


class Reassembler:
    """Turns chunks (redrive.chunks) back into whole messages, in arrival order: a whole
    message passes through; a chunk set yields one message, with the first chunk's
    position, once its last chunk arrived. Incomplete sets are dropped at the end of a
    read (their records were never fully written) and counted in ``incomplete``."""

    def __init__(self) -> None:
        self._sets: dict[tuple[str, int, bytes | None, str], ChunkSet] = {}
        self._first: dict[tuple[str, int, bytes | None, str], Message] = {}
        self.broken = 0

    @property
    def incomplete(self) -> int:
        return len(self._sets)

    def feed(self, m: Message) -> Message | None:
        headers = list(m.headers.items())
        try:
            info = chunk_info(headers)
        except ValueError:
            self.broken += 1
            return None
        if info is None:
            return m
        where = (m.topic, m.partition, m.key, info.digest)
        chunks = self._sets.get(where)
        if chunks is None:
            chunks = self._sets[where] = ChunkSet(info.count, info.digest)
            self._first[where] = m
        chunks.add(info.index, m.value, m.offset)
        if not chunks.complete:
            return None
        del self._sets[where]
        first = self._first.pop(where)
        try:
            value = chunks.join()
        except ValueError:
            self.broken += 1
            return None
        return dataclasses.replace(first, value=value,
                                   headers=dict(without_chunk_headers(headers)))


def _message(m: Any) -> Message:
    """Copy an aiokafka ConsumerRecord into our own type (no library types leak out)."""
    return Message(topic=m.topic, partition=m.partition, offset=m.offset,
                   timestamp_ms=m.timestamp, key=m.key, value=m.value or b"",
                   headers=dict(m.headers or ()))


async def read_all(kafka: KafkaSettings, topic: str, timeout: float) -> list[Message]:
    """Every record on ``topic`` from the beginning up to its end as first seen (a list;
    :func:`read_each` streams them)."""
    return [m async for m in read_each(kafka, topic, timeout)]


async def read_each(kafka: KafkaSettings, topic: str,
                    timeout: float) -> AsyncGenerator[Message, None]:
    """Every record on ``topic`` from the beginning up to its end as first seen, one at a
    time, in order within each partition, chunked records whole.

    Raises :class:`CliError` when Kafka is unreachable, or when no progress is made for
    ``timeout`` seconds. A topic that does not exist reads as empty.
    """
    async with _consumer(kafka, timeout) as consumer:
        try:
            tps = await _partitions(consumer, topic, timeout)
            if not tps:
                return
            consumer.assign(tps)
            async with asyncio.timeout(timeout):
                await consumer.seek_to_beginning(*tps)
            chunks = Reassembler()
            loop = asyncio.get_running_loop()
            last_progress = loop.time()
            remaining = set(tps)
            while remaining:
                # The end is the high watermark each fetch reports, not ListOffsets: some
                # brokers (Tansu) answer ListOffsets with a batch count, not an offset.
                for tp in list(remaining):
                    high = consumer.highwater(tp)
                    if high is not None and await consumer.position(tp) >= high:
                        remaining.discard(tp)
                if not remaining:
                    break
                if loop.time() - last_progress > timeout:
                    raise CliError(f"reading {topic} made no progress for {timeout:g}s "
                                   f"(Kafka at {_where(kafka)})")
                batch = await consumer.getmany(*remaining, timeout_ms=200)
                for messages in batch.values():
                    last_progress = loop.time()
                    for m in messages:
                        whole = chunks.feed(_message(m))
                        if whole is not None:
                            yield whole
        except (KafkaError, TimeoutError) as exc:
            raise CliError(f"reading {topic} from Kafka at {_where(kafka)} failed: "
                           f"{exc or type(exc).__name__}") from None


async def follow(kafka: KafkaSettings, topic: str, timeout: float, *,
                 from_beginning: bool) -> AsyncIterator[Message]:
    """Records on ``topic`` as they arrive (from the end, or the beginning), forever."""
    async with _consumer(kafka, timeout) as consumer:
        try:
            tps = await _partitions(consumer, topic, timeout)
            if not tps:
                raise CliError(f"topic {topic} does not exist (yet) on Kafka at {_where(kafka)}")
            consumer.assign(tps)
            async with asyncio.timeout(timeout):
                if from_beginning:
                    await consumer.seek_to_beginning(*tps)
                else:
                    await consumer.seek_to_end(*tps)
            chunks = Reassembler()
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for m in messages:
                        whole = chunks.feed(_message(m))
                        if whole is not None:
                            yield whole
        except KafkaError as exc:
            raise CliError(f"following {topic} on Kafka at {_where(kafka)} failed: "
                           f"{exc}") from None


@contextlib.asynccontextmanager
async def publisher(kafka: KafkaSettings, timeout: float) -> AsyncIterator[Publisher]:
    pub = Publisher(kafka, client_id="redrive-cli")
    await pub.start()
    try:
        if not await pub.wait_connected(timeout):
            raise CliError(f"cannot reach Kafka at {_where(kafka)} within {timeout:g}s: "
                           f"{pub.last_error}")
        yield pub
    finally:
        await pub.stop(timeout=timeout)


async def publish(pub: Publisher, topic: str, key: bytes, value: bytes, headers: Headers,
                  timeout: float) -> None:
    try:
        await pub.publish(topic, key, value, headers, timeout)
    except PublishError as exc:
        raise CliError(f"publishing to {topic} failed: {exc}") from None
