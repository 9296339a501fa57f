"""Produce errors in the spool drain and the worker's writes: permanent ones are quarantined,
transient ones wait.

The broker is real; the refusals a local broker never gives (too large, corrupt,
not authorised, not enough replicas) are injected at the aiokafka boundary
(tests/support/faults.py). Oracle: the topic itself and the quarantine file.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import errors as kafka_errors
from prometheus_client import CollectorRegistry

from redrive import quarantine
from redrive.cli import main as cli
from redrive.errors import PublishError
from redrive.kafka import Publisher
from redrive.settings import KafkaSettings
from retry_worker.metrics import Metrics
from retry_worker.outcomes import Outcomes
from retry_worker.policy import DeadLetter
from sidecar.drain import drain_spool, quarantine_dir
from sidecar.metrics import SidecarMetrics
from sidecar.spool import Spool
from tests.support.factories import record
from tests.support.faults import faulty
from tests.support.kafka import Broker, unique_topic

N = 2000


def key(i: int) -> bytes:
    return f"rec-{i:05d}".encode()


async def partitions_in_order(bootstrap: str, topic: str,
                              expect: int) -> dict[int, list[bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                metadata_max_age_ms=500)
    await consumer.start()
    out: dict[int, list[bytes]] = {}
    try:
        for _ in range(200):
            if sum(len(v) for v in out.values()) >= expect:
                break
            for tp, msgs in (await consumer.getmany(timeout_ms=100)).items():
                out.setdefault(tp.partition, []).extend(m.key or b"" for m in msgs)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    s = Spool(tmp_path, 1 << 30, segment_max_bytes=256 * 1024)
    s.open()
    for i in range(N):
        await s.append(key(i), b"x" * 200 + key(i), [("redrive-version", b"1")])
    yield s
    await s.close()



async def drain_all(spool: Spool, pub: Publisher, metrics: SidecarMetrics, topic: str) -> int:
    """Drain windows until the spool is empty (at most ten); the records handled."""
    handled = 0
    for _ in range(10):
        handled += await drain_spool(spool, pub, metrics, topic=topic)
        if not spool.records:
            break
    return handled

async def test_records_kafka_refuses_for_good_are_quarantined_and_the_rest_drain_in_order(
        broker: Broker, spool: Spool, tmp_path: Path) -> None:
    topic = unique_topic("poison")
    poison = {key(10): kafka_errors.MessageSizeTooLargeError(),
              key(700): kafka_errors.CorruptRecordException(),
              key(1999): kafka_errors.TopicAuthorizationFailedError()}
    kafka = KafkaSettings(bootstrap_servers=(broker.bootstrap,), topic=topic)
    pub = Publisher(kafka, client_id="t", producer_factory=faulty(poison))
    metrics = SidecarMetrics(CollectorRegistry())
    await pub.start()
    try:
        assert await pub.wait_connected(10)
        assert await drain_all(spool, pub, metrics, topic) == N
        assert spool.records == 0
    finally:
        await pub.stop()

    by_partition = await partitions_in_order(broker.bootstrap, topic, N - 3)
    delivered = [k for keys in by_partition.values() for k in keys]
    assert sorted(set(delivered)) == sorted(set(key(i) for i in range(N)) - set(poison))
    for keys in by_partition.values():  # order kept within each partition
        assert keys == sorted(keys)

    entries = [e for e in quarantine.read(quarantine_dir(spool))]
    assert {(e.key, e.reason) for e in entries if not isinstance(e, ValueError)} == {
        (key(10), "too_large"), (key(700), "invalid"), (key(1999), "unauthorized")}
    for reason in ("too_large", "invalid", "unauthorized"):
        assert metrics.quarantined.labels(reason=reason)._value.get() == 1

    # The operator lists them and, once the cause is fixed, replays them.
    qdir = str(quarantine_dir(spool))
    out = io.StringIO()
    assert await asyncio.to_thread(cli, ["quarantine", "list", "--dir", qdir], {}, out) == 0
    listing = out.getvalue()
    assert all(k.decode() in listing for k in poison) and "too_large" in listing
    out = io.StringIO()
    assert await asyncio.to_thread(
        cli, ["quarantine", "show", "rec-00700", "--dir", qdir], {}, out) == 0
    assert '"reason": "invalid"' in out.getvalue() and "x" * 200 in out.getvalue()
    assert await asyncio.to_thread(
        cli, ["quarantine", "replay", "--all", "--dir", qdir,
              "--kafka-bootstrap-servers", broker.bootstrap], {}, io.StringIO()) == 0
    assert list(quarantine.read(quarantine_dir(spool))) == []
    by_partition = await partitions_in_order(broker.bootstrap, topic, N)
    assert {k for keys in by_partition.values() for k in keys} == {key(i) for i in range(N)}


async def test_transient_refusals_keep_every_record_spooled_until_kafka_takes_them(
        broker: Broker, spool: Spool) -> None:
    topic = unique_topic("transient")
    producer = faulty(refuse_all=kafka_errors.NotEnoughReplicasError())
    kafka = KafkaSettings(bootstrap_servers=(broker.bootstrap,), topic=topic)
    pub = Publisher(kafka, client_id="t", producer_factory=producer)
    metrics = SidecarMetrics(CollectorRegistry())
    await pub.start()
    try:
        assert await pub.wait_connected(10)
        for _ in range(3):
            with pytest.raises(PublishError) as refused:
                await drain_spool(spool, pub, metrics, topic=topic)
            assert refused.value.retriable
            assert spool.records == N
        assert producer.refused_batches >= 3
        producer.refuse_all = None  # the cluster recovers
        assert await drain_all(spool, pub, metrics, topic) == N
        assert spool.records == 0
    finally:
        await pub.stop()
    assert list(quarantine.read(quarantine_dir(spool))) == []
    by_partition = await partitions_in_order(broker.bootstrap, topic, N)
    assert sorted(k for keys in by_partition.values() for k in keys) == [
        key(i) for i in range(N)]


async def test_the_worker_quarantines_a_dead_letter_kafka_refuses_and_retries_transients(
        broker: Broker, tmp_path: Path) -> None:
    topic = unique_topic("wq")
    big, fine = record(id="too-big-1"), record(id="fine-1")
    producer = faulty({b"too-big-1": kafka_errors.MessageSizeTooLargeError()})
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="t",
                    producer_factory=producer)
    metrics = Metrics(CollectorRegistry())
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            producer.refuse_all = None  # the cluster recovers after three tries
        await asyncio.sleep(0)

    outcomes = Outcomes(pub, metrics, retry_topic=topic + ".retry", dlq_topic=topic + ".dlq",
                        sleep=sleep, quarantine_dir=tmp_path)
    await pub.start()
    try:
        assert await pub.wait_connected(10)
        async with asyncio.timeout(30):
            await outcomes.dead_letter(big, DeadLetter("permanent", "404"), ())
        assert sleeps == []  # never retried
        (entry,) = quarantine.read(tmp_path)
        assert not isinstance(entry, ValueError)
        assert (entry.key, entry.reason, entry.topic) == (b"too-big-1", "too_large",
                                                          topic + ".dlq")
        assert metrics.quarantined.labels("too_large")._value.get() == 1

        producer.refuse_all = kafka_errors.NotEnoughReplicasError()
        async with asyncio.timeout(30):
            await outcomes.dead_letter(fine, DeadLetter("permanent", "404"), ())
        assert len(sleeps) == 3  # backed off while the refusal was transient
        assert len(list(quarantine.read(tmp_path))) == 1
    finally:
        await pub.stop()
    by_partition = await partitions_in_order(broker.bootstrap, topic + ".dlq", 1)
    assert [k for keys in by_partition.values() for k in keys] == [b"fine-1"]
