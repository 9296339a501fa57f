"""Request status end to end: a real sidecar process, two real worker processes, the real
broker and an app on loopback that is down (hangs) until the test brings it back."""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path

import pytest

from redrive.envelope import encode
from redrive.signing import SIGNATURE_HEADER, SigningKeys
from redrive.status import StatusRecord, decode_any
from redrive.status import encode as encode_status
from tests.support.backend import call
from tests.support.kafka import Broker, read_topic, start_broker, unique_topic
from tests.support.procs import ReservedPort, free_port
from tests.support.sidecar import Sidecar, start_sidecar
from tests.support.status import (
    GatedApp,
    WorkerProc,
    get_json,
    start_worker_process,
    wait_for_state,
)
from tests.support.worker import make_record, produce, target, worker, worker_env

WELL_KNOWN = "/.well-known/redrive/requests/"


async def test_a_capture_reads_queued_then_delivered_or_dead_lettered_on_any_replica(
        broker: Broker, topic: str) -> None:
    async with GatedApp() as app:
        group = f"g-{uuid.uuid4().hex[:8]}"
        # Replays go straight to the app with a long timeout: while the app is down the
        # first replay hangs, so the request stays `queued` until the app is back.
        workers: list[WorkerProc] = await asyncio.gather(*(asyncio.to_thread(
            start_worker_process, broker.bootstrap, topic, app.url, group=group,
            REDRIVE_TARGET_TIMEOUT_SECONDS="60", REDRIVE_DRAIN_TIMEOUT_SECONDS="1")
            for _ in range(2)))
        sc: Sidecar | None = None
        try:
            sc = await asyncio.to_thread(
                start_sidecar, bootstrap=broker.bootstrap, topic=topic, upstream=app.url,
                env={"REDRIVE_FAILURE_RESPONSE": "accept",
                     "REDRIVE_UPSTREAM_TIMEOUT_SECONDS": "0.5",
                     "REDRIVE_STATUS_URL": workers[0].status_url})
            good = await asyncio.to_thread(call, "POST", sc.url + "/api/users", {"n": 1})
            bad = await asyncio.to_thread(call, "POST", sc.url + "/refuse/this", {"n": 2})
            assert good.status == 202 and bad.status == 202
            gid, bid = good.json()["id"], bad.json()["id"]
            assert good.headers["Location"] == WELL_KNOWN + gid
            assert good.json()["status_url"] == WELL_KNOWN + gid
            assert int(good.headers["Retry-After"]) >= 0

            for rid in (gid, bid):
                queued = await asyncio.to_thread(
                    wait_for_state, sc.url + WELL_KNOWN + rid,
                    lambda code, body: code == 200, what=f"{rid} known")
                assert queued["state"] == "queued" and queued["attempts"] == 0
                assert set(queued) == {"id", "state", "attempts", "updated_at", "created_at",
                                       "response"}

            app.up.set()
            delivered = await asyncio.to_thread(
                wait_for_state, sc.url + WELL_KNOWN + gid,
                lambda code, body: code == 200 and body["state"] == "delivered",
                what="delivered")
            assert delivered["response"] == {"status": 201} and delivered["attempts"] == 1
            dead = await asyncio.to_thread(
                wait_for_state, sc.url + WELL_KNOWN + bid,
                lambda code, body: code == 200 and body["state"] == "dead_lettered",
                what="dead_lettered")
            assert dead["reason"] == "permanent" and dead["response"] == {"status": 400}

            # Every replica answers the same for every id, straight from its own view.
            for rid, want in ((gid, delivered), (bid, dead)):
                for w in workers:
                    answer = await asyncio.to_thread(
                        wait_for_state, w.status_url + "/v1/requests/" + rid,
                        lambda code, body, want=want: code == 200
                        and body["state"] == want["state"], what="replica agrees")
                    assert answer == want

            code, body, _ = await asyncio.to_thread(
                get_json, workers[1].status_url + "/v1/requests/" + str(uuid.uuid4()))
            assert code == 404 and body["error"] == "unknown_request"
            code, body, _ = await asyncio.to_thread(
                get_json, workers[1].status_url + "/v1/requests/not-an-id")
            assert code == 400 and body["error"] == "malformed_id"
            code, body, _ = await asyncio.to_thread(get_json, sc.url + WELL_KNOWN + "nope")
            assert code == 400
            metrics = await asyncio.to_thread(
                call, "GET", f"http://127.0.0.1:{workers[1].admin_port}/metrics")
            assert b"redrive_retry_worker_status_tracked_requests 2.0" in metrics.body
        finally:
            if sc is not None:
                sc.process.stop()
            for w in workers:
                w.process.stop()


@pytest.mark.parametrize("status_url", ["", "http://127.0.0.1:1"])
def test_the_well_known_path_answers_503_json_when_status_is_unset_or_unreachable(
        broker: Broker, topic: str, status_url: str) -> None:
    env = {"REDRIVE_STATUS_URL": status_url} if status_url else {}
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=topic,
                       upstream="http://127.0.0.1:1", env=env)
    try:
        code, body, headers = get_json(sc.url + WELL_KNOWN + str(uuid.uuid4()))
        assert code == 503 and body["error"] == "status_unavailable"
        assert headers["Retry-After"] and headers["Content-Type"].startswith("application/json")
        assert ("REDRIVE_STATUS_URL" in body["message"]) == (not status_url)
    finally:
        sc.process.stop()


async def test_with_signing_on_status_records_are_signed_and_unsigned_ones_ignored(
        broker: Broker, topic: str) -> None:
    key = "k1:" + base64.b64encode(b"s" * 32).decode()
    keys = SigningKeys.parse(key)
    record, forged = make_record(), make_record()
    async with target() as t:
        port = free_port()
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_SIGNING_KEY=key,
                         REDRIVE_STATUS_PORT=str(port), REDRIVE_STATUS_HOST="127.0.0.1")
        async with worker(env):
            value = encode(record)
            await produce(broker.bootstrap, topic, [value], keys=[record.id.encode()],
                          headers=[("redrive-version", b"1"),
                                   (SIGNATURE_HEADER, keys.sign(value).encode())])
            # Someone without the key claims a request was delivered: ignored.
            fake = encode_status(StatusRecord(id=forged.id, state="delivered", attempts=1,
                                              updated_at=1.0, captured_at=1.0, response=200))
            await produce(broker.bootstrap, f"{topic}.status", [fake],
                          keys=[forged.id.encode()], headers=[])
            url = f"http://127.0.0.1:{port}/v1/requests/"
            await asyncio.to_thread(wait_for_state, url + record.id,
                                    lambda code, body: code == 200
                                    and body["state"] == "delivered")
            code, _, _ = await asyncio.to_thread(get_json, url + forged.id)
            assert code == 404
    written = await read_topic(broker.bootstrap, f"{topic}.status", keys=[record.id.encode()])
    mine = [h for k, _, h in written if k == record.id.encode()]
    assert mine and all(h[SIGNATURE_HEADER].startswith(b"v1;kid=k1;") for h in mine)


async def test_a_capture_spooled_while_kafka_is_down_reads_queued_and_reaches_the_topic(
        tmp_path: Path) -> None:
    topic = unique_topic("spooled")
    late = ReservedPort()
    broker = None
    spool = tmp_path / "spool"
    spool.mkdir()
    w = await asyncio.to_thread(start_worker_process, f"127.0.0.1:{late.port}", topic,
                                "http://127.0.0.1:1", group=f"g-{topic}")
    sc = await asyncio.to_thread(
        start_sidecar, bootstrap=f"127.0.0.1:{late.port}", topic=topic,
        upstream="http://127.0.0.1:1", wait_kafka=False,
        env={"REDRIVE_SPOOL_DIR": str(spool), "REDRIVE_STATUS_URL": w.status_url})
    try:
        answer = await asyncio.to_thread(call, "POST", sc.url + "/api/users", {"n": 1})
        assert answer.status == 503 and answer.json()["queued"] is True
        rid = answer.json()["id"]
        # Kafka is down: the worker knows nothing yet; the sidecar answers from memory.
        body = await asyncio.to_thread(
            wait_for_state, sc.url + WELL_KNOWN + rid,
            lambda code, body: code == 200 and body["state"] == "queued", what="queued")
        assert body["attempts"] == 0
        broker = await asyncio.to_thread(start_broker, late.release())
        # Kafka is back: the spool drains and the sidecar writes the queued state again.
        status = await read_topic(broker.bootstrap, f"{topic}.status", expect=1, timeout=30)
        assert rid in {r.id for _, value, _ in status for r in decode_any(value)}
        await asyncio.to_thread(
            wait_for_state, f"{w.status_url}/v1/requests/{rid}",
            lambda code, body: code == 200, what="the worker knows the request")
    finally:
        sc.process.stop()
        w.process.stop()
        if broker is not None:
            broker.process.stop()
        late.release()
