"""Hostile HTTP against a real sidecar process, over raw sockets on loopback.

The sidecar's upstream is a refused port and its Kafka a real broker: any request that got
past the guards would be captured and land on the topic. So "nothing reached the app or
Kafka" is checked where it would show: the capture counters and the topic itself (and a
valid request at the end proves that oracle is live).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.kafka import Broker, read_topic, unique_topic
from tests.support.metrics import scrape
from tests.support.sidecar import Sidecar, start_sidecar, unused_port_url

HEAD_TIMEOUT = 1.5
MARKER = b"SECRET-MARKER-4b1d"


@pytest.fixture(scope="module")
def guarded(broker: Broker) -> Iterator[Sidecar]:
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("hostile"),
                       upstream=unused_port_url(),
                       env={"REDRIVE_CLIENT_READ_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
                            "REDRIVE_MAX_HEADERS": "32", "REDRIVE_MAX_HEADER_BYTES": "4096",
                            "REDRIVE_MAX_BODY_BYTES": "1024"})
    yield sc
    sc.process.stop()


class Answer:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else 0
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.decode("latin-1").partition(":") for line in lines[1:])}

    def json(self) -> dict[str, object]:
        out: dict[str, object] = json.loads(self.body)
        return out


def exchange(sc: Sidecar, raw: bytes, timeout: float = 5.0) -> Answer:
    """Send ``raw``, read until the server closes (every refusal closes)."""
    with socket.create_connection(("127.0.0.1", sc.port), timeout=timeout) as s:
        s.sendall(raw)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return Answer(got)


def counters(sc: Sidecar) -> dict[str, float]:
    m = scrape(sc.admin)
    return {"rejected": m['redrive_sidecar_requests_total{outcome="rejected"}'],
            "captures": sum(v for k, v in m.items()
                            if k.startswith("redrive_sidecar_captures_total")),
            "failures": sum(v for k, v in m.items()
                            if k.startswith("redrive_sidecar_upstream_failures_total"))}


H = b"Host: app\r\n"
VECTORS = {
    # smuggling: framing the proxy and the app could read differently
    "content-length-and-chunked": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "duplicate-content-length": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
                                 b"Content-Length: 5\r\n\r\nabcde", 400),
    "same-content-length-twice": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\n"
                                  b"Content-Length: 4\r\n\r\nabcd", 400),
    "signed-content-length": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +4\r\n\r\nabcd",
                              400),
    "space-before-colon-te": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked"
                              b"\r\n\r\n0\r\n\r\n", 400),
    "xchunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
                 400),
    "chunked-twice": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked"
                      b"\r\n\r\n0\r\n\r\n", 400),
    "te-on-two-lines": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
                        b"Transfer-Encoding: identity\r\n\r\n0\r\n\r\n", 400),
    "vertical-tab-te": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\x0bchunked"
                        b"\r\n\r\n0\r\n\r\n", 400),
    "gzip-then-chunked": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked"
                          b"\r\n\r\n0\r\n\r\n", 501),
    "te-in-http-1.0": (b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked"
                       b"\r\n\r\n0\r\n\r\n", 400),
    "negative-chunk-size": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked"
                            b"\r\n\r\n-4\r\nabcd\r\n0\r\n\r\n", 400),
    # line endings and bytes that must never be in a head
    "bare-lf": (b"GET / HTTP/1.1\n" + b"Host: app\n\n", 400),
    "bare-lf-between-headers": (b"GET / HTTP/1.1\r\nHost: app\nX-A: b\r\n\r\n", 400),
    "bare-cr": (b"GET / HTTP/1.1\r\nHost: app\rX-A: b\r\n\r\n", 400),
    "nul-in-header-value": (b"GET / HTTP/1.1\r\n" + H + b"X-Token: a\x00" + MARKER
                            + b"\r\n\r\n", 400),
    "nul-in-target": (b"GET /a\x00b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "control-byte-in-target": (b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "obsolete-line-folding": (b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n", 400),
    "no-host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\n" + H + b"Host: other\r\n\r\n", 400),
    # methods, targets, versions
    "invalid-method": (b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "space-in-target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "asterisk-form": (b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 400),
    "authority-form-connect": (b"CONNECT evil.example:443 HTTP/1.1\r\n"
                               b"Host: evil.example:443\r\n\r\n", 405),
    "http-0.9": (b"GET /\r\n\r\n", 505),
    "http-2.0-line": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    "http-1.2": (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    # size limits
    "header-line-too-long": (b"GET / HTTP/1.1\r\n" + H + b"X-A: " + b"a" * 5000 + MARKER
                             + b"\r\n\r\n", 431),
    "target-too-long": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + H + b"\r\n", 431),
    "too-many-headers": (b"GET / HTTP/1.1\r\n" + H
                         + b"".join(b"X-%d: v\r\n" % i for i in range(40)) + b"\r\n", 431),
    "chunked-body-over-the-cap": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked"
                                  b"\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n"
                                  + b"10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n", 413),
    "declared-body-over-the-cap": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5000"
                                   b"\r\n\r\n" + b"a" * 5000, 413),
}


def test_hostile_requests_are_refused_before_the_app_or_kafka(
        guarded: Sidecar, broker: Broker) -> None:
    before = counters(guarded)
    for name, (raw, status) in VECTORS.items():
        answer = exchange(guarded, raw)
        assert answer.status == status, (name, answer.raw[:300])
        assert answer.headers["content-type"].startswith("application/json"), name
        assert answer.json()["error"], name
        assert MARKER not in answer.raw, name
    after = counters(guarded)
    assert after["rejected"] - before["rejected"] == len(VECTORS)
    assert after["captures"] == before["captures"]
    assert after["failures"] == before["failures"]
    on_topic = len(asyncio.run(read_topic(broker.bootstrap, guarded.topic)))
    assert on_topic == before["captures"]
    output = guarded.process.output().encode()
    assert MARKER not in output
    assert b"Traceback" not in output
    assert b'"request refused"' in output

    # The oracle is live: a valid request does reach the (refused) app and Kafka.
    answer = exchange(guarded, b"POST /api/users?x=1 HTTP/1.1\r\n" + H
                      + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert answer.status == 503 and answer.json()["queued"] is True
    assert counters(guarded)["captures"] == before["captures"] + 1
    records = asyncio.run(read_topic(broker.bootstrap, guarded.topic, expect=on_topic + 1))
    assert len(records) == on_topic + 1


def test_absolute_form_is_forwarded_in_origin_form_with_its_authority_as_host(
        guarded: Sidecar, broker: Broker) -> None:
    answer = exchange(guarded, b"PUT http://orders.internal:8080/api/orders/7?dry=1#frag "
                      b"HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: 203.0.113.9\r\n"
                      b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert answer.status == 503
    rid = answer.headers["x-redrive-id"]
    records = asyncio.run(read_topic(broker.bootstrap, guarded.topic))
    record = next(json.loads(v) for k, v, _ in records if k == rid.encode())
    assert record["uri"] == "/api/orders/7?dry=1"
    assert record["headers"]["host"] == "orders.internal:8080"
    # A spoofed X-Forwarded-For is kept as a claim; the peer is what the record trusts.
    assert record["remote_addr"] == "127.0.0.1"
    assert record["headers"]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


def test_a_client_trickling_its_head_gets_408_while_others_are_served(
        guarded: Sidecar) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as slow:
        slow.sendall(b"GET /slow HTTP/1.1\r\n" + H)
        started = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            for i in range(40):
                if stop.wait(0.25):
                    return
                try:
                    slow.sendall(b"X-Drip-%d: x\r\n" % i)
                except OSError:
                    return

        dripper = threading.Thread(target=trickle)
        dripper.start()
        try:
            # Meanwhile, an ordinary client is answered at once.
            fast = exchange(guarded, b"GET /fast HTTP/1.1\r\n" + H
                            + b"Connection: close\r\n\r\n")
            assert fast.status == 503
            got = b""
            while chunk := slow.recv(65536):
                got += chunk
        finally:
            stop.set()
            dripper.join()
        waited = time.monotonic() - started
    answer = Answer(got)
    assert answer.status == 408, got[:200]
    assert answer.json()["error"] == "request_timeout"
    assert HEAD_TIMEOUT - 0.2 <= waited <= HEAD_TIMEOUT + 3.0


def test_a_silent_connection_is_closed_after_the_deadline(guarded: Sidecar) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
        started = time.monotonic()
        assert s.recv(1024) == b""
        assert time.monotonic() - started <= HEAD_TIMEOUT + 3.0


def read_answer(s: socket.socket) -> Answer:
    """One whole response (head and Content-Length body) from a kept-open connection."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    length = int(Answer(got).headers["content-length"])
    while len(got.partition(b"\r\n\r\n")[2]) < length:
        got += s.recv(65536)
    return Answer(got)


def test_a_trickled_body_gets_408(guarded: Sidecar) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\n" + H + b"Content-Length: 100\r\n\r\nabc")
        started = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.25):
                try:
                    s.sendall(b"x")
                except OSError:
                    return

        dripper = threading.Thread(target=trickle)
        dripper.start()
        try:
            answer = read_answer(s)
        finally:
            stop.set()
            dripper.join()
    assert answer.status == 408 and answer.json()["error"] == "client_timeout"
    assert time.monotonic() - started <= HEAD_TIMEOUT + 3.0


def test_keep_alive_idle_time_is_not_head_time(guarded: Sidecar) -> None:
    """An idle keep-alive connection is not a slow client: only a started head is timed."""
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=10) as s:
        for path in (b"/one", b"/two"):
            s.sendall(b"GET " + path + b" HTTP/1.1\r\n" + H + b"\r\n")
            assert read_answer(s).status == 503
            time.sleep(HEAD_TIMEOUT + 0.5)
