"""The worker's memory is bounded by bytes: past REDRIVE_WORKER_BUFFER_BYTES every
partition waits, however many records are behind."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from tests.support.kafka import Broker
from tests.support.worker import make_record, produce_records, target, worker, worker_env

N, BODY = 100, 300_000  # 30 MB of bodies on the topic


async def test_records_read_but_not_started_stay_near_the_byte_budget(
        broker: Broker, topic: str) -> None:
    records = [make_record(body=os.urandom(BODY)) for _ in range(N)]
    await produce_records(broker.bootstrap, topic, records)

    async def slow(_: web.Request, __: int) -> web.StreamResponse:
        await asyncio.sleep(0.01)
        return web.Response(status=200)

    peak = 0.0
    async with target(slow) as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_REPLAY_CONCURRENCY="2",
                         REDRIVE_WORKER_BUFFER_BYTES=str(1024 * 1024))
        async with worker(env) as w:
            for _ in range(3000):
                peak = max(peak, w.metric("redrive_retry_worker_buffered_bytes"))
                if len(t.by_replay_id()) == N:
                    break
                await asyncio.sleep(0.01)
    assert len(t.by_replay_id()) == N
    print(f"peak buffered {peak / 1e6:.1f} MB of {N * BODY * 4 / 3 / 1e6:.0f} MB on the topic")
    # A soft bound: the budget plus what one fetch brings (at most 4 MiB a partition).
    assert 0 < peak <= 1024 * 1024 + 4 * 4 * 1024 * 1024
