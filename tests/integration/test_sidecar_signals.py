"""Signals and supervision: repeated SIGTERMs, and a background task that dies."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time

import aiohttp

from redrive import runtime
from sidecar.app import Sidecar
from sidecar.settings import Settings
from tests.support.kafka import Broker, unique_topic
from tests.support.procs import free_port, http_get
from tests.support.sidecar import start_sidecar, unused_port_url


async def test_repeated_sigterms_during_the_drain_change_nothing_and_exit_0(
        broker: Broker, echo_upstream: str) -> None:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("sig"),
                       upstream=echo_upstream)
    try:
        async with aiohttp.ClientSession() as s:
            async def slow() -> tuple[int, str]:
                async with s.get(sc.url + "/slow?seconds=2") as r:
                    return r.status, await r.text()

            tasks = [asyncio.create_task(slow()) for _ in range(3)]
            await asyncio.sleep(0.5)
            sc.process.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # Draining: no longer ready, still answering the probe.
            status, _ = await asyncio.to_thread(http_get, sc.admin + "/readyz")
            assert status == 503
            for _ in range(3):
                sc.process.signal(signal.SIGTERM)
                await asyncio.sleep(0.1)
            results = await asyncio.gather(*tasks)
            code = await asyncio.to_thread(sc.process.wait, 15)
    finally:
        sc.process.stop()
    assert results == [(200, "slow ok")] * 3
    assert code == 0
    messages = [e["message"] for e in sc.logs()]
    assert messages.count("shutting down: draining in-flight requests") == 1
    assert messages.count("signal received while shutting down; still draining") == 3
    assert messages[-1] == "sidecar stopped"
    assert "Traceback" not in sc.process.output()


async def test_a_background_task_that_dies_stops_the_sidecar_with_exit_code_1(
        broker: Broker) -> None:
    settings = Settings.from_env({
        "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "REDRIVE_TOPIC": unique_topic("death"), "REDRIVE_UPSTREAM_URL": unused_port_url(),
        "REDRIVE_LISTEN_HOST": "127.0.0.1", "REDRIVE_ADMIN_HOST": "127.0.0.1",
        "REDRIVE_ADMIN_PORT": str(free_port()), "REDRIVE_DRAIN_TIMEOUT_SECONDS": "2"})
    settings = dataclasses.replace(settings, listen=dataclasses.replace(settings.listen,
                                                                       port=0))
    sidecar = Sidecar(settings)
    serving = asyncio.create_task(sidecar.serve(handle_signals=False))
    deadline = time.monotonic() + 20
    while sidecar.state.proxy is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sidecar.state.proxy is not None

    async def broken() -> None:
        raise RuntimeError("sender crashed")

    runtime.supervise(asyncio.create_task(broken()), "kafka-send")
    assert await asyncio.wait_for(serving, 20) == 1
    assert sidecar.state.readiness().ready is False


async def test_requests_past_the_drain_timeout_are_cut_and_the_sidecar_still_exits(
        broker: Broker, echo_upstream: str) -> None:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("cut"),
                       upstream=echo_upstream, env={"REDRIVE_DRAIN_TIMEOUT_SECONDS": "1"})
    try:
        async with aiohttp.ClientSession() as s:
            async def slow() -> int:
                async with s.get(sc.url + "/slow?seconds=20") as r:
                    return r.status

            task = asyncio.create_task(slow())
            await asyncio.sleep(0.5)
            started = time.monotonic()
            sc.process.signal(signal.SIGTERM)
            code = await asyncio.to_thread(sc.process.wait, 15)
            stopped_after = time.monotonic() - started
            result = await asyncio.gather(task, return_exceptions=True)
    finally:
        sc.process.stop()
    assert code == 0
    assert stopped_after < 10  # the drain timeout (1 s) plus the flush, not the 20 s request
    assert isinstance(result[0], aiohttp.ClientError)  # cut, never a made-up answer
    assert "drain timeout: cutting requests still in progress" in \
        [e["message"] for e in sc.logs()]
