"""The sidecar's own HTTP/1.1 server, over raw sockets: pipelining, HTTP/1.0, Expect,
Upgrade, and a client that leaves while its request is being captured."""

from __future__ import annotations

import asyncio
import json
import socket

from aiohttp import web

from tests.support.kafka import Broker, read_topic, unique_topic
from tests.support.servers import serve
from tests.support.sidecar import Sidecar, start_sidecar, wait_for_log

H = b"Host: app\r\n"


def read_responses(s: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` whole responses (Content-Length framed), then whatever follows."""
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, (out, buf)
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        if status == 100:
            continue
        length = int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = s.recv(65536)
            assert chunk
            buf += chunk
        out.append((status, headers, buf[:length]))
        buf = buf[length:]
    return out


def connect(sc: Sidecar) -> socket.socket:
    return socket.create_connection(("127.0.0.1", sc.port), timeout=10)


def test_pipelined_requests_are_answered_in_order(proxy: Sidecar) -> None:
    with connect(proxy) as s:
        s.sendall(b"".join(b"GET /echo/%d HTTP/1.1\r\n" % i + H + b"\r\n" for i in range(5))
                  + b"POST /echo/last HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabc")
        answers = read_responses(s, 6)
    paths = [json.loads(body)["raw_path"] for _, _, body in answers]
    assert paths == ["/echo/0", "/echo/1", "/echo/2", "/echo/3", "/echo/4", "/echo/last"]


def test_a_malformed_request_after_good_ones_is_refused_after_their_answers(
        proxy: Sidecar) -> None:
    with connect(proxy) as s:
        s.sendall(b"GET /echo/a HTTP/1.1\r\n" + H + b"\r\n"
                  + b"GET /echo/b HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n"
                  b"Content-Length: 2\r\n\r\nab")
        (first, _, body), (second, headers, _) = read_responses(s, 2)
        assert s.recv(1024) == b""  # then the connection closes
    assert (first, json.loads(body)["raw_path"]) == (200, "/echo/a")
    assert second == 400 and headers["connection"] == "close"


def test_http_1_0_closes_by_default_and_keeps_alive_when_asked(proxy: Sidecar) -> None:
    with connect(proxy) as s:
        s.sendall(b"GET /echo/old HTTP/1.0\r\n\r\n")  # no Host: fine in HTTP/1.0
        [(status, headers, _)] = read_responses(s, 1)
        assert status == 200 and headers["connection"] == "close"
        assert s.recv(1024) == b""
    with connect(proxy) as s:
        for _ in range(2):
            s.sendall(b"GET /echo/ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            [(status, headers, _)] = read_responses(s, 1)
            assert status == 200 and headers["connection"] == "keep-alive"


def test_a_streamed_body_reaches_an_http_1_0_client_delimited_by_the_close(
        proxy: Sidecar) -> None:
    with connect(proxy) as s:
        s.sendall(b"GET /big?mb=1 HTTP/1.0\r\n\r\n")
        got = b""
        while chunk := s.recv(1 << 16):
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert len(body) == 1 << 20


def test_expect_100_continue_is_answered_before_the_body(proxy: Sidecar) -> None:
    with connect(proxy) as s:
        s.sendall(b"POST /echo/exp HTTP/1.1\r\n" + H + b"Content-Length: 2\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"{}")
        [(status, _, body)] = read_responses(s, 1)
    sent = dict(json.loads(body)["headers"])
    assert status == 200 and "Expect" not in sent


def test_an_upgrade_request_is_proxied_as_plain_http_and_the_connection_closes(
        proxy: Sidecar) -> None:
    with connect(proxy) as s:
        s.sendall(b"GET /echo/ws HTTP/1.1\r\n" + H + b"Connection: Upgrade\r\n"
                  b"Upgrade: websocket\r\n\r\n")
        [(status, headers, body)] = read_responses(s, 1)
        assert s.recv(1024) == b""
    names = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert status == 200 and headers["connection"] == "close"
    assert "upgrade" not in names and "connection" not in names


async def test_a_client_that_leaves_mid_capture_still_gets_its_request_saved(
        broker: Broker) -> None:
    async def failing_slowly(_: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.Response(status=503)

    async with serve(failing_slowly) as upstream:
        sc = await asyncio.to_thread(start_sidecar, bootstrap=broker.bootstrap,
                                     topic=unique_topic("leaver"), upstream=upstream)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", sc.port)
            writer.write(b"POST /api/orders HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n"
                         b"Idempotency-Key: leaver-1\r\n\r\n{}")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()  # gone before the app fails
            records = await read_topic(broker.bootstrap, sc.topic, expect=1, timeout=15)
        finally:
            sc.process.stop()
    [(_, value, _)] = records
    assert json.loads(value)["idempotency_key"] == "leaver-1"


def test_the_access_log_has_method_path_without_query_and_status(
        broker: Broker, echo_upstream: str) -> None:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("access"),
                       upstream=echo_upstream, env={"REDRIVE_ACCESS_LOG": "true"})
    try:
        with connect(sc) as s:
            s.sendall(b"GET /echo/acc?token=s3cret HTTP/1.1\r\n" + H
                      + b"Connection: close\r\n\r\n")
            [(status, _, _)] = read_responses(s, 1)
        assert status == 200
        line = wait_for_log(sc, "request")
    finally:
        sc.process.stop()
    assert (line["method"], line["path"], line["status"]) == ("GET", "/echo/acc", 200)
    assert "s3cret" not in sc.process.output()


def test_a_header_line_that_never_ends_is_refused_431_not_buffered_forever(
        proxy: Sidecar) -> None:
    with connect(proxy) as s:
        s.sendall(b"GET /echo/x HTTP/1.1\r\n" + H + b"X-Endless: ")
        got = b""
        try:
            for _ in range(64):  # up to 4 MiB, never a CRLF
                s.sendall(b"a" * 65536)
        except OSError:
            pass  # refused and closed while we were still sending
        while chunk := s.recv(65536):
            got += chunk
    assert got.startswith(b"HTTP/1.1 431 "), got[:100]
