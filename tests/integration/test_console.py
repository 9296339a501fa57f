"""The operator console over real HTTP: a worker with a status port and a token, the
real broker, a target that refuses each request's first replay (so it is dead-lettered)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import aiohttp
import pytest
from aiohttp import web

from redrive.sealing import SealKeys
from tests.support.kafka import Broker, read_topic
from tests.support.procs import free_port, wait_for_port
from tests.support.worker import (
    Target,
    make_record,
    produce_records,
    target,
    worker,
    worker_env,
)

TOKEN = "console-token-for-tests-0123456789"  # noqa: S105 - a test token
SEAL = "s1:" + base64.b64encode(b"k" * 32).decode()


async def refuse_first(_: web.Request, count: int) -> web.StreamResponse:
    return web.Response(status=400 if count == 1 else 200, text="x")


@dataclass
class Console:
    url: str
    target: Target


@pytest.fixture
async def console(broker: Broker, topic: str) -> AsyncIterator[Console]:
    async with target(refuse_first) as t:
        port = free_port()
        env = worker_env(broker.bootstrap, topic, t.url, REDRIVE_STATUS_PORT=str(port),
                         REDRIVE_STATUS_HOST="127.0.0.1", REDRIVE_CONSOLE_TOKEN=TOKEN,
                         REDRIVE_SEAL_KEY=SEAL)
        async with worker(env):
            await asyncio.to_thread(wait_for_port, port, 20)
            yield Console(f"http://127.0.0.1:{port}", t)


async def dead(c: Console, broker: Broker, topic: str) -> str:
    """Capture one request with a sealed Authorization; wait until it is dead-lettered."""
    record = make_record(redacted_headers=("authorization",))
    record = replace(record, sealed_headers=SealKeys.parse(SEAL).seal(
        {"authorization": "Bearer top-secret"}, record.id))
    await produce_records(broker.bootstrap, topic, [record])
    await c.target.wait_for(lambda: record.id in c.target.by_replay_id())
    async with aiohttp.ClientSession() as s:
        async def state() -> str:
            async with s.get(f"{c.url}/v1/requests/{record.id}") as r:
                return str((await r.json()).get("state")) if r.status == 200 else ""
        for _ in range(200):
            if await state() == "dead_lettered":
                return record.id
            await asyncio.sleep(0.05)
    raise AssertionError("never dead-lettered")


async def login(s: aiohttp.ClientSession, url: str, token: str = TOKEN) -> aiohttp.ClientResponse:
    return await s.post(f"{url}/console/login", data={"token": token}, allow_redirects=False)


def csrf_of(page: str) -> str:
    match = re.search(r"name=csrf value='([0-9a-f]+)'", page)
    assert match, page[:2000]
    return match.group(1)


async def test_without_the_token_the_console_refuses(console: Console) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{console.url}/console/") as r:
            assert r.status == 401 and "Sign in" in await r.text()
        async with s.get(f"{console.url}/console/api/requests") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        async with s.get(f"{console.url}/console/api/requests",
                         headers={"Authorization": "Bearer wrong-token-000000000"}) as r:
            assert r.status == 401
        resp = await login(s, console.url, "wrong-token-000000000")
        assert resp.status == 401 and "not right" in await resp.text()
        assert "Set-Cookie" not in resp.headers
        async with s.post(f"{console.url}/console/replay", data={"id": "x"}) as r:
            assert r.status == 401


async def test_a_signed_in_operator_sees_a_dead_letter_and_replays_it(
        console: Console, broker: Broker, topic: str) -> None:
    rid = await dead(console, broker, topic)
    # unsafe: aiohttp's jar otherwise keeps no cookies for an IP address (a browser does).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        resp = await login(s, console.url)
        assert resp.status == 303 and resp.headers["Location"] == "/console/"
        cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        async with s.get(f"{console.url}/console/?state=dead_lettered") as r:
            page = await r.text()
            assert r.status == 200 and rid in page and "<svg" in page
            assert r.headers["Cache-Control"] == "no-store"
        async with s.get(f"{console.url}/console/requests/{rid}") as r:
            detail = await r.text()
        assert "top-secret" not in detail and "sealed_headers" in detail
        assert "permanent" in detail and "Attempts" in detail
        csrf = csrf_of(page)

        # CSRF: no token, a wrong one, or another origin: refused, nothing replayed.
        for data, headers in (({"id": rid}, {}), ({"id": rid, "csrf": "0" * 64}, {}),
                              ({"id": rid, "csrf": csrf}, {"Origin": "http://evil.example"})):
            async with s.post(f"{console.url}/console/replay", data=data,
                              headers=headers) as r:
                assert r.status == 403
        async with s.post(f"{console.url}/console/replay",
                          data={"id": rid, "csrf": csrf, "dry_run": "1"}) as r:
            assert r.status == 200 and "Dry run: would replay 1 record(s)" in await r.text()
        assert len(console.target.by_replay_id()[rid]) == 1

        async with s.post(f"{console.url}/console/replay",
                          data={"id": rid, "csrf": csrf, "rate": "5"}) as r:
            assert r.status == 200 and "Replayed 1 record(s)" in await r.text()
        await console.target.wait_for(lambda: len(console.target.by_replay_id()[rid]) == 2)
        # Re-signed and unsealed by the worker as `dlq replay` would: the header is back.
        assert console.target.by_replay_id()[rid][1].headers["Authorization"] == \
            "Bearer top-secret"

        async def delivered() -> bool:
            async with s.get(f"{console.url}/console/api/requests/{rid}") as r:
                return r.status == 200 and (await r.json())["state"] == "delivered"
        for _ in range(200):
            if await delivered():
                break
            await asyncio.sleep(0.05)
        assert await delivered()
        markers = await read_topic(broker.bootstrap, f"{topic}.dlq", expect=2)
        assert b'"by":"console"' in markers[-1][1]


async def test_scripts_use_the_bearer_token_without_csrf(
        console: Console, broker: Broker, topic: str) -> None:
    rid = await dead(console, broker, topic)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{console.url}/console/api/requests?state=dead_lettered",
                         headers=auth) as r:
            listing = await r.json()
        assert [x["id"] for x in listing["requests"]] == [rid]
        assert listing["requests"][0]["reason"] == "permanent"
        async with s.post(f"{console.url}/console/replay", headers=auth,
                          data={"all": "1", "reason": "permanent", "dry_run": "1"},
                          allow_redirects=False) as r:
            assert r.status == 303 and "would+replay+1" in r.headers["Location"]


async def test_the_console_is_off_without_a_token(broker: Broker, topic: str) -> None:
    port = free_port()
    env = worker_env(broker.bootstrap, topic, "http://127.0.0.1:1",
                     REDRIVE_STATUS_PORT=str(port), REDRIVE_STATUS_HOST="127.0.0.1")
    async with worker(env), aiohttp.ClientSession() as s:
        await asyncio.to_thread(wait_for_port, port, 20)
        async with s.get(f"http://127.0.0.1:{port}/console/") as r:
            assert r.status == 404 and "REDRIVE_CONSOLE_TOKEN" in await r.text()
