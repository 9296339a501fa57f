"""The worker protects a recovering service: rate limit, circuit breaker, two workers."""

from __future__ import annotations

import time

from aiohttp import web

from tests.support.kafka import Broker, read_topic
from tests.support.procs import free_port
from tests.support.worker import (
    make_record,
    produce_records,
    target,
    wait_until,
    worker,
    worker_env,
)


async def test_the_replay_rate_never_exceeds_the_limit(
        broker: Broker, topic: str) -> None:
    records = [make_record() for _ in range(61)]
    async with target() as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_REPLAY_RATE="20",
                         REDRIVE_REPLAY_CONCURRENCY="8")
        await produce_records(broker.bootstrap, topic, records)
        async with worker(env):
            await t.wait_for(lambda: len(t.seen) == 61, timeout=15)
    times = sorted(s.at for s in t.seen)
    measured = (len(times) - 1) / (times[-1] - times[0])
    # The limit is a ceiling; a loaded machine may only make replays slower, so the floor
    # is generous (the limiter's exact schedule is tested with a fake clock in
    # tests/unit/test_worker_limits.py).
    assert 4.0 <= measured <= 22.0, f"{measured:.1f} replays/s"


async def test_the_circuit_breaker_pauses_replays_then_probes_and_resumes(
        broker: Broker, topic: str) -> None:
    healthy = False

    async def switchable(_: web.Request, __: int) -> web.StreamResponse:
        return web.Response(status=200 if healthy else 503)

    records = [make_record() for _ in range(10)]
    async with target(switchable) as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_BREAKER_FAILURES="3",
                         REDRIVE_BREAKER_OPEN_SECONDS="1", REDRIVE_MAX_ATTEMPTS="20",
                         REDRIVE_REPLAY_CONCURRENCY="1", REDRIVE_BACKOFF_MAX_SECONDS="0.2")
        async with worker(env) as w:
            await produce_records(broker.bootstrap, topic, records)
            await t.wait_for(lambda: len(t.seen) == 3)
            await wait_until(lambda: w.metric("redrive_retry_worker_circuit_open") == 1)
            opened = time.monotonic()
            await t.wait_for(lambda: len(t.seen) == 4, timeout=5)  # the first probe
            probe_gap = t.seen[3].at - t.seen[2].at
            await wait_until(lambda: time.monotonic() - opened > 2.2)
            failed_while_down = len(t.seen)
            healthy = True
            await wait_until(lambda: w.metric("redrive_retry_worker_replays_total",
                                              outcome="success") == 10, timeout=20)
            assert w.metric("redrive_retry_worker_circuit_open") == 0
    assert probe_gap >= 0.95
    # About 2.2 s down with a 1 s open period: 3 failures plus two probes at most, where
    # without the breaker every record would have burnt attempts every 0.1-0.2 s.
    assert failed_while_down <= 5
    assert {s.headers["X-Redrive-Replay"] for s in t.seen} == {r.id for r in records}
    assert await read_topic(broker.bootstrap, f"{topic}.dlq", idle=0.5) == []


async def test_two_workers_share_the_work_through_a_rebalance_without_losing_a_record(
        broker: Broker, topic: str) -> None:
    records = [make_record() for _ in range(200)]
    async with target() as t:
        env_a = worker_env(broker.bootstrap, topic, t.url, REDRIVE_REPLAY_RATE="60")
        env_b = {**env_a, "REDRIVE_ADMIN_PORT": str(free_port())}
        await produce_records(broker.bootstrap, topic, records)
        async with worker(env_a) as a:
            await t.wait_for(lambda: len(t.seen) >= 40)
            async with worker(env_b) as b:
                await t.wait_for(lambda: len(t.seen) >= 120)
                a.stopping.set()  # a leaves the group; b takes every partition
                await a.task
                done_by_a = a.metric("redrive_retry_worker_replays_total", outcome="success")
                await t.wait_for(lambda: len(t.by_replay_id()) == 200, timeout=30)
                done_by_b = b.metric("redrive_retry_worker_replays_total", outcome="success")
    assert done_by_a > 0 and done_by_b > 0
    seen = t.by_replay_id()
    assert set(seen) == {r.id for r in records}
    keys = {r.id: r.idempotency_key for r in records}
    assert all({s.headers["Idempotency-Key"] for s in got} == {keys[rid]}
               for rid, got in seen.items())
