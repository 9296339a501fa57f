"""Non-blocking retries: tiered retry topics, a partition paused until its head is due,
exact commits. A record waiting a long time never holds back the commit point of records
with short delays, so a restart replays nothing that already succeeded."""

from __future__ import annotations

from aiohttp import web

from redrive.envelope import decode
from tests.support.kafka import Broker, read_topic
from tests.support.worker import (
    make_record,
    produce_records,
    target,
    wait_until,
    worker,
    worker_env,
)

# Tiers 0.2 s and 30 s (the cap): the schedule's first delay, and Retry-After's ceiling.
TIERS = {"REDRIVE_BACKOFF_INITIAL_SECONDS": "0.2", "REDRIVE_BACKOFF_MULTIPLIER": "150",
         "REDRIVE_BACKOFF_MAX_SECONDS": "30", "REDRIVE_MAX_ATTEMPTS": "3"}


async def test_a_long_wait_does_not_pin_the_commit_point_of_short_ones(
        broker: Broker, topic: str) -> None:
    slow = make_record()
    quick = [make_record() for _ in range(20)]

    async def respond(request: web.Request, count: int) -> web.StreamResponse:
        if request.headers["X-Redrive-Replay"] == slow.id:
            return web.Response(status=503, headers={"Retry-After": "25"})
        return web.Response(status=503 if count == 1 else 200)

    async with target(respond) as t:
        env = worker_env(broker.bootstrap, topic, t.url, **TIERS)
        await produce_records(broker.bootstrap, topic, [slow])
        async with worker(env) as w:
            await t.wait_for(lambda: len(t.seen) == 1)
            await produce_records(broker.bootstrap, topic, quick)
            await wait_until(lambda: w.metric("redrive_retry_worker_replays_total",
                                              outcome="success") == 20, timeout=30)
            await wait_until(lambda: w.metric("redrive_retry_worker_waiting_records") == 1,
                             timeout=5, what="the slow record waiting")
        # A restart: nothing that succeeded is read again; the slow record still waits.
        async with worker(env) as w:
            await wait_until(lambda: w.metric("redrive_retry_worker_waiting_records") == 1,
                             timeout=20, what="the slow record read again, waiting")
        replays = t.by_replay_id()
    assert len(replays[slow.id]) == 1  # never before its due time
    for record in quick:
        assert len(replays[record.id]) == 2, record.id  # failed once, then succeeded once
    slow_tier = await read_topic(broker.bootstrap, f"{topic}.retry.30s", expect=1)
    assert [decode(v).id for _, v, _ in slow_tier] == [slow.id]
    quick_tier = await read_topic(broker.bootstrap, f"{topic}.retry.200ms", expect=20)
    assert {decode(v).id for _, v, _ in quick_tier} == {r.id for r in quick}
