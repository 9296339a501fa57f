"""What the app and the client see through the sidecar is what they would see without it."""

from __future__ import annotations

import base64
import hashlib
import io
from typing import Any

import aiohttp
import pytest

from tests.support.echo_upstream import pattern
from tests.support.sidecar import Sidecar


async def echo(proxy: Sidecar, method: str, path: str,
               **kwargs: Any) -> tuple[int, dict[str, Any], Any]:
    async with aiohttp.ClientSession() as s, s.request(method, proxy.url + path, **kwargs) as r:
        return r.status, await r.json(), r.headers


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
async def test_each_method_reaches_the_app_with_its_body_and_comes_back_intact(
        proxy: Sidecar, method: str) -> None:
    body = f"payload for {method} ✓".encode() if method != "GET" else b""
    status, got, headers = await echo(proxy, method, "/echo/items/42?status=201",
                                      data=body, headers={"X-Custom": "v1",
                                                          "Content-Type": "text/plain"})
    assert status == 201
    assert got["method"] == method
    assert got["raw_path"] == "/echo/items/42?status=201"
    assert base64.b64decode(got["body_b64"]) == body
    sent = dict(got["headers"])
    assert sent["X-Custom"] == "v1"
    assert headers["X-Upstream"] == "yes"  # type: ignore[index]
    assert headers.getall("Set-Cookie") == ["a=1", "b=2"]  # type: ignore[union-attr]


async def test_unicode_and_encoded_query_strings_pass_unchanged(proxy: Sidecar) -> None:
    raw = "/echo/caf%C3%A9?q=%E2%9C%93&name=Zo%C3%AB&empty=&plus=a+b"
    async with aiohttp.ClientSession() as s, \
            s.get(aiohttp.client.URL(proxy.url + raw, encoded=True)) as r:
        got = await r.json()
    assert got["raw_path"] == raw


async def test_a_binary_body_passes_byte_for_byte(proxy: Sidecar) -> None:
    body = bytes(range(256)) * 64
    _, got, _ = await echo(proxy, "POST", "/echo/bin", data=body,
                           headers={"Content-Type": "application/octet-stream"})
    assert base64.b64decode(got["body_b64"]) == body


async def test_a_multi_megabyte_response_streams_through_intact(proxy: Sidecar) -> None:
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/big?mb=8") as r:
        digest = hashlib.sha256()
        size = 0
        async for chunk in r.content.iter_chunked(1 << 16):
            digest.update(chunk)
            size += len(chunk)
    expected = pattern(65536) * 128
    assert size == len(expected)
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()


async def test_hop_by_hop_headers_are_stripped_both_ways(proxy: Sidecar) -> None:
    _, got, _ = await echo(proxy, "GET", "/echo/hop", headers={
        "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1", "TE": "trailers",
        "Keep-Alive": "timeout=5", "X-Kept": "1"})
    names = {k.lower() for k, _ in got["headers"]}
    assert "x-drop-me" not in names and "te" not in names and "keep-alive" not in names
    assert "x-kept" in names
    async with aiohttp.ClientSession() as s, s.get(proxy.url + "/hop") as r:
        assert r.headers["X-End-To-End"] == "kept"
        assert "X-Private-Hop" not in r.headers and "Keep-Alive" not in r.headers


async def test_forwarding_headers_are_added_and_x_forwarded_for_appended(proxy: Sidecar) -> None:
    _, got, _ = await echo(proxy, "GET", "/echo/fwd", headers={"X-Forwarded-For": "203.0.113.9"})
    sent = dict(got["headers"])
    assert sent["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert sent["X-Forwarded-Proto"] == "http"
    assert sent["X-Forwarded-Host"] == f"127.0.0.1:{proxy.port}"
    assert sent["Host"] == f"127.0.0.1:{proxy.port}"


async def test_the_proxy_invents_no_headers_the_client_did_not_send(proxy: Sidecar) -> None:
    async with aiohttp.ClientSession(skip_auto_headers=["User-Agent", "Accept",
                                                        "Accept-Encoding"]) as s, \
            s.post(proxy.url + "/echo/x", data=b"raw", skip_auto_headers=["Content-Type"]) as r:
        got = await r.json()
    names = {k.lower() for k, _ in got["headers"]}
    assert not names & {"user-agent", "accept", "accept-encoding", "content-type"}


async def test_non_safe_requests_get_an_idempotency_key_and_safe_ones_do_not(
        proxy: Sidecar) -> None:
    _, got, _ = await echo(proxy, "POST", "/echo/new", data=b"{}")
    keys = [v for k, v in got["headers"] if k.lower() == "idempotency-key"]
    assert len(keys) == 1 and len(keys[0]) == 36
    _, got, _ = await echo(proxy, "POST", "/echo/new", data=b"{}",
                           headers={"Idempotency-Key": "client-key-1"})
    assert [v for k, v in got["headers"] if k.lower() == "idempotency-key"] == ["client-key-1"]
    _, got, _ = await echo(proxy, "GET", "/echo/read")
    assert not [v for k, v in got["headers"] if k.lower() == "idempotency-key"]


async def test_statuses_outside_the_capture_set_pass_through_unchanged(proxy: Sidecar) -> None:
    async with aiohttp.ClientSession() as s:
        for code in (400, 404, 500, 501):
            async with s.get(f"{proxy.url}/status/{code}") as r:
                assert r.status == code
                assert await r.text() == "upstream says no"
                assert "X-Redrive-Id" not in r.headers


async def test_head_returns_headers_without_a_body(proxy: Sidecar) -> None:
    async with aiohttp.ClientSession() as s, s.head(proxy.url + "/echo/h") as r:
        assert r.status == 200
        assert await r.read() == b""


async def test_an_oversized_body_gets_413_and_never_reaches_the_app(
        proxy: Sidecar, echo_upstream: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url + "/echo/too-big",
                          data=io.BytesIO(b"x" * (1048576 + 1))) as r:
            assert r.status == 413
            assert (await r.json())["error"] == "body_too_large"
        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(20):
                yield b"y" * 65536 * 2
        async with s.post(proxy.url + "/echo/too-big-chunked", data=chunks()) as r:
            assert r.status == 413
        async with s.get(echo_upstream + "/count") as r:
            seen = await r.json()
    assert "POST /echo/too-big" not in seen and "POST /echo/too-big-chunked" not in seen


async def test_a_body_exactly_at_the_limit_is_accepted(proxy: Sidecar) -> None:
    status, got, _ = await echo(proxy, "POST", "/echo/limit", data=b"z" * 1048576)
    assert status == 200
    assert len(base64.b64decode(got["body_b64"])) == 1048576
