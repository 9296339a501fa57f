"""The upstream client's pure parts: request serialization and failure mapping."""

from __future__ import annotations

import errno

import pytest

from redrive.envelope import Failure
from sidecar import failures, upstream
from sidecar.upstream import serialize_request


def test_the_request_line_carries_the_target_unchanged_and_the_body_is_framed() -> None:
    data = serialize_request("POST", "/api/caf%C3%A9?q=a+b&x=%2F",
                             [("Host", "front:8080"), ("X-A", "1"), ("X-A", "2")],
                             b"{}", "127.0.0.1:3000")
    assert data == (b"POST /api/caf%C3%A9?q=a+b&x=%2F HTTP/1.1\r\nHost: front:8080\r\n"
                    b"X-A: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\n{}")


def test_host_comes_from_the_upstream_only_when_the_client_sent_none() -> None:
    data = serialize_request("GET", "/", [], None, "app:3000")
    assert data == b"GET / HTTP/1.1\r\nHost: app:3000\r\n\r\n"


def test_an_empty_body_still_says_content_length_zero() -> None:
    data = serialize_request("POST", "/", [("host", "h")], b"", "x")
    assert data.endswith(b"Content-Length: 0\r\n\r\n")


def test_a_large_body_is_left_for_a_second_write() -> None:
    body = b"x" * (1 << 20)
    data = serialize_request("PUT", "/", [("Host", "h")], body, "x")
    assert data.endswith(b"Content-Length: 1048576\r\n\r\n")


def test_non_ascii_header_bytes_round_trip() -> None:
    value = b"caf\xc3\xa9 \xff".decode("utf-8", "surrogateescape")
    data = serialize_request("GET", "/", [("Host", "h"), ("X-V", value)], None, "x")
    assert b"X-V: caf\xc3\xa9 \xff\r\n" in data


@pytest.mark.parametrize("headers", [[("X-A", "1\r\nX-Injected: 1")], [("X-A\n", "1")],
                                     [("X-A", "1\r")]])
def test_cr_or_lf_inside_a_header_is_refused(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        serialize_request("GET", "/", headers, None, "x")


def test_a_cr_lf_in_the_target_is_refused() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        serialize_request("GET", "/a\r\nX: 1", [], None, "x")


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding"])
def test_framing_headers_from_the_caller_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="framed"):
        serialize_request("POST", "/", [(name, "5")], b"12345", "x")


@pytest.mark.parametrize(("exc", "expected"), [
    (upstream.ConnectRefused("r", errno.ECONNREFUSED), Failure("connect_refused", None, False)),
    (upstream.ConnectError("u", errno.EHOSTUNREACH), Failure("connect_error", None, False)),
    (upstream.ConnectError("dns"), Failure("connect_error", None, False)),
    (upstream.ConnectTimeout("t"), Failure("connect_timeout", None, False)),
    (upstream.ReadTimeout("t"), Failure("read_timeout", None, True)),
    (upstream.ConnectionReset("c", response_started=False),
     Failure("connection_reset", None, True)),
    (upstream.ProtocolError("p"), Failure("protocol_error", None, True)),
])
def test_upstream_exceptions_map_to_a_kind(exc: BaseException, expected: Failure) -> None:
    assert failures.classify_exception(exc) == expected


def test_a_url_without_a_port_uses_the_scheme_default_in_host() -> None:
    c = upstream.UpstreamClient("https://app.internal/prefix/", connect_timeout=1, timeout=1)
    assert c._host_header == "app.internal" and c._port == 443 and c._prefix == "/prefix"
    c = upstream.UpstreamClient("http://[::1]:3000", connect_timeout=1, timeout=1)
    assert c._host_header == "[::1]:3000" and c._port == 3000 and c._prefix == ""
