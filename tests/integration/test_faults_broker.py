"""The broker killed and restarted mid-load, and frozen (SIGSTOP) and thawed, in front of a
real sidecar with a spool. Reports acknowledged, delivered, duplicated and quarantined
captures; lost must be 0.

The restarted broker has fresh storage (Tansu keeps data in memory), so what the first
broker acknowledged went with it, as it would with a Kafka that lost its disk. The
oracle for the kill is the sidecar's accounting (every capture acknowledged by a broker
or fsync'd, every spooled one acknowledged by the new broker): Tansu 0.x, restarted while
produce requests were in flight, acknowledges later records that no consumer can fetch
(its end offsets move, fetches from 0 return nothing), so reading back is only reported.
The freeze test reads every acknowledged capture back.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.kafka import Broker, read_topic, start_broker, unique_topic
from tests.support.metrics import scrape
from tests.support.procs import free_port
from tests.support.sidecar import Sidecar, start_sidecar, unused_port_url

GAUGE = "redrive_sidecar_kafka_connected"
LOST = 'redrive_sidecar_captures_total{result="lost"}'


async def load(sc: Sidecar, n: int, answers: list[dict[str, Any]], concurrency: int = 16,
               pace: float = 0.002) -> None:
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def one(i: int) -> None:
            async with sem:
                async with s.post(sc.url + f"/api/orders/{i}", data=b'{"n": 1}') as r:
                    answers.append(await r.json())
                await asyncio.sleep(pace)

        await asyncio.gather(*(one(i) for i in range(n)))


async def wait_metric(sc: Sidecar, name: str, value: float, within: float) -> None:
    for _ in range(int(within / 0.1)):
        if scrape(sc.admin)[name] == value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name} did not become {value} within {within}s")


def results_by_id(sc: Sidecar) -> dict[str, str]:
    return {e["capture_id"]: e["result"] for e in sc.logs()
            if e.get("message") == "request captured"}


async def test_broker_killed_and_restarted_mid_load_loses_nothing_it_was_given(
        tmp_path: Path) -> None:
    port = free_port()
    broker: Broker | None = start_broker(port)
    topic = unique_topic("kill")
    sc = start_sidecar(bootstrap=f"127.0.0.1:{port}", topic=topic, upstream=unused_port_url(),
                       env={"REDRIVE_SPOOL_DIR": str(tmp_path), "REDRIVE_LOG_LEVEL": "info"})
    answers: list[dict[str, Any]] = []
    try:
        running = asyncio.create_task(load(sc, 3000, answers))
        await asyncio.sleep(1.0)
        assert broker is not None
        broker.process.signal(signal.SIGKILL)
        broker.process.stop()
        broker = None
        await wait_metric(sc, GAUGE, 0.0, within=10)
        await asyncio.sleep(1.0)
        broker = start_broker(port)  # same address, fresh storage
        await running
        await wait_metric(sc, GAUGE, 1.0, within=10)
        await wait_metric(sc, "redrive_sidecar_spool_records", 0.0, within=30)
        acked = {str(a["id"]) for a in answers if a["queued"] is True}
        results = results_by_id(sc)
        spooled = {i for i, r in results.items() if r == "spooled"}
        metrics = scrape(sc.admin)
        records = await read_topic(broker.bootstrap, topic, idle=2.0, timeout=10)
        keys = [k.decode() for k, _, _ in records if k is not None]
        quarantined = sum(v for k, v in metrics.items() if "quarantined_records" in k)
        print(f"acknowledged {len(acked)} of {len(answers)}, spooled {len(spooled)} "
              f"(drained {metrics['redrive_sidecar_spool_drained_records_total']:g}), "
              f"readable on the new broker {len(set(keys) & acked)}, duplicated "
              f"{len(keys) - len(set(keys))}, quarantined {quarantined:g}, lost "
              f"{metrics[LOST]:g}")
        assert len(answers) == 3000 and len(acked) == 3000
        assert spooled, "the outage should have spooled captures"
        # Lost: 0. Every capture was acknowledged by a broker or fsync'd in the spool, and
        # the spool gave every record to the new broker (acknowledged) before emptying.
        assert metrics[LOST] == 0
        assert metrics["redrive_sidecar_spool_drained_records_total"] >= len(spooled)
        assert quarantined == 0
    finally:
        sc.process.stop()
        if broker is not None:
            broker.process.stop()


async def test_a_frozen_broker_is_seen_captures_spool_fast_and_drain_after_the_thaw(
        broker: Broker, tmp_path: Path) -> None:
    topic = unique_topic("frozen")
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=topic, upstream=unused_port_url(),
                       env={"REDRIVE_SPOOL_DIR": str(tmp_path)})
    answers: list[dict[str, Any]] = []
    try:
        await wait_metric(sc, GAUGE, 1.0, within=10)
        broker.process.signal(signal.SIGSTOP)
        await wait_metric(sc, GAUGE, 0.0, within=10)
        started = asyncio.get_running_loop().time()
        await load(sc, 500, answers, pace=0)
        took = asyncio.get_running_loop().time() - started
        assert all(a["queued"] for a in answers)
        assert scrape(sc.admin)['redrive_sidecar_captures_total{result="spooled"}'] == 500
        assert took < 10  # no publish timeout per capture (5 s each before)
        broker.process.signal(signal.SIGCONT)
        await wait_metric(sc, GAUGE, 1.0, within=10)
        await wait_metric(sc, "redrive_sidecar_spool_records", 0.0, within=30)
        acked = {str(a["id"]).encode() for a in answers}
        records = await read_topic(broker.bootstrap, topic, keys=acked, timeout=30)
        keys = [k for k, _, _ in records]
        print(f"frozen: acknowledged {len(acked)}, delivered {len(acked & set(keys))}, "
              f"duplicated {len(keys) - len(set(keys))}, spooled in {took:.2f}s")
        assert acked <= set(keys)
    finally:
        broker.process.signal(signal.SIGCONT)
        sc.process.stop()
