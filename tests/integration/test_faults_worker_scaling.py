"""Worker scale-up and scale-down during a retry storm, as an autoscaler does it.

Two real ``python -m retry_worker`` processes share a group on 4-partition topics. A third
of the records fail their first replay (a retry storm through the tier topics). Worker B
joins mid-stream (a rebalance), then worker A leaves on SIGTERM (another). The target
counts replays per Idempotency-Key: every record is delivered, and no graceful rebalance
makes a second copy of a replay (duplicates counted: must be 0).
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from redrive.retrytopics import tier_topic
from tests.support.kafka import Broker
from tests.support.procs import Process, free_port, python_module
from tests.support.worker import make_record, produce_records, target, worker_env

N = 600


def _start(env: dict[str, str], name: str) -> Process:
    proc = python_module("retry_worker", env, name=name)
    proc.wait_http(f"http://127.0.0.1:{env['REDRIVE_ADMIN_PORT']}/readyz", timeout=30)
    return proc


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def test_scale_up_and_down_during_a_retry_storm_duplicates_nothing(
        broker: Broker, topic: str) -> None:
    records = [make_record() for _ in range(N)]
    storm = {r.idempotency_key for r in records[::3]}
    delivered: dict[str, int] = {}

    async def respond(request: web.Request, count: int) -> web.StreamResponse:
        key = request.headers["Idempotency-Key"]
        if key in storm and count == 1:
            return web.Response(status=503)
        await asyncio.sleep(0.005)  # a little work, so replays are in flight at rebalances
        delivered[key] = delivered.get(key, 0) + 1
        return web.Response(status=200)

    async with target(respond) as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_REPLAY_RATE="300",
                         REDRIVE_REPLAY_CONCURRENCY="8", REDRIVE_BACKOFF_INITIAL_SECONDS="0.5",
                         REDRIVE_MAX_ATTEMPTS="3", REDRIVE_BACKOFF_MAX_SECONDS="2")
        tiers = [tier_topic(f"{topic}.retry", d) for d in (0.5, 2.0)]
        await create_topics(broker.bootstrap, [topic, f"{topic}.retry", *tiers], 4)
        await produce_records(broker.bootstrap, topic, records)
        a = await asyncio.to_thread(_start, env, "worker-a")
        b: Process | None = None
        try:
            await t.wait_for(lambda: len(delivered) >= N // 5, timeout=30)
            b = await asyncio.to_thread(
                _start, {**env, "REDRIVE_ADMIN_PORT": str(free_port()),
                         "POD_NAME": "worker-b"}, "worker-b")  # scale up: a rebalance
            await t.wait_for(lambda: len(delivered) >= N // 2, timeout=30)
            a.signal(signal.SIGTERM)  # scale down: graceful leave, another rebalance
            assert await asyncio.to_thread(a.wait, 30) == 0
            await t.wait_for(lambda: len(delivered) == N, timeout=60)
            await asyncio.sleep(1.0)  # late duplicates, if any, would arrive now
        finally:
            a.stop()
            if b is not None:
                b.stop()
    duplicates = sum(n - 1 for n in delivered.values())
    attempts = len(t.seen)
    print(f"acknowledged {N}, delivered {len(delivered)}, duplicated {duplicates}, "
          f"attempts {attempts} (expected {N + len(storm)})")
    assert len(delivered) == N  # lost: 0
    assert duplicates == 0
