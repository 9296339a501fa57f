"""The Publisher's own batching against the real broker: what one event-loop turn
publishes travels as one batch per partition, and every record's Delivery names the
offset it really has."""

from __future__ import annotations

import asyncio
import signal

import pytest
from aiokafka import AIOKafkaConsumer

from redrive.errors import PublishError
from redrive.kafka import Publisher
from redrive.settings import KafkaSettings
from tests.support.kafka import Broker, read_topic, start_broker, unique_topic


async def read_with_offsets(bootstrap: str, topic: str,
                            expect: int) -> dict[tuple[int, int], bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: dict[tuple[int, int], bytes] = {}
    try:
        async with asyncio.timeout(20):
            while len(out) < expect:
                for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
                    for m in msgs:
                        out[(tp.partition, m.offset)] = m.value or b""
    finally:
        await consumer.stop()
    return out


async def test_concurrent_publishes_are_batched_and_each_delivery_is_exact(
        broker: Broker, topic: str) -> None:
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t")
    await pub.start()
    assert await pub.wait_connected(10)
    big = b"B" * (700 * 1024)  # larger than one batch: travels alone
    values = [f"v{i:04d}".encode() for i in range(300)] + [big]
    deliveries = await asyncio.gather(*(
        pub.publish(topic, f"id-{i}".encode(), v, [("n", str(i).encode())], 10)
        for i, v in enumerate(values)))
    more = await pub.publish(topic, b"after", b"after", [], 10)
    await pub.stop()

    stored = await read_with_offsets(broker.bootstrap, topic, expect=len(values) + 1)
    assert len(stored) == len(values) + 1
    for value, d in zip(values, deliveries, strict=True):
        assert stored[(d.partition, d.offset)] == value
    assert stored[(more.partition, more.offset)] == b"after"


async def test_publish_before_kafka_is_reachable_fails_fast(topic: str) -> None:
    pub = Publisher(KafkaSettings(bootstrap_servers=("127.0.0.1:1",)), client_id="t")
    with pytest.raises(PublishError, match=r"not connected|not started"):
        await pub.publish(topic, b"k", b"v", [], 1)


async def test_sixty_four_steady_publishers_lose_nothing(broker: Broker, topic: str) -> None:
    """The capture path's shape: 64 callers, each publishing again as soon as its last
    record is acknowledged."""
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t")
    await pub.start()
    assert await pub.wait_connected(10)

    async def caller(n: int) -> list[tuple[int, int]]:
        return [((d := await pub.publish(topic, f"{n}-{i}".encode(), b"x" * 1500, [], 10))
                 .partition, d.offset) for i in range(60)]

    placed = [p for got in await asyncio.gather(*(caller(n) for n in range(64))) for p in got]
    await pub.stop()
    assert len(set(placed)) == 64 * 60
    stored = await read_with_offsets(broker.bootstrap, topic, expect=64 * 60)
    assert set(stored) == set(placed)


async def test_a_stalled_kafka_fails_callers_in_time_and_keeps_no_abandoned_records() -> None:
    """A Kafka that stops answering: every caller hears PublishError within its timeout (and
    would spool); records they gave up on do not pile up in the publisher's queue; once
    Kafka answers again, publishing works. (Records already handed to aiokafka may still
    arrive later: duplicates, never a loss.)"""
    broker = start_broker()
    topic = unique_topic("stall")
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t")
    try:
        await pub.start()
        assert await pub.wait_connected(10)
        await pub.publish(topic, b"first", b"first", [], 10)
        broker.process.signal(signal.SIGSTOP)
        await asyncio.sleep(0.2)  # let the stop take effect
        # The first publish after the stall is handed to aiokafka and waits there.
        stuck = asyncio.create_task(pub.publish(topic, b"stuck", b"stuck", [], 0.3))
        await asyncio.sleep(0.05)
        given_up = await asyncio.gather(
            *(pub.publish(topic, f"late-{i}".encode(), b"x", [], 0.3) for i in range(3000)),
            return_exceptions=True)
        assert all(isinstance(r, PublishError) for r in given_up)
        with pytest.raises(PublishError):
            await stuck
        # The next publish finds the queue full of abandoned records and drops them.
        nudge = asyncio.create_task(pub.publish(topic, b"nudge", b"nudge", [], 10))
        await asyncio.sleep(0)
        assert len(pub._lanes[topic].records) <= 2
        broker.process.signal(signal.SIGCONT)
        await nudge
        await pub.stop()
        keys = {k for k, _, _ in await read_topic(broker.bootstrap, topic,
                                                   keys={b"first", b"nudge"})}
        assert {b"first", b"nudge"} <= keys
    finally:
        broker.process.signal(signal.SIGCONT)
        broker.process.stop()


async def test_while_the_sender_is_stuck_abandoned_records_are_dropped(
        broker: Broker, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiokafka can hold the sender for up to its request timeout (a full queue to a dead
    broker); meanwhile callers time out, and their records must not accumulate."""
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t")
    await pub.start()
    assert await pub.wait_connected(10)
    release = asyncio.Event()
    real_send = Publisher._send

    async def stuck_send(self: Publisher, *args: object) -> None:
        await release.wait()
        await real_send(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Publisher, "_send", stuck_send)
    first = asyncio.create_task(pub.publish(topic, b"held", b"held", [], 30))
    await asyncio.sleep(0.05)  # the sender took "held" and is stuck with it
    for _ in range(3):
        given_up = await asyncio.gather(
            *(pub.publish(topic, f"late-{i}".encode(), b"x", [], 0.05) for i in range(2000)),
            return_exceptions=True)
        assert all(isinstance(r, PublishError) for r in given_up)
    # 6,000 abandoned records were queued behind the stuck sender; compaction keeps the
    # queue to about one threshold's worth at most, not all of them.
    assert len(pub._lanes[topic].records) <= 2100
    release.set()
    assert (await first).topic == topic
    await pub.stop()


async def test_a_spread_topic_fills_one_partition_per_send_and_rotates(
        broker: Broker, topic: str) -> None:
    """Capture topics (unique keys, never compacted): what one event-loop turn publishes
    is one batch in one partition, not a small batch per partition; later sends take the
    next partitions, so every partition gets its share."""
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t",
                    spread_topics={topic})
    await pub.start()
    assert await pub.wait_connected(10)
    rounds = []
    for r in range(8):
        rounds.append(await asyncio.gather(*(
            pub.publish(topic, f"{r}-{i}".encode(), f"v{r}-{i}".encode(), [], 10)
            for i in range(50))))
    await pub.stop()
    for deliveries in rounds:
        assert len({d.partition for d in deliveries}) == 1
        offsets = sorted(d.offset for d in deliveries)
        assert offsets == list(range(offsets[0], offsets[0] + 50))  # one batch, in order
    used = {deliveries[0].partition for deliveries in rounds}
    stored = await read_with_offsets(broker.bootstrap, topic, expect=400)
    assert len(used) == len({p for p, _ in stored}) > 1
    for r, deliveries in enumerate(rounds):
        for i, d in enumerate(deliveries):
            assert stored[(d.partition, d.offset)] == f"v{r}-{i}".encode()


async def test_on_a_spread_topic_the_chunks_of_a_record_keep_their_keys_partition(
        broker: Broker, topic: str) -> None:
    from redrive.chunks import CHUNK_HEADER
    from redrive.kafka import key_partitioner

    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t",
                    max_record_bytes=4096, spread_topics={topic})
    await pub.start()
    assert await pub.wait_connected(10)
    small = [pub.publish(topic, f"s{i}".encode(), b"s", [], 10) for i in range(20)]
    big = pub.publish(topic, b"the-big-one", bytes(range(256)) * 100, [], 10)
    await asyncio.gather(*small, big)
    await pub.stop()
    records = await read_topic(broker.bootstrap, topic, expect=20 + 7)
    chunks = [(k, v, h) for k, v, h in records if k == b"the-big-one"]
    assert len(chunks) >= 7
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        seen: list[tuple[int, int, bytes]] = []
        async with asyncio.timeout(20):
            while len(seen) < len(chunks):
                for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
                    seen += [(tp.partition, m.offset, dict(m.headers)[CHUNK_HEADER])
                             for m in msgs if m.key == b"the-big-one"]
    finally:
        await consumer.stop()
    assert {p for p, _, _ in seen} == {key_partitioner(b"the-big-one", partitions, partitions)}
    in_order = [h for _, _, h in sorted(seen)]
    assert in_order == [f"{i}/{len(chunks)}".encode() for i in range(len(chunks))]


async def test_records_waiting_when_kafka_stops_answering_are_given_up_at_once() -> None:
    """A publish with a long timeout does not wait it out once the probe sees Kafka gone:
    the caller spools the record instead of leaving it to aiokafka's own retries (which
    a broker back with empty storage may acknowledge into a topic it no longer has)."""
    broker = start_broker()
    topic = unique_topic("gone")
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t",
                    probe_interval=0.3, probe_timeout=0.3)
    try:
        await pub.start()
        assert await pub.wait_connected(10)
        await pub.publish(topic, b"first", b"first", [], 10)
        broker.process.signal(signal.SIGSTOP)
        started = asyncio.get_running_loop().time()
        with pytest.raises(PublishError, match="stopped answering"):
            await pub.publish(topic, b"waiting", b"waiting", [], 30)
        assert asyncio.get_running_loop().time() - started < 5
        assert not pub.connected
    finally:
        broker.process.signal(signal.SIGCONT)
        await pub.stop(timeout=5)
        broker.process.stop()
