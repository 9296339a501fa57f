"""Both event loops REDRIVE_EVENT_LOOP offers run the whole path: a sidecar passes a
request on, captures a failure (answered after Kafka's acknowledgement), and a worker
replays it. uvloop is the default (auto picks it when installed); asyncio stays a
supported choice, so each runs here as a real process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import aiohttp
import pytest

from tests.support.kafka import Broker, unique_topic
from tests.support.procs import Process, python_module
from tests.support.sidecar import start_sidecar
from tests.support.worker import target, worker_env


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_a_capture_is_passed_on_captured_and_replayed_on_either_loop(
        broker: Broker, echo_upstream: str, loop: str) -> None:
    topic = unique_topic(f"loop-{loop}")
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=topic, upstream=echo_upstream,
                       env={"REDRIVE_EVENT_LOOP": loop})
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(sc.url + "/echo", data=b"hello") as r:
                assert r.status == 200
                assert json.loads(await r.text())["body_b64"] == "aGVsbG8="
            async with s.post(sc.url + "/status/503", json={"order": 7}) as r:
                assert r.status == 503
                answer = await r.json()
        assert answer["queued"] is True
        sc.process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(sc.process.wait, 15) == 0
    finally:
        sc.process.stop()
    [start] = [e for e in sc.logs() if e["message"] == "sidecar starting"]
    assert start["event_loop"] == loop

    async with target() as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_EVENT_LOOP=loop)
        worker = await asyncio.to_thread(python_module, "retry_worker", env, name="worker")
        try:
            await t.wait_for(lambda: len(t.seen) >= 1, timeout=30)
            worker.signal(signal.SIGTERM)
            assert await asyncio.to_thread(worker.wait, 15) == 0
        finally:
            worker.stop()
        [replayed] = t.seen
        assert json.loads(replayed.body) == {"order": 7}
        assert replayed.headers["X-Redrive-Replay"] == answer["id"]
    assert f'"event_loop": "{loop}"' in worker.output()


def test_an_unknown_event_loop_is_refused_with_the_choices() -> None:
    proc = Process([sys.executable, "-m", "sidecar"], name="sidecar-bad-loop", env={
        "REDRIVE_UPSTREAM_URL": "http://127.0.0.1:1", "REDRIVE_EVENT_LOOP": "trio"})
    assert proc.wait(timeout=20) == 2
    out = proc.output()
    assert "REDRIVE_EVENT_LOOP" in out and "auto, uvloop, asyncio" in out
