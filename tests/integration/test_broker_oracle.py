"""The oracle the other tests rely on reads back exactly what was produced."""

from __future__ import annotations

from redrive.kafka import Publisher
from redrive.settings import KafkaSettings
from tests.support.kafka import Broker, read_topic


async def test_published_records_are_read_back_by_the_oracle(broker: Broker, topic: str) -> None:
    pub = Publisher(KafkaSettings(bootstrap_servers=(broker.bootstrap,)), client_id="test")
    await pub.start()
    assert await pub.wait_connected(10)
    for i in range(20):
        d = await pub.publish(topic, f"k{i}".encode(), f"v{i}".encode(), [("h", b"1")], 5)
        assert d.topic == topic
    await pub.stop()
    records = await read_topic(broker.bootstrap, topic, expect=20)
    assert sorted(v for _, v, _ in records) == sorted(f"v{i}".encode() for i in range(20))
    assert all(h == {"h": b"1"} for _, _, h in records)
