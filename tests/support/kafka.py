"""The real broker for tests (Tansu, in memory) and an oracle that reads a topic back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

from redrive.localbroker import broker_command
from tests.support.procs import Process, free_port, wait_for_port


@dataclass
class Broker:
    process: Process
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_broker(port: int | None = None) -> Broker:
    port = port or free_port()
    proc = Process(broker_command("127.0.0.1", port), name="tansu")
    wait_for_port(port, timeout=15)
    return Broker(process=proc, port=port)


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


Message = tuple[bytes | None, bytes, dict[str, bytes]]


async def read_topic(bootstrap: str, topic: str, *, expect: int | None = None,
                     keys: Collection[bytes] | None = None,
                     timeout: float = 10.0, idle: float = 1.0) -> list[Message]:
    """Every (key, value, headers) on ``topic`` from the start.

    Stops when ``expect`` records were read, or once every key in ``keys`` was seen
    (duplicates, which at-least-once delivery allows, do not count twice), or when
    nothing new arrived for ``idle`` seconds (only without ``expect`` and ``keys``), or at
    ``timeout``, whichever comes first. Uses no consumer group.
    """
    waiting = set(keys) if keys is not None else None
    # Subscribing without a group assigns every partition and follows metadata, so a
    # topic that only appears later (created by its first produce) is still read.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None,
                                metadata_max_age_ms=500)
    await consumer.start()
    out: list[Message] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_new = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                for m in msgs:
                    out.append((m.key, m.value, dict(m.headers)))
                    if waiting is not None and m.key is not None:
                        waiting.discard(m.key)
                last_new = loop.time()
            if waiting is not None:
                done = not waiting
            elif expect is not None:
                done = len(out) >= expect
            else:
                done = loop.time() - last_new > idle
            if done:
                break
    finally:
        await consumer.stop()
    return out
