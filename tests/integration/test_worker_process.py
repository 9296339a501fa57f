"""``python -m retry_worker`` as a real process: config errors, admin port, SIGKILL, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

from tests.support.kafka import Broker, read_topic
from tests.support.procs import Process, http_get, python_module
from tests.support.worker import make_record, produce_records, target, worker_env


def test_an_invalid_configuration_exits_2_naming_every_problem() -> None:
    proc = Process([sys.executable, "-m", "retry_worker"], name="worker-bad-config", env={
        "REDRIVE_TARGET_URL": "ftp://nowhere", "REDRIVE_REPLAY_RATE": "-1",
        "REDRIVE_MAX_ATTEMPTS": "zero", "REDRIVE_RETRY_TOPIC": "failed-requests"})
    assert proc.wait(timeout=20) == 2
    out = proc.output()
    for name in ("REDRIVE_TARGET_URL", "REDRIVE_REPLAY_RATE", "REDRIVE_MAX_ATTEMPTS",
                 "REDRIVE_RETRY_TOPIC"):
        assert name in out
    assert "4 problem(s)" in out


def _start(env: dict[str, str], name: str) -> Process:
    proc = python_module("retry_worker", env, name=name)
    proc.wait_http(f"http://127.0.0.1:{env['REDRIVE_ADMIN_PORT']}/readyz", timeout=20)
    return proc


async def test_a_worker_killed_mid_stream_loses_nothing_and_duplicates_keep_their_key(
        broker: Broker, topic: str) -> None:
    records = [make_record() for _ in range(300)]
    async with target() as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_REPLAY_RATE="100",
                         REDRIVE_REPLAY_CONCURRENCY="4")
        await produce_records(broker.bootstrap, topic, records)
        first = await asyncio.to_thread(_start, env, "worker-1")
        try:
            await t.wait_for(lambda: len(t.seen) >= 80)
            first.signal(signal.SIGKILL)
            assert await asyncio.to_thread(first.wait, 10) == -signal.SIGKILL
        finally:
            first.stop()
        second = await asyncio.to_thread(_start, env, "worker-2")
        try:
            await t.wait_for(lambda: len(t.by_replay_id()) == 300, timeout=30)
            # Every id has arrived, but the records the killed worker left uncommitted are
            # read again and may still be queued (at 100/s): let the worker finish them
            # (the target quiet for a second) before the graceful stop, which commits
            # only what is done.
            await t.wait_for(lambda: time.monotonic() - t.seen[-1].at > 1.0, timeout=30)
            code, metrics = await asyncio.to_thread(
                http_get, f"http://127.0.0.1:{env['REDRIVE_ADMIN_PORT']}/metrics")
            assert code == 200
            for name in ("redrive_retry_worker_replays_total{outcome=\"success\"}",
                         "redrive_retry_worker_dead_letters_total{reason=\"malformed\"} 0.0",
                         "redrive_retry_worker_replay_duration_seconds_bucket",
                         "redrive_retry_worker_rejected_records_total{reason=\"malformed\"} 0.0",
                         "redrive_retry_worker_consumer_lag_records"):
                assert name in metrics
            assert (await asyncio.to_thread(
                http_get, f"http://127.0.0.1:{env['REDRIVE_ADMIN_PORT']}/healthz"))[0] == 200
            second.signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait, 15) == 0
        finally:
            second.stop()
        assert "consumer stopped" in second.output()
        seen = t.by_replay_id()
        keys = {r.id: r.idempotency_key for r in records}
        assert set(seen) == set(keys)
        assert all({s.headers["Idempotency-Key"] for s in got} == {keys[rid]}
                   for rid, got in seen.items())
        # After a graceful stop everything is committed: a new worker replays nothing.
        before = len(t.seen)
        third = await asyncio.to_thread(_start, env, "worker-3")
        try:
            await asyncio.sleep(1.5)
        finally:
            third.stop()
        assert len(t.seen) == before
    assert await read_topic(broker.bootstrap, f"{topic}.dlq", idle=0.5) == []


def test_a_worker_without_kafka_stays_alive_reports_not_ready_and_stops_cleanly_twice_signalled(
        ) -> None:
    from tests.support.procs import free_port

    env = worker_env(f"127.0.0.1:{free_port()}", "nowhere", "http://127.0.0.1:9")
    proc = python_module("retry_worker", env, name="worker-no-kafka")
    try:
        admin = f"http://127.0.0.1:{env['REDRIVE_ADMIN_PORT']}"
        proc.wait_http(f"{admin}/healthz", timeout=20)
        code, body = http_get(f"{admin}/readyz")
        assert code == 503 and "not connected to Kafka" in body
        # Supervisors may signal twice (honcho does): the second skips the drain, and
        # neither kills the process.
        proc.signal(signal.SIGTERM)
        proc.signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.stop()
