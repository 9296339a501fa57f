"""The ``redrive`` console script against a real broker: list, show, replay, tail."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from redrive.envelope import decode
from tests.support.cli import acli, cli
from tests.support.kafka import Broker, read_topic
from tests.support.procs import free_port
from tests.support.worker import (
    make_record,
    produce,
    produce_records,
    target,
    wait_until,
    worker,
    worker_env,
)


async def test_dead_letters_are_listed_shown_and_replayed_back_through_the_worker(
        broker: Broker, topic: str) -> None:
    fixed = False

    async def rejects_until_fixed(_: web.Request, __: int) -> web.StreamResponse:
        return web.Response(status=200 if fixed else 400)

    first = make_record(uri="/api/orders/1", path="/api/orders/1")
    second = make_record(method="PUT", uri="/api/users/7", path="/api/users/7")
    kafka_env = {"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "REDRIVE_TOPIC": topic,
                 "REDRIVE_DLQ_TOPIC": f"{topic}.dlq"}
    async with target(rejects_until_fixed) as t, \
            worker(worker_env(broker.bootstrap, topic, t.url)) as w:
        await produce_records(broker.bootstrap, topic, [first, second])
        await produce(broker.bootstrap, topic, [b"{broken"])
        await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                          reason="permanent") == 2
                         and w.metric("redrive_retry_worker_dead_letters_total",
                                      reason="malformed") == 1)

        listed = await acli("dlq", "list", env=kafka_env)
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.splitlines()
        assert lines[0].split() == ["ID", "AGE", "METHOD", "PATH", "REASON", "ATTEMPTS"]
        rows = {line.split()[0]: line.split() for line in lines[1:]}

        assert rows[first.id][2:] == ["POST", "/api/orders/1", "permanent", "1"]
        assert rows[second.id][2:] == ["PUT", "/api/users/7", "permanent", "1"]
        assert [r[4] for r in rows.values()].count("malformed") == 1

        only = await acli("dlq", "list", "--json", "--filter", "method=put", env=kafka_env)
        assert [json.loads(x)["id"] for x in only.stdout.splitlines()] == [second.id]

        shown = await acli("dlq", "show", first.id[:30], env=kafka_env)
        assert shown.returncode == 0, shown.stderr
        body = json.loads(shown.stdout.split("\n# ")[0])
        assert body["id"] == first.id and body["dead_letter"]["reason"] == "permanent"
        assert body["dead_letter"]["attempts"][0]["status"] == 400

        dry = await acli("dlq", "replay", "--all", "--dry-run", env=kafka_env)
        assert dry.returncode == 0 and "would replay 2 record(s)" in dry.stdout
        assert "cannot be replayed" in dry.stderr
        await asyncio.sleep(0.5)
        assert len(t.seen) == 2

        fixed = True
        one = await acli("dlq", "replay", "--id", first.id, "--by", "tester",
                         "--kafka-bootstrap-servers", broker.bootstrap, env=kafka_env)
        assert one.returncode == 0, one.stderr
        await t.wait_for(lambda: len(t.seen) == 3)
        assert t.seen[2].headers["X-Redrive-Replay"] == first.id
        assert t.seen[2].headers["X-Redrive-Attempt"] == "1"
        assert t.seen[2].headers["Idempotency-Key"] == first.idempotency_key

        after = await acli("dlq", "list", env=kafka_env)
        assert first.id not in after.stdout and second.id in after.stdout

        rest = await acli("dlq", "replay", "--all", "--rate", "5", env=kafka_env)
        assert rest.returncode == 0 and "replayed 1 record(s)" in rest.stdout
        await t.wait_for(lambda: len(t.seen) == 4)
        await wait_until(lambda: w.metric("redrive_retry_worker_replays_total",
                                          outcome="success") == 2)

    remaining = cli("dlq", "list", "--json", env=kafka_env)
    assert [json.loads(x)["reason"] for x in remaining.stdout.splitlines()] == ["malformed"]
    requeued = [decode(v) for _, v, _ in await read_topic(broker.bootstrap, topic, expect=5)
                if v != b"{broken"]
    replayed = [r for r in requeued if "redriven_from_dlq" in r.extra]
    assert {r.id for r in replayed} == {first.id, second.id}
    assert all(r.attempt == 0 and r.dead_letter is None for r in replayed)
    note = next(r for r in replayed if r.id == first.id).extra["redriven_from_dlq"]
    assert note["by"] == "tester" and note["reason"] == "permanent"

    tail = await acli("tail", "--from-beginning", "--max-records", "5", env=kafka_env)
    assert tail.returncode == 0, tail.stderr
    assert len(tail.stdout.splitlines()) == 5
    assert f"{first.id}  POST /api/orders/1  attempt=0  connect_refused" in tail.stdout
    assert "<not a record" in tail.stdout


def test_an_unknown_id_is_a_clear_error(broker: Broker, topic: str) -> None:
    result = cli("dlq", "show", "no-such-id", "--kafka-bootstrap-servers", broker.bootstrap,
                 "--dlq-topic", f"{topic}.dlq", env={})
    assert result.returncode == 1
    assert "no dead letter with id 'no-such-id'" in result.stderr


def test_unreachable_kafka_fails_fast_with_a_clear_message() -> None:
    result = cli("dlq", "list", env={
        "REDRIVE_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "REDRIVE_KAFKA_TIMEOUT_SECONDS": "2"})
    assert result.returncode == 1
    assert result.stderr.startswith("redrive: error: cannot reach Kafka at 127.0.0.1:")
    assert result.stderr.count("\n") == 1


def test_bad_flags_exit_2() -> None:
    assert cli("dlq", "replay", env={}).returncode == 2
    assert cli("dlq", "list", "--filter", "colour=red", env={}).returncode == 2
    bad = cli("dlq", "list", "--kafka-bootstrap-servers", "nohostport", env={})
    assert bad.returncode == 2 and "REDRIVE_KAFKA_BOOTSTRAP_SERVERS" in bad.stderr
    assert cli("--help", env={}).returncode == 0


async def test_dlq_replay_streams_the_dlq_and_replays_exactly_the_chosen_letters(
        broker: Broker, topic: str) -> None:
    """80 dead letters of 400 KB bodies (43 MB on the DLQ) plus 3 small ones: a filtered
    replay puts back exactly the small ones, ``--all`` the rest, byte for byte; the
    command's Python heap peak stays below the DLQ's size: it streams. (Measured: about
    28 MB here, of which about 18 MB are the consumer's fetch buffers, as for `dlq list`;
    loading the DLQ whole peaked at 62 MB for half as many letters.)"""
    import io
    import os
    import time
    import tracemalloc

    from aiokafka import AIOKafkaProducer

    from redrive import cli as redrive_cli
    from redrive.deadletter import dead_letter
    from redrive.envelope import KAFKA_HEADERS, encode
    from redrive.kafka import key_partitioner

    big = [make_record(uri=f"/api/big/{i}", path=f"/api/big/{i}", body=os.urandom(400_000))
           for i in range(80)]
    small = [make_record(uri=f"/api/small/{i}", path=f"/api/small/{i}") for i in range(3)]
    letters = [dead_letter(r, "max_attempts", [], at=time.time()) for r in big + small]
    # Written as the worker writes them: partitioned by redrive's own key partitioner, so
    # the replay markers the CLI appends share a partition with their letters.
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                partitioner=key_partitioner, max_request_size=2_000_000)
    await producer.start()
    try:
        for x in letters:
            await producer.send_and_wait(f"{topic}.dlq", encode(x), key=x.id.encode(),
                                         headers=list(KAFKA_HEADERS))
    finally:
        await producer.stop()
    env = {"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "REDRIVE_TOPIC": topic,
           "REDRIVE_DLQ_TOPIC": f"{topic}.dlq"}

    def run(*argv: str) -> tuple[int, str, int]:
        out = io.StringIO()
        tracemalloc.start()
        try:
            code = redrive_cli.main(list(argv), env, out)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return code, out.getvalue(), peak

    code, out, _ = await asyncio.to_thread(run, "dlq", "replay", "--all", "--by", "t",
                                           "--filter", "path=/api/small/*")
    assert code == 0 and "replayed 3 record(s)" in out, out
    code, out, peak = await asyncio.to_thread(run, "dlq", "replay", "--all", "--by", "t")
    assert code == 0 and "replayed 80 record(s)" in out, out
    print(f"\ndlq replay --all of 80 x 400 KB letters: heap peak {peak / 1e6:.1f} MB")
    assert peak < sum(len(encode(x)) for x in letters), peak  # 43 MB

    requeued = [decode(v) for _, v, _ in await read_topic(broker.bootstrap, topic,
                                                          expect=83, timeout=30)]
    assert sorted(r.id for r in requeued) == sorted(r.id for r in big + small)
    bodies = {r.id: r.body for r in big + small}
    assert all(r.body == bodies[r.id] and r.attempt == 0 for r in requeued)
