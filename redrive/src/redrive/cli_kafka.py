"""Kafka access for the operator CLI: read a whole topic, follow it, publish; all bounded.

Every wait has a deadline, and aiokafka's exceptions become :class:`CliError` with a
sentence an operator can act on ("cannot reach Kafka at ...").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

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


def _message(m: Any) -> Message:
    """Copy an aiokafka ConsumerRecord into our own type (no library types leak out)."""
    return Message(topic=m.topic, partition=m.partition, offset=m.offset,
                   timestamp_ms=m.timestamp, key=m.key, value=m.value or b"",
                   headers=dict(m.headers or ()))


async def read_all(kafka: KafkaSettings, topic: str, timeout: float) -> list[Message]:
    """Every record on ``topic`` from the beginning up to its end as first seen.

    Raises :class:`CliError` when Kafka is unreachable, or when no progress is made for
    ``timeout`` seconds. A topic that does not exist reads as empty.
    """
    async with _consumer(kafka, timeout) as consumer:
        try:
            tps = await _partitions(consumer, topic, timeout)
            if not tps:
                return []
            consumer.assign(tps)
            async with asyncio.timeout(timeout):
                await consumer.seek_to_beginning(*tps)
            out: list[Message] = []
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
                    out.extend(_message(m) for m in messages)
                    last_progress = loop.time()
        except (KafkaError, TimeoutError) as exc:
            raise CliError(f"reading {topic} from Kafka at {_where(kafka)} failed: "
                           f"{exc or type(exc).__name__}") from None
    return out


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
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for m in messages:
                        yield _message(m)
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
