"""Records that fit: a capture larger than REDRIVE_MAX_RECORD_BYTES travels in chunks.

A real sidecar process captures a 3 MB binary body; the real broker holds it as ordered
chunks, none over the limit as Kafka counts it; the worker reassembles it, fails once
(so the record also goes through the retry topic, chunked again by the worker) and
replays it to a real target, which must receive the body byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os

import aiohttp
from aiohttp import web
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from redrive.chunks import CHUNK_HEADER
from tests.support.cli import acli
from tests.support.kafka import Broker, read_topic
from tests.support.sidecar import start_sidecar, unused_port_url
from tests.support.worker import (
    make_record,
    produce_records,
    target,
    wait_until,
    worker,
    worker_env,
)

LIMIT = 1_000_000


def kafka_size(key: bytes | None, value: bytes, headers: dict[str, bytes]) -> int:
    """aiokafka's own upper bound for a record alone in a batch (what the broker limits)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(
        key, value, list(headers.items())))


async def test_a_3_mb_binary_body_is_chunked_reassembled_and_replayed_byte_exact(
        broker: Broker, topic: str) -> None:
    body = os.urandom(3 * 1024 * 1024)
    sc = await asyncio.to_thread(
        start_sidecar, bootstrap=broker.bootstrap, topic=topic, upstream=unused_port_url(),
        env={"REDRIVE_MAX_BODY_BYTES": str(4 * 1024 * 1024),
             "REDRIVE_MAX_RECORD_BYTES": str(LIMIT)})
    try:
        async with aiohttp.ClientSession() as s, s.post(
                sc.url + "/api/upload", data=io.BytesIO(body),
                headers={"Content-Type": "application/octet-stream"}) as resp:
            answer = await resp.json()
            assert resp.status == 503 and answer["queued"] is True, answer
            rid = answer["id"]
    finally:
        sc.process.stop()

    records = await read_topic(broker.bootstrap, topic, idle=2.0)
    assert len(records) >= 4  # ~4 MB of base64 in JSON: several chunks
    assert {k for k, _, _ in records} == {rid.encode()}
    assert [h[CHUNK_HEADER] for _, _, h in records] == [
        f"{i}/{len(records)}".encode() for i in range(len(records))]
    assert max(kafka_size(k, v, h) for k, v, h in records) <= LIMIT

    async def fail_once(_: web.Request, count: int) -> web.StreamResponse:
        return web.Response(status=503 if count == 1 else 200)

    async with target(fail_once) as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_MAX_RECORD_BYTES=str(LIMIT))
        async with worker(env):
            await t.wait_for(lambda: len(t.by_replay_id().get(rid, [])) >= 2, timeout=40)
    first, second = t.by_replay_id()[rid][:2]
    assert first.body == body and second.body == body
    assert second.headers["X-Redrive-Attempt"] == "2"
    retried = await read_topic(broker.bootstrap, f"{topic}.retry.100ms", idle=2.0)
    assert len(retried) >= 4
    assert max(kafka_size(k, v, h) for k, v, h in retried) <= LIMIT


async def test_a_large_dead_letter_is_chunked_and_the_cli_shows_it_whole(
        broker: Broker, topic: str) -> None:
    body = os.urandom(600_000)
    record = make_record(body=body, method="PUT")
    await produce_records(broker.bootstrap, topic, [record])  # one record of ~0.8 MB
    limit = 200_000  # the worker's: its dead letter must travel in chunks

    async def not_found(_: web.Request, __: int) -> web.StreamResponse:
        return web.Response(status=404)

    async with target(not_found) as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_MAX_RECORD_BYTES=str(limit))
        async with worker(env) as w:
            await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                              reason="permanent") == 1, what="dead letter")
    letters = await read_topic(broker.bootstrap, f"{topic}.dlq", idle=2.0)
    assert len(letters) >= 4
    assert max(kafka_size(k, v, h) for k, v, h in letters) <= limit
    env = {"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "REDRIVE_TOPIC": topic,
           "REDRIVE_DLQ_TOPIC": f"{topic}.dlq"}
    shown = await acli("dlq", "show", record.id, env=env)
    assert shown.returncode == 0, shown.stderr
    letter = json.loads(shown.stdout.split("\n# ")[0])  # then a "# topic partition" line
    assert base64.b64decode(letter["body"]) == body
    listed = await acli("dlq", "list", env=env)
    assert record.id in listed.stdout and "permanent" in listed.stdout
