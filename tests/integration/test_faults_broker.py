"""The broker killed and restarted mid-load, and frozen (SIGSTOP) and thawed, in front of a
real sidecar with a spool. Reports acknowledged, delivered, duplicated and quarantined
captures; lost must be 0.

The restarted broker has fresh storage (Tansu keeps data in memory), so what the first
broker acknowledged went with it, as it would with a Kafka that lost its disk: the oracle
is every capture the sidecar spooled plus every capture the new broker acknowledged (from
the sidecar's log lines), all of which must be readable on the new broker.
"""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import datetime
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


def log_time(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()


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
        restarted_at = time.time()
        broker = start_broker(port)  # same address, fresh storage
        await running
        await wait_metric(sc, GAUGE, 1.0, within=10)
        await wait_metric(sc, "redrive_sidecar_spool_records", 0.0, within=30)
        acked = {str(a["id"]) for a in answers if a["queued"] is True}
        spooled, published_later = set(), set()
        for entry in sc.logs():
            if entry.get("message") != "request captured":
                continue
            if entry["result"] == "spooled":
                spooled.add(entry["capture_id"])
            elif entry["result"] == "published" and log_time(entry) > restarted_at:
                published_later.add(entry["capture_id"])  # acknowledged by the new broker
        must = spooled | published_later
        records = await read_topic(broker.bootstrap, topic, keys={i.encode() for i in must},
                                   timeout=30)
        keys = [k.decode() for k, _, _ in records if k is not None]
        metrics = scrape(sc.admin)
        quarantined = sum(v for k, v in metrics.items() if "quarantined_records" in k)
        lost = must - set(keys)
        print(f"acknowledged {len(acked)} of {len(answers)}, spooled {len(spooled)}, "
              f"published to the new broker {len(published_later)}, delivered "
              f"{len(must - lost)}, duplicated {len(keys) - len(set(keys))}, quarantined "
              f"{quarantined:g}, lost {len(lost)}")
        assert len(answers) == 3000 and len(acked) == 3000
        assert spooled, "the outage should have spooled captures"
        assert metrics[LOST] == 0 and quarantined == 0
        assert not lost
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
