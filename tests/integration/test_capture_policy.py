"""Capture policy: which failed requests are captured (methods, excluded paths, replays),
and what the others get: the failure passed through with ``queued: false``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.kafka import Broker, read_topic, unique_topic
from tests.support.metrics import scrape
from tests.support.sidecar import Sidecar, start_sidecar, unused_port_url

POLICY = {"REDRIVE_CAPTURE_METHODS": "POST,PUT,PATCH,DELETE",  # the default, said out loud
          "REDRIVE_CAPTURE_EXCLUDE_PATHS": "/healthz, /internal/*"}


@pytest.fixture(scope="module")
def down(broker: Broker) -> Iterator[Sidecar]:
    """The app is down (connection refused)."""
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("policy"),
                       upstream=unused_port_url(), env=POLICY)
    yield sc
    sc.process.stop()


@pytest.fixture(scope="module")
def failing(broker: Broker, echo_upstream: str) -> Iterator[Sidecar]:
    """The app answers (its /status/503 fails)."""
    sc = start_sidecar(bootstrap=broker.bootstrap, topic=unique_topic("policy-app"),
                       upstream=echo_upstream, env=POLICY)
    yield sc
    sc.process.stop()


async def send(sc: Sidecar, method: str, path: str,
               **kw: Any) -> tuple[int, bytes, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, sc.url + path, **kw) as r:
        return r.status, await r.read(), r.headers


def captures(sc: Sidecar) -> float:
    m = scrape(sc.admin)
    return sum(v for k, v in m.items() if k.startswith("redrive_sidecar_captures_total"))


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/users"), ("HEAD", "/api/users"), ("OPTIONS", "/api/users"),
    ("POST", "/healthz"), ("POST", "/internal/reindex"), ("DELETE", "/internal/"),
])
async def test_a_failure_outside_the_policy_is_passed_through_and_not_queued(
        down: Sidecar, method: str, path: str) -> None:
    before = captures(down)
    status, body, headers = await send(down, method, path, data=b"{}" if method != "GET"
                                       else None)
    assert status == 502
    assert "X-Redrive-Id" not in headers
    if method != "HEAD":
        answer = json.loads(body)
        assert answer["queued"] is False and answer["error"] == "connect_refused"
    assert captures(down) == before


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/users"), ("PUT", "/healthz/deep"), ("PATCH", "/internal"),
    ("DELETE", "/internalx/1"),
])
async def test_a_failure_inside_the_policy_is_captured(
        down: Sidecar, broker: Broker, method: str, path: str) -> None:
    status, _, headers = await send(down, method, path, data=b"{}")
    assert status == 503
    rid = headers["X-Redrive-Id"]
    records = await read_topic(broker.bootstrap, down.topic, keys=[rid.encode()])
    assert rid.encode() in {k for k, _, _ in records}


async def test_an_app_failure_outside_the_policy_is_the_apps_own_answer(
        failing: Sidecar) -> None:
    before = captures(failing)
    status, body, headers = await send(failing, "GET", "/status/503?retry_after=7")
    assert status == 503
    assert body == b"upstream says no"
    assert headers["Retry-After"] == "7" and "X-Redrive-Id" not in headers
    # The same failure on a captured method is captured.
    status, body, headers = await send(failing, "POST", "/status/503", data=b"{}")
    assert status == 503 and "X-Redrive-Id" in headers
    assert captures(failing) == before + 1
