"""The front door's buffered-body budget, in process over loopback sockets: declared and
chunked bodies are charged, the overflow is refused 503 ``queued: false``, and every way
a request ends (answered, refused, client gone mid-body, handler failing) gives the budget
back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from sidecar.server import FrontDoor, Limits, Request, Response, json_response
from sidecar.settings import Settings

LIMIT = 100_000


class Door:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[int] = []
        self.refused: list[int] = []
        self.door = FrontDoor(self.handle, Limits(head_timeout=5.0, max_body_bytes=LIMIT,
                                                  max_buffered_body_bytes=LIMIT,
                                                  overload_retry_after=3),
                              on_refused=self.refused.append)
        self.port = 0

    async def handle(self, request: Request) -> Response:
        self.seen.append(len(request.body))
        if request.target == "/fail":
            raise RuntimeError("handler failed")
        if request.target == "/hold":
            await asyncio.wait_for(self.release.wait(), 10)
        return json_response(200, {"size": len(request.body)})

    @property
    def used(self) -> int:
        return self.door.bodies.used


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    d = Door()
    [(_, d.port)] = await d.door.start("127.0.0.1", 0)
    yield d
    d.release.set()
    await d.door.shutdown(2.0)


async def answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], dict[str, object]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split()[1]), headers, json.loads(body)


def chunked(size: int) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (size, b"x" * size)


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_a_held_body_counts_and_the_overflow_is_refused_not_queued(door: Door) -> None:
    r1, w1 = await asyncio.open_connection("127.0.0.1", door.port)
    w1.write(b"POST /hold HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             + chunked(70_000))
    await until(lambda: door.seen == [70_000])
    assert door.used == 70_000
    # A declared body that does not fit: refused before a byte of it is read.
    r2, w2 = await asyncio.open_connection("127.0.0.1", door.port)
    w2.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 40000\r\n\r\n")
    status, headers, body = await answer(r2)
    assert (status, body["error"], body["queued"]) == (503, "overloaded", False)
    assert headers["retry-after"] == "3" and headers["connection"] == "close"
    # A chunked body is charged as it arrives, and refused once it passes.
    r3, w3 = await asyncio.open_connection("127.0.0.1", door.port)
    w3.write(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
             + chunked(40_000))
    status, _, body = await answer(r3)
    assert status == 503 and body["queued"] is False
    # Bodyless and small requests still pass.
    r4, w4 = await asyncio.open_connection("127.0.0.1", door.port)
    w4.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
    assert (await answer(r4))[0] == 200
    assert door.refused == [503, 503]
    door.release.set()
    assert (await answer(r1))[0] == 200
    await until(lambda: door.used == 0)
    for w in (w1, w2, w3, w4):
        w.close()


async def test_every_ending_gives_the_budget_back(door: Door) -> None:
    # The client leaves mid-body.
    _, w = await asyncio.open_connection("127.0.0.1", door.port)
    w.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 90000\r\n\r\n" + b"x" * 1000)
    await until(lambda: door.used == 90_000)
    w.close()
    await until(lambda: door.used == 0)
    # The handler fails.
    r, w = await asyncio.open_connection("127.0.0.1", door.port)
    w.write(b"POST /fail HTTP/1.1\r\nHost: a\r\nContent-Length: 50000\r\n\r\n" + b"x" * 50_000)
    assert (await answer(r))[0] == 500
    await until(lambda: door.used == 0)
    w.close()
    # The client leaves while its handler runs.
    _, w = await asyncio.open_connection("127.0.0.1", door.port)
    w.write(b"POST /hold HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n" + b"x" * 60_000)
    await until(lambda: door.used == 60_000 and len(door.seen) == 2)
    w.close()
    await asyncio.sleep(0.1)
    assert door.used == 60_000  # held until its handler ends (a capture completes)
    door.release.set()
    await until(lambda: door.used == 0)


def test_the_budget_must_hold_one_largest_body() -> None:
    env = {"REDRIVE_MAX_BODY_BYTES": "2000000", "REDRIVE_BUFFERED_BODY_MAX_BYTES": "1000000"}
    with pytest.raises(Exception, match="REDRIVE_BUFFERED_BODY_MAX_BYTES"):
        Settings.from_env(env)
    assert Settings.from_env({}).listen.buffered_body_max_bytes == 64 * 1024 * 1024
