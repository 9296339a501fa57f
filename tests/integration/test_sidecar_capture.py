"""Every failure kind is captured exactly once, with the right fields, and answered honestly."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from redrive import envelope
from tests.support.kafka import Broker, read_topic, unique_topic
from tests.support.metrics import scrape
from tests.support.servers import serve
from tests.support.sidecar import (
    RawServer,
    Sidecar,
    full_backlog_listener,
    start_sidecar,
    unused_port_url,
)


async def send(sc: Sidecar, method: str, path: str, **kw: Any) -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as s, s.request(method, sc.url + path, **kw) as r:
        return r.status, await r.json(content_type=None), r.headers


async def records(broker: Broker, topic: str, expect: int) -> list[envelope.Record]:
    raw = await read_topic(broker.bootstrap, topic, expect=expect, timeout=10)
    return [envelope.decode(v) for _, v, _ in raw]


@pytest.fixture
def refused_sidecar(broker: Broker) -> Iterator[Sidecar]:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("cap"),
                       upstream=unused_port_url())
    yield sc
    sc.process.stop()


async def test_a_refused_connection_is_captured_once_with_every_field(
        broker: Broker, refused_sidecar: Sidecar) -> None:
    sc = refused_sidecar
    status, body, headers = await send(
        sc, "POST", "/api/users?source=test&n=%C3%A9",
        data=b'{"name": "Ada"}', headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer secret",
                                          "Cookie": "session=abc", "X-Trace": "t1"})
    assert status == 503
    assert headers["Content-Type"] == "application/json"
    assert headers["Retry-After"] == "5"
    assert body["queued"] is True and body["error"] and body["message"]
    assert headers["X-Redrive-Id"] == body["id"]

    [rec] = await records(broker, sc.topic, expect=1)
    raw = await read_topic(broker.bootstrap, sc.topic, expect=1)
    key, _, kafka_headers = raw[0]
    assert key == rec.id.encode() and rec.id == body["id"]
    assert kafka_headers == {"redrive-version": b"1"}
    assert rec.method == "POST"
    assert rec.uri == "/api/users?source=test&n=%C3%A9"
    assert rec.path == "/api/users" and rec.query_string == "source=test&n=%C3%A9"
    assert rec.body == b'{"name": "Ada"}'
    assert rec.headers["content-type"] == "application/json"
    assert rec.headers["x-trace"] == "t1"
    assert "authorization" not in rec.headers and "cookie" not in rec.headers
    assert rec.redacted_headers == ("authorization", "cookie")
    assert rec.sealed_headers is None
    assert rec.error.kind == "connect_refused" and rec.error.status is None
    assert rec.error.reached_upstream is False
    assert rec.error_reason
    assert rec.remote_addr == "127.0.0.1"
    assert rec.backend_url.startswith("http://127.0.0.1:")
    assert rec.idempotency_key == rec.id  # generated, and sent upstream before the attempt
    assert rec.attempt == 0
    assert (rec.source.pod, rec.source.namespace) == ("sidecar-test-0", "tests")
    metrics = scrape(sc.admin)
    assert metrics['redrive_sidecar_captures_total{result="published"}'] == 1
    assert metrics['redrive_sidecar_upstream_failures_total{kind="connect_refused"}'] == 1
    assert metrics['redrive_sidecar_requests_total{outcome="queued"}'] == 1


async def test_the_clients_idempotency_key_is_kept_in_the_record(
        broker: Broker, refused_sidecar: Sidecar) -> None:
    _, body, _ = await send(refused_sidecar, "PUT", "/api/users/1", data=b"x",
                            headers={"Idempotency-Key": "client-chosen"})
    [rec] = await records(broker, refused_sidecar.topic, expect=1)
    assert rec.idempotency_key == "client-chosen" and rec.id == body["id"]


async def test_a_binary_body_is_captured_byte_for_byte(
        broker: Broker, refused_sidecar: Sidecar) -> None:
    payload = bytes(range(256)) * 10
    await send(refused_sidecar, "POST", "/upload", data=payload,
               headers={"Content-Type": "application/octet-stream"})
    [rec] = await records(broker, refused_sidecar.topic, expect=1)
    assert rec.body == payload


async def test_a_replay_is_never_captured_and_gets_the_failure_back(
        broker: Broker, refused_sidecar: Sidecar) -> None:
    status, body, headers = await send(refused_sidecar, "POST", "/api/users", data=b"{}",
                                       headers={"X-Redrive-Replay": "some-id",
                                                "Idempotency-Key": "k"})
    assert status == 502 and body["error"] == "connect_refused"
    assert "X-Redrive-Id" not in headers
    assert await read_topic(broker.bootstrap, refused_sidecar.topic, timeout=2) == []
    metrics = scrape(refused_sidecar.admin)
    assert metrics['redrive_sidecar_requests_total{outcome="replay_failed"}'] == 1
    assert metrics['redrive_sidecar_captures_total{result="published"}'] == 0


@pytest.fixture
async def status_upstream() -> AsyncIterator[str]:
    """An in-test app answering 502/503/504 (with Retry-After) and a slow endpoint."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if request.path == "/slow":
            await asyncio.sleep(3)
            return web.Response(text="late")
        code = int(request.path.strip("/"))
        headers = {"Retry-After": "42"} if code == 503 else {}
        return web.Response(status=code, text="down", headers=headers)

    async with serve(handle) as url:
        yield url


async def test_captured_statuses_and_a_read_timeout_are_each_captured_once(
        broker: Broker, status_upstream: str) -> None:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("st"),
                       upstream=status_upstream,
                       env={"REDRIVE_UPSTREAM_TIMEOUT_SECONDS": "0.5"})
    try:
        answers = {}
        for path in ("/502", "/503", "/504", "/slow"):
            status, body, headers = await send(sc, "POST", path, data=b"p")
            assert status == 503 and body["queued"] is True
            answers[path] = (body["id"], headers["Retry-After"])
        # The upstream's own Retry-After wins over ours.
        assert answers["/503"][1] == "42" and answers["/502"][1] == "5"
        async with aiohttp.ClientSession() as s, s.post(sc.url + "/500", data=b"p") as r:
            # Not in REDRIVE_CAPTURE_STATUSES: the app's answer is passed through.
            assert (r.status, await r.text()) == (500, "down")
        recs = [envelope.decode(v) for _, v, _ in
                await read_topic(broker.bootstrap, sc.topic, idle=1.5)]
        by_id = {r.id: r for r in recs}
        assert len(recs) == 4 == len(by_id)
        for path in ("/502", "/503", "/504"):
            rec = by_id[answers[path][0]]
            assert rec.error.kind == "upstream_status"
            assert rec.error.status == int(path[1:]) and rec.error.reached_upstream is True
        slow = by_id[answers["/slow"][0]]
        assert slow.error.kind == "read_timeout" and slow.error.reached_upstream is True
    finally:
        sc.process.stop()


@pytest.mark.parametrize(("mode", "kind"), [("reset", "connection_reset"),
                                            ("garbage", "protocol_error")])
async def test_a_broken_upstream_connection_is_captured_as_its_kind(
        broker: Broker, mode: str, kind: str) -> None:
    async with RawServer(mode) as raw:
        sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic(mode), upstream=raw.url)
        try:
            status, body, _ = await send(sc, "DELETE", "/api/users/7")
            assert status == 503 and body["queued"] is True
        finally:
            sc.process.stop()
    [rec] = await records(broker, sc.topic, expect=1)
    assert rec.error.kind == kind and rec.error.reached_upstream is True
    assert rec.method == "DELETE"


async def test_a_connect_timeout_is_captured_as_never_reaching_the_app(broker: Broker) -> None:
    lsock, fillers = full_backlog_listener()
    port = lsock.getsockname()[1]
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("ct"),
                       upstream=f"http://127.0.0.1:{port}",
                       env={"REDRIVE_UPSTREAM_CONNECT_TIMEOUT_SECONDS": "0.3"})
    try:
        status, body, _ = await send(sc, "POST", "/x", data=b"1")
        assert status == 503 and body["queued"] is True
        [rec] = await records(broker, sc.topic, expect=1)
        assert rec.error.kind == "connect_timeout" and rec.error.reached_upstream is False
    finally:
        sc.process.stop()
        for s in [*fillers, lsock]:
            s.close()


async def test_accept_mode_answers_202_once_the_record_is_in_kafka(broker: Broker) -> None:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("acc"),
                       upstream=unused_port_url(), env={"REDRIVE_FAILURE_RESPONSE": "accept"})
    try:
        status, body, headers = await send(sc, "POST", "/api/users", data=b"{}")
        assert status == 202
        rid = headers["X-Redrive-Id"]
        status_url = f"/.well-known/redrive/requests/{rid}"
        assert body == {"status": "queued", "id": rid, "status_url": status_url}
        assert headers["Location"] == status_url and headers["Retry-After"]
        [rec] = await records(broker, sc.topic, expect=1)
        assert rec.id == body["id"]
    finally:
        sc.process.stop()


async def test_with_kafka_unreachable_the_sidecar_serves_and_says_queued_false() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_kafka = f"127.0.0.1:{s.getsockname()[1]}"
    sc = start_sidecar(bootstrap=dead_kafka, topic=unique_topic("nok"),
                       upstream=unused_port_url(), wait_kafka=False,
                       env={"REDRIVE_FAILURE_RESPONSE": "accept",
                            "REDRIVE_PUBLISH_TIMEOUT_SECONDS": "0.5"})
    try:
        status, body, headers = await send(sc, "POST", "/api/users", data=b"{}")
        # Accept mode falls back to the honest 503 when the record is not safe.
        assert status == 503 and body["queued"] is False
        assert headers["X-Redrive-Id"] == body["id"]
        async with aiohttp.ClientSession() as s, s.get(sc.admin + "/readyz") as r:
            assert r.status == 200
            assert "kafka: unreachable" in await r.text()
        metrics = scrape(sc.admin)
        assert metrics['redrive_sidecar_captures_total{result="lost"}'] == 1
        assert metrics['redrive_sidecar_requests_total{outcome="not_queued"}'] == 1
    finally:
        sc.process.stop()
    lines = [json.dumps(e) for e in sc.logs() if e.get("message") == "request captured"]
    assert len(lines) == 1 and '"result": "lost"' in lines[0]
