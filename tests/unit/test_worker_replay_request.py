"""How a record becomes a request: the URL stays on the target, headers are cleaned."""

from __future__ import annotations

import pytest

from retry_worker.replay import UnsafeTarget, replay_headers, replay_url
from tests.support.worker import make_record

TARGET = "http://svc.default:8080"


def test_the_uri_is_appended_to_the_target() -> None:
    assert str(replay_url(TARGET, "/api/users?x=1&y=%20")) == \
        "http://svc.default:8080/api/users?x=1&y=%20"


def test_a_target_path_prefix_is_kept() -> None:
    assert str(replay_url("http://svc:80/base", "/a")) == "http://svc/base/a"


@pytest.mark.parametrize("uri", [
    "//evil.example/x", "///evil", "http://evil.example/x", "evil.example/x", "",
    "/\\evil.example/x", "/a b", "/a\r\nHost: evil", "/x#frag", "/\x00", "?x=1",
    "@evil.example/x",
])
def test_anything_that_could_leave_the_target_is_refused(uri: str) -> None:
    with pytest.raises(UnsafeTarget):
        replay_url(TARGET, uri)


def test_an_at_sign_in_the_path_does_not_change_the_host() -> None:
    url = replay_url(TARGET, "/@evil.example/x")
    assert (url.host, url.port) == ("svc.default", 8080)


def test_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    record = make_record(headers={
        "connection": "keep-alive, x-secret-hop", "keep-alive": "timeout=5",
        "transfer-encoding": "chunked", "upgrade": "websocket", "te": "trailers",
        "proxy-authorization": "Basic x", "x-secret-hop": "1", "content-length": "99",
        "content-type": "text/plain", "x-request-id": "abc"})
    headers = replay_headers(record, TARGET, attempt=1)
    assert {k.lower() for k in headers} == {
        "content-type", "x-request-id", "host", "idempotency-key", "x-redrive-replay",
        "x-redrive-attempt"}


def test_host_is_the_captured_one_and_the_replay_headers_are_set() -> None:
    record = make_record(headers={"host": "orders.example", "idempotency-key": "forged",
                                  "x-redrive-attempt": "99"})
    headers = replay_headers(record, TARGET, attempt=3)
    assert headers["Host"] == "orders.example"
    assert headers["Idempotency-Key"] == record.idempotency_key
    assert headers["X-Redrive-Replay"] == record.id
    assert headers["X-Redrive-Attempt"] == "3"
    assert len(headers.getall("Idempotency-Key")) == 1


def test_without_a_valid_captured_host_the_targets_is_sent_without_a_default_port() -> None:
    assert replay_headers(make_record(headers={}), "https://svc", 1)["Host"] == "svc"
    assert replay_headers(make_record(headers={}), "http://svc:80", 1)["Host"] == "svc"
    for bad in ("a b", "evil\r\nX-Injected: 1", "a/b", "user@host", "", "h:123456"):
        record = make_record(headers={"host": bad})
        assert replay_headers(record, TARGET, 1)["Host"] == "svc.default:8080", bad


@pytest.mark.parametrize("host", ["orders.example", "orders.example:8443", "10.0.0.7:80",
                                  "[2001:db8::1]:8080", "xn--bcher-kva.example"])
def test_valid_captured_hosts_are_kept(host: str) -> None:
    assert replay_headers(make_record(headers={"host": host}), TARGET, 1)["Host"] == host


def test_forwarding_headers_are_sent_as_captured() -> None:
    fwd = {"x-forwarded-for": "203.0.113.9, 10.1.2.3", "x-forwarded-proto": "https",
           "x-forwarded-host": "shop.example"}
    headers = replay_headers(make_record(headers={"host": "shop.example", **fwd}), TARGET, 1)
    assert {k: headers[k] for k in fwd} == fwd


@pytest.mark.parametrize("ch", ["\t", "\x0b", "\x1f", "\x7f", "\x85", "\xa0", "\u2028",
                                "\u3000", "\\", "#"])
def test_unicode_whitespace_and_control_characters_are_refused_anywhere_in_the_path(
        ch: str) -> None:
    with pytest.raises(UnsafeTarget):
        replay_url(TARGET, f"/a{ch}b")
    assert str(replay_url(TARGET, "/a%20b~!$&'()*+,;=:@")).endswith("/a%20b~!$&'()*+,;=:@")
