"""Signed and sealed records end to end: a real sidecar process, the real broker, the
worker, and a real aiohttp target on loopback."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
from aiohttp import web

from redrive.envelope import KAFKA_HEADERS, encode
from redrive.signing import SIGNATURE_HEADER, SigningKeys, Verdict
from tests.support.cli import acli
from tests.support.kafka import Broker, read_topic
from tests.support.sidecar import start_sidecar, unused_port_url
from tests.support.worker import (
    make_record,
    produce,
    target,
    wait_until,
    worker,
    worker_env,
)

OLD = "old:" + base64.b64encode(b"o" * 32).decode()
NEW = "new:" + base64.b64encode(b"n" * 32).decode()
SEAL = "s1:" + base64.b64encode(b"k" * 32).decode()


async def test_a_signed_capture_is_replayed_with_its_sealed_authorization(
        broker: Broker, topic: str) -> None:
    keys = {"REDRIVE_SIGNING_KEY": OLD, "REDRIVE_SEAL_KEY": SEAL}
    sc = await asyncio.to_thread(start_sidecar, bootstrap=broker.bootstrap, topic=topic,
                                 upstream=unused_port_url(), env=keys)
    try:
        async with aiohttp.ClientSession() as s, s.post(
                sc.url + "/api/pay", data=b'{"n":1}',
                headers={"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 503
            rid = resp.headers["X-Redrive-Id"]
    finally:
        sc.process.stop()
    [(_, raw, headers)] = await read_topic(broker.bootstrap, topic, expect=1)
    assert b"s3cret" not in raw
    record = json.loads(raw)
    assert record["redacted_headers"] == ["authorization"] and record["sealed_headers"]
    assert headers[SIGNATURE_HEADER].startswith(b"v1;kid=old;")
    async with target() as t:
        # Rotation: the worker signs with "new" and still verifies "old".
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_SIGNING_KEY=f"{NEW},{OLD}",
                         REDRIVE_SEAL_KEY=SEAL)
        async with worker(env):
            await t.wait_for(lambda: rid in t.by_replay_id())
        [seen] = t.by_replay_id()[rid]
        assert seen.headers["Authorization"] == "Bearer s3cret"


async def test_unsigned_and_forged_records_are_dead_lettered_never_replayed(
        broker: Broker, topic: str) -> None:
    unsigned, forged, good = make_record(), make_record(), make_record()
    other = SigningKeys.parse(base64.b64encode(b"x" * 32).decode())
    mine = SigningKeys.parse(NEW)
    await produce(broker.bootstrap, topic, [encode(unsigned)], keys=[unsigned.id.encode()])
    await produce(broker.bootstrap, topic, [encode(forged)], keys=[forged.id.encode()],
                  headers=[*KAFKA_HEADERS,
                           (SIGNATURE_HEADER, other.sign(encode(forged)).encode())])
    await produce(broker.bootstrap, topic, [encode(good)], keys=[good.id.encode()],
                  headers=[*KAFKA_HEADERS, (SIGNATURE_HEADER, mine.sign(encode(good)).encode())])
    async with target() as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_SIGNING_KEY=NEW)
        async with worker(env) as w:
            await t.wait_for(lambda: good.id in t.by_replay_id())
            await wait_until(lambda: w.metric("redrive_retry_worker_rejected_records_total",
                                              reason="forged") == 1
                             and w.metric("redrive_retry_worker_rejected_records_total",
                                          reason="unsigned") == 1, what="rejections")
        assert set(t.by_replay_id()) == {good.id}
    letters = await read_topic(broker.bootstrap, f"{topic}.dlq", expect=2)
    reasons = {json.loads(v)["id"]: json.loads(v)["dead_letter"]["reason"]
               for _, v, _ in letters}
    assert reasons == {unsigned.id: "unsigned", forged.id: "forged"}
    # Rejected letters are published unsigned: they never gain a signature they lacked.
    assert all(SIGNATURE_HEADER not in h for _, _, h in letters)


async def test_the_cli_re_signs_what_it_replays_and_never_replays_a_forged_record(
        broker: Broker, topic: str) -> None:
    refused, forged = make_record(), make_record()
    mine = SigningKeys.parse(NEW)
    other = SigningKeys.parse(base64.b64encode(b"x" * 32).decode())
    await produce(broker.bootstrap, topic, [encode(refused)], keys=[refused.id.encode()],
                  headers=[*KAFKA_HEADERS,
                           (SIGNATURE_HEADER, mine.sign(encode(refused)).encode())])
    await produce(broker.bootstrap, topic, [encode(forged)], keys=[forged.id.encode()],
                  headers=[*KAFKA_HEADERS,
                           (SIGNATURE_HEADER, other.sign(encode(forged)).encode())])

    async def bad_request(_: web.Request, __: int) -> web.StreamResponse:
        return web.Response(status=400)

    async with target(bad_request) as t:
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_SIGNING_KEY=NEW)
        async with worker(env) as w:
            await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                              reason="permanent") == 1
                             and w.metric("redrive_retry_worker_rejected_records_total",
                                          reason="forged") == 1, what="dead letters")
    cli_env = {"REDRIVE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "REDRIVE_TOPIC": topic,
               "REDRIVE_DLQ_TOPIC": f"{topic}.dlq", "REDRIVE_SIGNING_KEY": NEW}
    forged_only = await acli("dlq", "replay", "--id", forged.id, env=cli_env)
    assert forged_only.returncode == 1
    assert f"skipping {forged.id}: a record refused as forged" in forged_only.stderr
    every = await acli("dlq", "replay", "--all", "--by", "tester", env=cli_env)
    assert every.returncode == 0, every.stderr
    assert "replayed 1 record(s)" in every.stdout

    messages = await read_topic(broker.bootstrap, topic, expect=3)
    back = [(v, h) for _, v, h in messages if json.loads(v).get("redriven_from_dlq")]
    assert len(back) == 1
    value, headers = back[0]
    assert json.loads(value)["id"] == refused.id
    assert mine.verify(value, headers[SIGNATURE_HEADER]) is Verdict.VALID
    assert other.verify(value, headers[SIGNATURE_HEADER]) is Verdict.FORGED
