"""The lean upstream client against real loopback servers, well-behaved and not."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from redrive.envelope import Failure
from sidecar import failures
from sidecar.upstream import (
    ConnectionReset,
    ConnectRefused,
    ConnectTimeout,
    ProtocolError,
    ReadTimeout,
    UpstreamClient,
    UpstreamError,
)
from tests.support.pki import make_pki
from tests.support.procs import refused_port
from tests.support.servers import serve
from tests.support.sidecar import RawServer, full_backlog_listener

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Scripted:
    """A loopback TCP server running ``make(server)`` per connection; counts connections."""

    def __init__(self, make: Callable[[Scripted], Handler]) -> None:
        self.handler = make(self)
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        """The next request head (raises IncompleteReadError at EOF)."""
        data = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(data)
        return data

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def keep_alive(server: Callable[[], Scripted], answer: bytes = OK) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server().head(reader)
            writer.write(answer)
            await writer.drain()
    return handler


def client(url: str, **kw: float) -> UpstreamClient:
    return UpstreamClient(url, connect_timeout=kw.pop("connect_timeout", 2.0),
                          timeout=kw.pop("timeout", 5.0), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    """An aiohttp app echoing what it received, at a path prefix."""

    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.endswith("/big"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for i in range(128):
                await resp.write(bytes([i]) * 65536)
            await resp.write_eof()
            return resp
        return web.json_response({
            "method": request.method, "raw_path": request.raw_path,
            "headers": list(request.headers.items()), "body": body.decode(),
        }, headers={"X-Upstream": "yes"})

    async with serve(echo) as url:
        yield url


async def test_a_request_reaches_an_aiohttp_app_with_prefix_raw_path_headers_and_body(
        app_url: str) -> None:
    import json

    c = client(app_url + "/base/")
    try:
        raw = "/caf%C3%A9?q=%E2%9C%93&plus=a+b"
        resp = await c.request("POST", raw, [("X-Custom", "v1"), ("Host", "front:80")],
                               b"payload")
        assert resp.status == 200 and resp.reason == "OK"
        assert resp.header("x-upstream") == "yes"
        got = json.loads(await resp.read())
        assert got["raw_path"] == "/base" + raw
        assert got["body"] == "payload"
        sent = dict(got["headers"])
        assert sent["X-Custom"] == "v1" and sent["Host"] == "front:80"
        assert sent["Content-Length"] == "7"
        # GET without a body: no Content-Length, Host from the URL when the caller has none.
        resp = await c.request("GET", "/x", [], None)
        got = json.loads(await resp.read())
        assert "Content-Length" not in dict(got["headers"])
        assert dict(got["headers"])["Host"] == app_url.removeprefix("http://")
        assert c.idle_connections == 1
    finally:
        await c.close()


async def test_a_large_chunked_body_streams_with_backpressure(app_url: str) -> None:
    c = client(app_url)
    try:
        resp = await c.request("GET", "/big", [], None)
        assert resp.content_length is None
        first = await resp.next_chunk()
        await asyncio.sleep(0.3)  # a slow consumer: the client must stop reading
        assert resp._paused
        assert resp._buffered <= 256 * 1024 + 256 * 1024  # high mark + one socket read
        digest, size = hashlib.sha256(first), len(first)
        while chunk := await resp.next_chunk():
            digest.update(chunk)
            size += len(chunk)
        expected = b"".join(bytes([i]) * 65536 for i in range(128))
        assert size == len(expected)
        assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()
        resp.release()
        assert c.idle_connections == 1
    finally:
        await c.close()


async def test_keep_alive_reuses_one_connection() -> None:
    srv = Scripted(lambda s: keep_alive(lambda: s))
    async with srv:
        c = client(srv.url)
        try:
            for _ in range(20):
                resp = await c.request("GET", "/", [], None)
                assert await resp.read() == b"ok"
            assert srv.connections == 1 and c.idle_connections == 1
        finally:
            await c.close()


async def test_a_chunked_body_split_across_packets_is_whole() -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        for part in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                     b"5\r\nhel", b"lo\r\n", b"6\r\n world\r\n0\r\n", b"\r\n"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.02)
        await s.head(reader)
        writer.write(OK)

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url)
        try:
            resp = await c.request("GET", "/", [], None)
            assert resp.content_length is None
            assert await resp.read() == b"hello world"
            resp = await c.request("GET", "/", [], None)
            assert await resp.read() == b"ok"
            assert srv.connections == 1
        finally:
            await c.close()


async def test_a_close_delimited_body_ends_at_the_close_and_is_not_pooled() -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"it")
        await writer.drain()

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url)
        try:
            resp = await c.request("GET", "/", [], None)
            assert resp.content_length is None
            assert await resp.read() == b"all of it"
            assert c.idle_connections == 0
        finally:
            await c.close()


async def test_connection_close_from_the_server_is_honoured() -> None:
    srv = Scripted(lambda s: keep_alive(
        lambda: s, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
    async with srv:
        c = client(srv.url)
        try:
            for _ in range(3):
                resp = await c.request("GET", "/", [], None)
                assert await resp.read() == b"ok"
                assert c.idle_connections == 0
            assert srv.connections == 3
        finally:
            await c.close()


async def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)  # then the server's idle timeout closes it

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url)
        try:
            for _ in range(3):
                resp = await c.request("POST", "/", [], b"x")
                assert await resp.read() == b"ok"
                await asyncio.sleep(0.2)
                assert c.idle_connections == 0
            assert srv.connections == 3
        finally:
            await c.close()


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("PUT", True),
                                                 ("POST", False)])
async def test_a_pooled_connection_closed_in_the_race_is_retried_only_when_safe(
        method: str, retried: bool) -> None:
    # The first connection answers once, then reads the next request and closes without
    # a byte: what a keep-alive race with the app's idle timeout looks like.
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        first = s.connections == 1
        await s.head(reader)
        writer.write(OK)
        await writer.drain()
        if first:
            await s.head(reader)
            return
        while True:
            await s.head(reader)
            writer.write(OK)
            await writer.drain()

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url)
        try:
            assert await (await c.request(method, "/", [], b"1")).read() == b"ok"
            if retried:
                resp = await c.request(method, "/", [], b"2")
                assert await resp.read() == b"ok"
                assert srv.connections == 2
            else:
                with pytest.raises(ConnectionReset) as info:
                    await c.request(method, "/", [], b"2")
                assert info.value.response_started is False
                assert failures.classify_exception(info.value) == Failure(
                    "connection_reset", None, reached_upstream=True)
                assert srv.connections == 1
        finally:
            await c.close()


async def test_a_fresh_connection_closed_without_an_answer_is_a_reset_not_retried() -> None:
    async with RawServer("reset") as raw:
        c = client(raw.url)
        try:
            with pytest.raises(ConnectionReset):
                await c.request("GET", "/", [], None)
            assert raw.connections == 1
        finally:
            await c.close()


async def test_garbage_is_a_protocol_error() -> None:
    async with RawServer("garbage") as raw:
        c = client(raw.url)
        try:
            with pytest.raises(ProtocolError) as info:
                await c.request("DELETE", "/x", [], None)
            assert failures.classify_exception(info.value).kind == "protocol_error"
            assert failures.classify_exception(info.value).reached_upstream
            assert c.idle_connections == 0
        finally:
            await c.close()


@pytest.mark.parametrize("rst", [True, False])
async def test_a_body_cut_short_raises_after_the_headers(rst: bool) -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.05)
        if rst:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url)
        try:
            resp = await c.request("GET", "/", [], None)
            assert resp.status == 200 and resp.content_length == 100000
            with pytest.raises(ConnectionReset) as info:
                await resp.read()
            assert info.value.response_started
            assert c.idle_connections == 0
        finally:
            await c.close()


async def test_head_ignores_content_length_and_keeps_the_connection() -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        await s.head(reader)
        writer.write(OK)

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url, timeout=1.0)
        try:
            resp = await c.request("HEAD", "/", [], None)
            assert resp.status == 200 and resp.content_length == 1234
            assert await resp.read() == b""
            assert (await (await c.request("GET", "/", [], None)).read()) == b"ok"
            assert srv.connections == 1
        finally:
            await c.close()


async def test_a_body_after_a_head_response_drops_the_connection() -> None:
    srv = Scripted(lambda s: keep_alive(
        lambda: s, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    async with srv:
        c = client(srv.url)
        try:
            resp = await c.request("HEAD", "/", [], None)
            assert resp.status == 200 and await resp.read() == b""
            await asyncio.sleep(0.05)
            assert c.idle_connections == 0
        finally:
            await c.close()


@pytest.mark.parametrize("status", [204, 304])
async def test_no_content_and_not_modified_have_no_body(status: int) -> None:
    srv = Scripted(lambda s: keep_alive(
        lambda: s, f"HTTP/1.1 {status} X\r\nETag: \"e\"\r\n\r\n".encode()))
    async with srv:
        c = client(srv.url)
        try:
            for _ in range(2):
                resp = await c.request("GET", "/", [], None)
                assert resp.status == status and await resp.read() == b""
            assert srv.connections == 1
        finally:
            await c.close()


async def test_interim_responses_are_skipped() -> None:
    srv = Scripted(lambda s: keep_alive(
        lambda: s, b"HTTP/1.1 100 Continue\r\n\r\n"
                   b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                   b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: 1\r\n\r\ndone"))
    async with srv:
        c = client(srv.url)
        try:
            for _ in range(2):
                resp = await c.request("POST", "/", [], b"{}")
                assert (resp.status, resp.reason) == (201, "Created")
                assert resp.raw_headers == [("Content-Length", "4"), ("X-Final", "1")]
                assert await resp.read() == b"done"
            assert srv.connections == 1
        finally:
            await c.close()


async def test_bytes_after_the_response_drop_the_connection() -> None:
    srv = Scripted(lambda s: keep_alive(lambda: s, OK + b"HTTP/1.1 200 OK\r\n"))
    async with srv:
        c = client(srv.url)
        try:
            resp = await c.request("GET", "/", [], None)
            assert await resp.read() == b"ok"
            await asyncio.sleep(0.05)
            assert c.idle_connections == 0
        finally:
            await c.close()


async def test_a_slow_body_hits_the_total_deadline() -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0.1)
            writer.write(b"x")

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url, timeout=0.4)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            resp = await c.request("GET", "/", [], None)
            with pytest.raises(ReadTimeout) as info:
                await resp.read()
            assert 0.35 < loop.time() - started < 1.0
            assert failures.classify_exception(info.value) == Failure(
                "read_timeout", None, reached_upstream=True)
            assert c.idle_connections == 0
        finally:
            await c.close()


async def test_no_answer_at_all_hits_the_total_deadline() -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        await asyncio.sleep(5)

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url, timeout=0.3)
        try:
            with pytest.raises(ReadTimeout):
                await c.request("POST", "/", [], b"x")
        finally:
            await c.close()


async def test_a_refused_port_never_reached_the_app() -> None:
    c = client(f"http://127.0.0.1:{refused_port()}")
    try:
        with pytest.raises(ConnectRefused) as info:
            await c.request("POST", "/", [], b"x")
        assert failures.classify_exception(info.value) == Failure(
            "connect_refused", None, reached_upstream=False)
    finally:
        await c.close()


async def test_a_full_backlog_is_a_connect_timeout() -> None:
    lsock, fillers = full_backlog_listener()
    c = client(f"http://127.0.0.1:{lsock.getsockname()[1]}", connect_timeout=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ConnectTimeout) as info:
            await c.request("GET", "/", [], None)
        assert loop.time() - started < 1.5
        assert failures.classify_exception(info.value) == Failure(
            "connect_timeout", None, reached_upstream=False)
    finally:
        await c.close()
        for s in [*fillers, lsock]:
            s.close()


async def test_idle_connections_expire_and_close_closes_the_rest() -> None:
    closed = asyncio.Event()

    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await s.head(reader)
                writer.write(OK)
                await writer.drain()
        finally:
            closed.set()

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = UpstreamClient(srv.url, connect_timeout=1, timeout=2, idle_timeout=0.2)
        assert await (await c.request("GET", "/", [], None)).read() == b"ok"
        assert c.idle_connections == 1
        await asyncio.wait_for(closed.wait(), 2)
        assert c.idle_connections == 0
        closed.clear()
        assert await (await c.request("GET", "/", [], None)).read() == b"ok"
        await c.close()
        await asyncio.wait_for(closed.wait(), 2)
        assert c.idle_connections == 0
        with pytest.raises(Exception, match="closed"):
            await c.request("GET", "/", [], None)


async def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    async def handler(s: Scripted, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        await s.head(reader)
        await asyncio.sleep(0.2)
        writer.write(OK)
        await s.head(reader)
        writer.write(OK)

    srv = Scripted(lambda s: lambda r, w: handler(s, r, w))
    async with srv:
        c = client(srv.url)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(c.request("GET", "/", [], None), 0.05)
            assert c.idle_connections == 0
            assert await (await c.request("GET", "/", [], None)).read() == b"ok"
            assert srv.connections == 2
        finally:
            await c.close()


async def test_trailer_fields_after_a_chunked_body_are_dropped() -> None:
    srv = Scripted(lambda s: keep_alive(
        lambda: s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                   b"2\r\nok\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"))
    async with srv:
        c = client(srv.url)
        try:
            for _ in range(2):
                resp = await c.request("GET", "/", [], None)
                assert await resp.read() == b"ok"
                assert resp.content_length is None
                assert [n for n, _ in resp.raw_headers] == ["Transfer-Encoding", "Trailer"]
            assert srv.connections == 1
        finally:
            await c.close()


async def test_an_https_upstream_is_verified_and_spoken_to_over_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki / "server.crt", pki / "server.key")

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls {request.secure} {request.path}")

    app = web.Application()
    app.router.add_get("/{p:.*}", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        trusted = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        c = UpstreamClient(f"https://localhost:{port}/base", connect_timeout=2, timeout=5,
                           ssl_context=trusted)
        resp = await c.request("GET", "/x", [("Host", f"localhost:{port}")], None)
        assert (resp.status, await resp.read()) == (200, b"tls True /base/x")
        await c.close()

        wrong = ssl.create_default_context(cafile=str(pki / "other-ca.crt"))
        c = UpstreamClient(f"https://localhost:{port}", connect_timeout=2, timeout=5,
                           ssl_context=wrong)
        with pytest.raises(UpstreamError) as caught:
            await c.request("GET", "/", [("Host", "localhost")], None)
        assert failures.classify_exception(caught.value).kind == "connect_error"
        await c.close()
    finally:
        await runner.cleanup()


async def test_requests_arriving_during_a_refused_attempt_share_its_refusal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from redrive import http1 as upstream  # where the client lives (re-exported by sidecar)

    attempts = 0
    real = upstream._open_socket

    async def counting(*args: object) -> socket.socket:
        nonlocal attempts
        attempts += 1
        return await real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(upstream, "_open_socket", counting)
    c = client(f"http://127.0.0.1:{refused_port()}")
    results = await asyncio.gather(
        *(c.request("POST", "/x", [("Host", "a")], b"{}") for _ in range(50)),
        return_exceptions=True)
    assert all(isinstance(r, ConnectRefused) for r in results)
    assert all(failures.classify_exception(r).reached_upstream is False  # type: ignore[arg-type]
               for r in results)
    assert 1 <= attempts < 50
    # Later requests make attempts of their own: nothing is remembered.
    with pytest.raises(ConnectRefused):
        await c.request("GET", "/", [("Host", "a")], None)
    assert attempts >= 2
    await c.close()


async def test_a_successful_attempt_is_never_shared(app_url: str) -> None:
    c = client(app_url)
    results = await asyncio.gather(*(c.request("GET", f"/n{i}", [("Host", "a")], None)
                                     for i in range(30)))
    assert [r.status for r in results] == [200] * 30
    for r in results:
        await r.read()
    await c.close()
