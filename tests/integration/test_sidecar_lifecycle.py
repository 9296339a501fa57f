"""Starting and stopping: bad configuration, SIGTERM with requests in flight."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from tests.support.kafka import Broker, read_topic, unique_topic
from tests.support.procs import python_module
from tests.support.servers import serve
from tests.support.sidecar import start_sidecar


def test_a_bad_configuration_exits_2_naming_every_invalid_variable() -> None:
    proc = python_module("sidecar", {
        "REDRIVE_LISTEN_PORT": "http",
        "REDRIVE_UPSTREAM_URL": "localhost:3000",
        "REDRIVE_FAILURE_RESPONSE": "ignore",
        "REDRIVE_SPOOL_MAX_BYTES": "lots",
    })
    assert proc.wait(timeout=20) == 2
    out = proc.output()
    for name in ("REDRIVE_LISTEN_PORT", "REDRIVE_UPSTREAM_URL", "REDRIVE_FAILURE_RESPONSE",
                 "REDRIVE_SPOOL_MAX_BYTES"):
        assert name in out
    assert "4 problem(s)" in out
    assert "Traceback" not in out


async def test_sigterm_lets_in_flight_requests_finish_and_exits_0(
        broker: Broker, echo_upstream: str) -> None:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("term"),
                       upstream=echo_upstream)
    async with aiohttp.ClientSession() as s:
        async def slow() -> tuple[int, str]:
            async with s.get(sc.url + "/slow?seconds=1.5") as r:
                return r.status, await r.text()

        tasks = [asyncio.create_task(slow()) for _ in range(5)]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        sc.process.signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        code = await asyncio.to_thread(sc.process.wait, 15)
    assert results == [(200, "slow ok")] * 5
    assert code == 0
    assert time.monotonic() - started < 5
    messages = [e["message"] for e in sc.logs()]
    assert "shutting down: draining in-flight requests" in messages
    assert messages[-1] == "sidecar stopped"


async def test_a_capture_in_flight_at_sigterm_still_reaches_kafka(broker: Broker) -> None:
    from aiohttp import web

    async def failing_slowly(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.Response(status=503)

    async with serve(failing_slowly) as upstream:
        await _capture_during_sigterm(broker, upstream)


async def _capture_during_sigterm(broker: Broker, upstream: str) -> None:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("termcap"),
                       upstream=upstream)
    try:
        async with aiohttp.ClientSession() as s:
            async def post() -> dict[str, object]:
                async with s.post(sc.url + "/api/users", data=b"{}") as r:
                    return await r.json()  # type: ignore[no-any-return]

            task = asyncio.create_task(post())
            await asyncio.sleep(0.3)
            sc.process.signal(signal.SIGTERM)
            body = await task
        assert body["queued"] is True
        assert await asyncio.to_thread(sc.process.wait, 15) == 0
        records = await read_topic(broker.bootstrap, sc.topic, expect=1)
        assert [k for k, _, _ in records] == [str(body["id"]).encode()]
    finally:
        sc.process.stop()
