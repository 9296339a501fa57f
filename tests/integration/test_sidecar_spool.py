"""The spool end to end: Kafka down or frozen, the sidecar SIGKILLed, a full spool.

The oracle is always the topic itself, read back after the fact: every capture id the
client was told is queued must be there (duplicates allowed and counted, loss never).
Tansu keeps data in memory, so no test restarts a broker that holds records it needs.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.kafka import Broker, read_topic, start_broker, unique_topic
from tests.support.metrics import scrape
from tests.support.procs import ReservedPort, free_port, http_get, python_module, refused_port
from tests.support.sidecar import Sidecar, start_sidecar, unused_port_url, wait_for_log

SIGKILL_ROUNDS = int(os.environ.get("REDRIVE_SIGKILL_ROUNDS", "3"))


async def post_many(sc: Sidecar, n: int, concurrency: int = 16,
                    stop: asyncio.Event | None = None,
                    answers: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """POST n requests (concurrency at a time); return the JSON answers that arrived
    (also appended to ``answers`` as they arrive, when given)."""
    answers = [] if answers is None else answers
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        async def one(i: int) -> None:
            if stop is not None and stop.is_set():
                return
            async with sem:
                if stop is not None and stop.is_set():
                    return
                try:
                    async with s.post(sc.url + f"/api/orders/{i}", data=b'{"n": %d}' % i) as r:
                        answers.append(await r.json())
                except (aiohttp.ClientError, TimeoutError):
                    pass  # the sidecar died mid-request: no answer, no promise

        await asyncio.gather(*(one(i) for i in range(n)))
    return answers


def queued_ids(answers: list[dict[str, Any]]) -> set[str]:
    return {a["id"] for a in answers if a.get("queued") is True}


async def topic_ids(bootstrap: str, topic: str, want: set[str]) -> tuple[set[str], int]:
    """The capture ids on ``topic`` (and how many duplicates), read until every id in
    ``want`` is there or 30 s passed. Duplicates are allowed (at least once) and must not
    end the reading early."""
    records = await read_topic(bootstrap, topic, keys={i.encode() for i in want}, timeout=30)
    keys = [k.decode() for k, _, _ in records if k is not None]
    return set(keys), len(keys) - len(set(keys))


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    d = tmp_path / "spool"
    d.mkdir()
    return d


@pytest.fixture
def late_broker() -> Iterator[ReservedPort]:
    """A port for a broker that the test starts only later; refused until then."""
    held = ReservedPort()
    yield held
    held.release()


async def test_with_kafka_down_at_start_captures_are_spooled_then_drained(
        spool_dir: Path, late_broker: ReservedPort) -> None:
    topic = unique_topic("down")
    sc = start_sidecar(bootstrap=f"127.0.0.1:{late_broker.port}", topic=topic,
                       upstream=unused_port_url(), wait_kafka=False,
                       env={"REDRIVE_SPOOL_DIR": str(spool_dir)})
    broker: Broker | None = None
    try:
        answers = await post_many(sc, 200)
        assert len(answers) == 200 and all(a["queued"] is True for a in answers)
        metrics = scrape(sc.admin)
        assert metrics['redrive_sidecar_captures_total{result="spooled"}'] == 200
        assert metrics['redrive_sidecar_captures_total{result="lost"}'] == 0
        status, body = http_get(sc.admin + "/readyz")
        assert status == 200 and "spooling" in body
        broker = start_broker(late_broker.release())
        ids, _ = await topic_ids(broker.bootstrap, topic, queued_ids(answers))
        assert queued_ids(answers) <= ids
        await asyncio.sleep(1.5)  # gauges refresh every 0.5 s
        metrics = scrape(sc.admin)
        assert metrics["redrive_sidecar_spool_records"] == 0
        assert metrics["redrive_sidecar_spool_drained_records_total"] >= 200
    finally:
        sc.process.stop()
        if broker is not None:
            broker.process.stop()


async def test_kafka_freezing_mid_load_loses_nothing(spool_dir: Path) -> None:
    broker = start_broker()
    topic = unique_topic("freeze")
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=topic, upstream=unused_port_url(),
                       env={"REDRIVE_SPOOL_DIR": str(spool_dir),
                            "REDRIVE_PUBLISH_TIMEOUT_SECONDS": "0.5"})
    try:
        # Load before, during and after the freeze (a fixed count could finish before it).
        stop = asyncio.Event()
        load = asyncio.create_task(post_many(sc, 20_000, concurrency=32, stop=stop))
        await asyncio.sleep(0.4)
        broker.process.signal(signal.SIGSTOP)  # Kafka stops answering, keeps its data
        await asyncio.sleep(1.5)
        broker.process.signal(signal.SIGCONT)
        await asyncio.sleep(0.5)
        stop.set()
        answers = await load
        assert 0 < len(answers) < 20_000
        acked = queued_ids(answers)
        assert len(acked) == len(answers)
        metrics = scrape(sc.admin)
        assert metrics['redrive_sidecar_captures_total{result="spooled"}'] > 0
        assert metrics['redrive_sidecar_captures_total{result="lost"}'] == 0
        ids, _ = await topic_ids(broker.bootstrap, topic, acked)
        missing = acked - ids
        assert not missing, f"{len(missing)} acknowledged captures missing from Kafka"
    finally:
        broker.process.signal(signal.SIGCONT)
        sc.process.stop()
        broker.process.stop()


@pytest.mark.parametrize("round_no", range(SIGKILL_ROUNDS))
async def test_sigkill_with_a_full_spool_loses_no_acknowledged_capture(
        spool_dir: Path, late_broker: ReservedPort, round_no: int) -> None:
    topic = unique_topic("kill")
    env = {"REDRIVE_SPOOL_DIR": str(spool_dir)}
    sc = start_sidecar(bootstrap=f"127.0.0.1:{late_broker.port}", topic=topic,
                       upstream=unused_port_url(), wait_kafka=False, env=env)
    stop = asyncio.Event()
    answers: list[dict[str, Any]] = []
    load = asyncio.create_task(post_many(sc, 6000, concurrency=32, stop=stop, answers=answers))
    # Kill at a different point of the load each round, always with requests in flight.
    kill_after = random.Random(round_no).randrange(200, 3000)
    for _ in range(600):
        if len(answers) >= kill_after or load.done():
            break
        await asyncio.sleep(0.01)
    assert not load.done(), "the load finished before the kill"
    sc.process.signal(signal.SIGKILL)
    stop.set()
    await load
    sc.process.stop()
    acked = queued_ids(answers)
    assert len(acked) > 50, "the load should have been answered for a while"

    broker = start_broker(late_broker.release())
    again = start_sidecar(bootstrap=broker.bootstrap, topic=topic, upstream=unused_port_url(),
                          env=env)
    try:
        ids, dupes = await topic_ids(broker.bootstrap, topic, acked)
        missing = acked - ids
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged captures lost"
        print(f"round {round_no}: {len(acked)} acknowledged, all in Kafka, {dupes} duplicates")
    finally:
        again.process.stop()
        broker.process.stop()


async def test_a_full_spool_answers_queued_false_and_keeps_serving(spool_dir: Path) -> None:
    sc = start_sidecar(bootstrap=f"127.0.0.1:{refused_port()}", topic=unique_topic("full"),
                       upstream=unused_port_url(), wait_kafka=False,
                       env={"REDRIVE_SPOOL_DIR": str(spool_dir),
                            "REDRIVE_SPOOL_MAX_BYTES": "20000"})
    try:
        answers = await post_many(sc, 60, concurrency=4)
        assert len(answers) == 60
        queued = [a for a in answers if a["queued"]]
        refused = [a for a in answers if not a["queued"]]
        assert queued and refused
        metrics = scrape(sc.admin)
        assert metrics['redrive_sidecar_captures_total{result="lost"}'] == len(refused)
        assert metrics['redrive_sidecar_captures_total{result="spooled"}'] == len(queued)
        status, _ = http_get(sc.admin + "/readyz")
        assert status == 200
    finally:
        sc.process.stop()
    assert any(e.get("message") == "record could not be spooled" for e in sc.logs())


@pytest.mark.parametrize("make_bad", ["missing", "a_file", "read_only"])
def test_an_unusable_spool_directory_stops_the_start_with_exit_2(
        tmp_path: Path, make_bad: str) -> None:
    path = tmp_path / "spool"
    if make_bad == "a_file":
        path.write_text("not a directory")
    elif make_bad == "read_only":
        path.mkdir()
        os.chmod(path, 0o500)
        if os.geteuid() == 0:
            # root ignores permission bits; a read-only bind is not available here, so
            # use a path below a regular file, which no user can create.
            path = tmp_path / "file" / "spool"
            (tmp_path / "file").write_text("x")
    proc = python_module("sidecar", {"REDRIVE_SPOOL_DIR": str(path),
                                     "REDRIVE_LISTEN_PORT": str(free_port()),
                                     "REDRIVE_ADMIN_PORT": str(free_port())})
    assert proc.wait(timeout=20) == 2
    out = proc.output()
    assert "REDRIVE_SPOOL_DIR" in out and "Traceback" not in out


async def test_sigterm_drains_the_spool_when_kafka_is_back(
        spool_dir: Path, late_broker: ReservedPort) -> None:
    topic = unique_topic("termdrain")
    sc = start_sidecar(bootstrap=f"127.0.0.1:{late_broker.port}", topic=topic,
                       upstream=unused_port_url(), wait_kafka=False,
                       env={"REDRIVE_SPOOL_DIR": str(spool_dir)})
    broker: Broker | None = None
    try:
        answers = await post_many(sc, 50)
        broker = start_broker(late_broker.release())
        wait_for_log(sc, "kafka producer connected", timeout=20)
        sc.process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(sc.process.wait, 20) == 0
        ids, _ = await topic_ids(broker.bootstrap, topic, queued_ids(answers))
        assert queued_ids(answers) <= ids
    finally:
        sc.process.stop()
        if broker is not None:
            broker.process.stop()
