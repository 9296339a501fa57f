"""The worker's replays on the lean HTTP/1.1 client (redrive.http1), against real loopback
servers: TLS targets, both timeouts, Retry-After, connection reuse, framing, bad answers."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
from aiohttp import web

from retry_worker.replay import Replayer, new_client
from retry_worker.settings import TargetSettings
from tests.support.pki import make_pki
from tests.support.procs import refused_port
from tests.support.servers import serve
from tests.support.sidecar import RawServer, full_backlog_listener
from tests.support.worker import make_record


def replayer(url: str, *, connect_timeout: float = 2.0, timeout: float = 5.0,
             concurrency: int = 4) -> Replayer:
    target = TargetSettings(url=url, connect_timeout_seconds=connect_timeout,
                            timeout_seconds=timeout)
    return Replayer(new_client(target, concurrency), url)


async def close(r: Replayer) -> None:
    await r._client.close()


async def test_an_https_target_is_verified_and_gets_the_captured_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path)
    # The worker trusts the system's CAs (as with aiohttp): here, the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / "ca.crt"))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    seen: list[tuple[bool, str, str, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.secure, request.headers["Host"], request.path_qs,
                     await request.read()))
        return web.Response(status=201)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        r = replayer(f"https://localhost:{port}")
        result = await r.send(make_record(headers={"host": "shop.example"}), 1)
        assert (result.status, result.error) == (201, None)
        assert seen == [(True, "shop.example", "/api/users?x=1", b'{"name":"ada"}')]
        await close(r)
    finally:
        await runner.cleanup()


async def test_an_untrusted_tls_target_is_a_connect_error(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)  # nobody trusts this CA
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki / "server.crt", pki / "server.key")

    async def ok(_: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    try:
        r = replayer(f"https://localhost:{runner.addresses[0][1]}")
        result = await r.send(make_record(), 1)
        assert (result.status, result.error) == (None, "connect_error")
        await close(r)
    finally:
        await runner.cleanup()


async def test_a_refused_connection_is_a_connect_error() -> None:
    r = replayer(f"http://127.0.0.1:{refused_port()}")
    result = await r.send(make_record(), 1)
    assert (result.status, result.error) == (None, "connect_error")
    await close(r)


async def test_the_connect_timeout_bounds_a_connection_that_never_opens() -> None:
    lsock, fillers = full_backlog_listener()
    try:
        port = lsock.getsockname()[1]
        r = replayer(f"http://127.0.0.1:{port}", connect_timeout=0.3, timeout=20)
        started = time.monotonic()
        result = await r.send(make_record(), 1)
        assert (result.status, result.error) == (None, "timeout")
        assert time.monotonic() - started < 10  # the connect timeout, not the total one
        await close(r)
    finally:
        for s in [lsock, *fillers]:
            s.close()


async def test_the_total_timeout_bounds_a_slow_answer() -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response()

    async with serve(slow) as url:
        r = replayer(url, timeout=0.5)
        result = await r.send(make_record(), 1)
        assert (result.status, result.error) == (None, "timeout")
        assert result.duration_seconds < 10
        await close(r)


async def test_retry_after_is_read_from_the_answer() -> None:
    async def busy(_: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "120"})

    async with serve(busy) as url:
        r = replayer(url)
        result = await r.send(make_record(), 1)
        assert result.status == 503 and result.retry_after_seconds == pytest.approx(120)
        await close(r)


async def test_replays_reuse_keep_alive_connections_up_to_the_concurrency() -> None:
    peers: set[object] = set()

    async def ok(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(status=204)

    async with serve(ok) as url:
        r = replayer(url, concurrency=4)
        for _ in range(3):
            results = await asyncio.gather(*(r.send(make_record(), 1) for _ in range(4)))
            assert [x.status for x in results] == [204] * 4
        assert 1 <= len(peers) <= 4
        assert r._client.idle_connections == len(peers)
        await close(r)


async def test_an_empty_body_is_framed_as_aiohttp_did() -> None:
    seen: list[tuple[str, str | None]] = []

    async def ok(request: web.Request) -> web.Response:
        seen.append((request.method, request.headers.get("Content-Length")))
        return web.Response(status=204)

    async with serve(ok) as url:
        r = replayer(url)
        for method in ("POST", "DELETE", "GET"):
            assert (await r.send(make_record(method=method, body=b""), 1)).status == 204
        assert seen == [("POST", "0"), ("DELETE", "0"), ("GET", None)]
        await close(r)


@pytest.mark.parametrize(("mode", "error"), [("garbage", "bad_response"),
                                             ("reset", "connection_error")])
async def test_a_broken_answer_is_an_error_not_a_status(mode: str, error: str) -> None:
    async with RawServer(mode) as server:
        r = replayer(server.url)
        result = await r.send(make_record(), 1)
        assert (result.status, result.error) == (None, error)
        await close(r)


async def test_a_header_that_cannot_be_sent_is_a_client_error() -> None:
    seen: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response()

    async with serve(ok) as url:
        r = replayer(url)
        result = await r.send(make_record(headers={"x-bad": "a\r\nInjected: 1"}), 1)
        assert (result.status, result.error) == (None, "client_error")
        assert seen == []
        await close(r)
