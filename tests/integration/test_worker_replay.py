"""The retry worker against a real broker and real HTTP targets on loopback."""

from __future__ import annotations

import itertools
import json
import logging

from aiohttp import web

from redrive.deadletter import read_letter
from redrive.envelope import Failure, decode
from redrive.logs import JsonFormatter
from tests.support.kafka import Broker, read_topic
from tests.support.worker import (
    make_record,
    produce_records,
    target,
    wait_until,
    worker,
    worker_env,
)


async def test_a_captured_request_is_replayed_to_the_target_with_replay_headers(
        broker: Broker, topic: str) -> None:
    record = make_record()
    async with target() as t, worker(worker_env(broker.bootstrap, topic, t.url)) as w:
        await produce_records(broker.bootstrap, topic, [record])
        await t.wait_for(lambda: len(t.seen) == 1)
        seen = t.seen[0]
        await wait_until(lambda: w.metric("redrive_retry_worker_replays_total",
                                          outcome="success") == 1)
    assert (seen.method, seen.path_qs, seen.body) == ("POST", "/api/users?x=1", b'{"name":"ada"}')
    assert seen.headers["Idempotency-Key"] == record.idempotency_key
    assert seen.headers["X-Redrive-Replay"] == record.id
    assert seen.headers["X-Redrive-Attempt"] == "1"
    assert seen.headers["Host"] == record.headers["host"]  # the captured one
    assert seen.headers["x-custom"] == "kept"
    assert "x-hop" not in {k.lower() for k in seen.headers}
    assert seen.headers.get("Connection", "keep-alive").lower() != "x-hop"


def _letters(rows: list[tuple[bytes | None, bytes, dict[str, bytes]]]) -> list:
    return [read_letter(v, k) for k, v, _ in rows]


async def test_a_flaky_target_gets_the_record_on_the_third_attempt(
        broker: Broker, topic: str) -> None:
    async def flaky(_: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n < 3 else 201)

    record = make_record()
    async with target(flaky) as t, worker(worker_env(broker.bootstrap, topic, t.url)) as w:
        await produce_records(broker.bootstrap, topic, [record])
        await t.wait_for(lambda: len(t.seen) == 3)
        await wait_until(lambda: w.metric("redrive_retry_worker_replays_total",
                                          outcome="success") == 1)
        assert w.metric("redrive_retry_worker_replays_total", outcome="retriable") == 2
        assert w.metric("redrive_retry_worker_retries_scheduled_total") == 2
    assert [s.headers["X-Redrive-Attempt"] for s in t.seen] == ["1", "2", "3"]
    assert {s.headers["Idempotency-Key"] for s in t.seen} == {record.idempotency_key}
    # Each wait on the tier of its delay (0.1 s, then 0.2 s with the test backoff).
    retries = [*await read_topic(broker.bootstrap, f"{topic}.retry.100ms", expect=1),
               *await read_topic(broker.bootstrap, f"{topic}.retry.200ms", expect=1)]
    assert [decode(v).attempt for _, v, _ in retries] == [1, 2]
    assert all("redrive-due" in h and "redrive-history" in h for _, _, h in retries)
    assert await read_topic(broker.bootstrap, f"{topic}.dlq", idle=0.5) == []


async def test_a_400_is_dead_lettered_after_one_attempt_with_every_field_kept(
        broker: Broker, topic: str) -> None:
    async def bad_request(_: web.Request, __: int) -> web.StreamResponse:
        return web.Response(status=400)

    record = make_record(extra={"future_field": {"a": 1}})
    async with target(bad_request) as t, worker(worker_env(broker.bootstrap, topic, t.url)) as w:
        await produce_records(broker.bootstrap, topic, [record])
        await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                          reason="permanent") == 1)
    assert len(t.seen) == 1
    [(key, value, headers)] = await read_topic(broker.bootstrap, f"{topic}.dlq", expect=1)
    assert key == record.id.encode() and headers["redrive-version"] == b"1"
    letter = decode(value)
    assert letter.dead_letter is not None
    assert letter.dead_letter["reason"] == "permanent"
    [attempt] = letter.dead_letter["attempts"]
    assert attempt["status"] == 400 and attempt["duration_seconds"] >= 0 and attempt["at"] > 0
    assert (letter.id, letter.method, letter.uri, letter.body, letter.headers) == (
        record.id, record.method, record.uri, record.body, dict(record.headers))
    assert letter.extra["future_field"] == {"a": 1}
    assert letter.attempt == 1


async def test_exhausted_attempts_are_dead_lettered_with_the_full_history(
        broker: Broker, topic: str) -> None:
    async def down(_: web.Request, __: int) -> web.StreamResponse:
        return web.Response(status=503)

    record = make_record()
    env = worker_env(broker.bootstrap, topic, "http://placeholder", REDRIVE_MAX_ATTEMPTS="4")
    async with target(down) as t:
        env["REDRIVE_TARGET_URL"] = t.url
        async with worker(env) as w:
            await produce_records(broker.bootstrap, topic, [record])
            await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                              reason="max_attempts") == 1)
    assert len(t.seen) == 4
    [(_, value, _)] = await read_topic(broker.bootstrap, f"{topic}.dlq", expect=1)
    info = decode(value).dead_letter
    assert info is not None and info["reason"] == "max_attempts"
    assert [a["status"] for a in info["attempts"]] == [503] * 4
    ats = [a["at"] for a in info["attempts"]]
    assert ats == sorted(ats)
    # Backoff 0.1 s doubling, no jitter: the gaps grow.
    gaps = [b - a for a, b in itertools.pairwise(ats)]
    assert gaps[0] >= 0.09 and gaps[2] >= 0.39


async def test_a_connection_refused_target_is_retried_then_dead_lettered(
        broker: Broker, topic: str) -> None:
    from tests.support.procs import free_port

    env = worker_env(broker.bootstrap, topic, f"http://127.0.0.1:{free_port()}",
                     REDRIVE_MAX_ATTEMPTS="2")
    async with worker(env) as w:
        await produce_records(broker.bootstrap, topic, [make_record()])
        await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                          reason="max_attempts") == 1)
    [(_, value, _)] = await read_topic(broker.bootstrap, f"{topic}.dlq", expect=1)
    info = decode(value).dead_letter
    assert info is not None
    assert [a.get("error") for a in info["attempts"]] == ["connect_error", "connect_error"]


async def test_retry_after_from_the_target_is_honoured(broker: Broker, topic: str) -> None:
    async def busy_once(_: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=200)

    async with target(busy_once) as t, worker(worker_env(broker.bootstrap, topic, t.url)):
        await produce_records(broker.bootstrap, topic, [make_record()])
        await t.wait_for(lambda: len(t.seen) == 2)
    gap = t.seen[1].at - t.seen[0].at
    # The schedule alone says 0.1 s; the service asked for 1 s (within the 2 s cap).
    assert 0.95 <= gap < 2.0


async def test_malformed_records_are_dead_lettered_with_their_raw_bytes_and_counted(
        broker: Broker, topic: str) -> None:
    import base64

    from tests.support.worker import produce

    bad = [b"not json at all", json.dumps({"version": 99, "id": "x"}).encode(),
           json.dumps({"version": 1, "id": "y"}).encode()]
    good = make_record()
    async with target() as t, worker(worker_env(broker.bootstrap, topic, t.url)) as w:
        await produce(broker.bootstrap, topic, bad, keys=[b"k", b"k", b"k"])
        await produce_records(broker.bootstrap, topic, [good])
        await wait_until(lambda: w.metric("redrive_retry_worker_rejected_records_total",
                                          reason="malformed") == 3)
        await t.wait_for(lambda: len(t.seen) == 1)
        assert w.metric("redrive_retry_worker_dead_letters_total", reason="malformed") == 3
    assert t.seen[0].headers["X-Redrive-Replay"] == good.id
    rows = await read_topic(broker.bootstrap, f"{topic}.dlq", expect=3)
    letters = _letters(rows)
    assert {lt.reason for lt in letters} == {"malformed"}
    raws = {base64.b64decode(lt.raw["raw_base64"]) for lt in letters}
    assert raws == set(bad)
    details = " ".join(lt.detail for lt in letters)
    assert "not JSON" in details and "unsupported record version 99" in details


async def test_a_record_pointing_elsewhere_never_reaches_that_host(
        broker: Broker, topic: str) -> None:
    async with target() as good, target() as evil:
        follows = make_record(backend_url=evil.url,
                              headers={"host": f"127.0.0.1:{evil.port}"})
        network_path = make_record(uri=f"//127.0.0.1:{evil.port}/steal",
                                   path=f"//127.0.0.1:{evil.port}/steal")
        backslash = make_record(uri=f"/\\127.0.0.1:{evil.port}/steal")
        async with worker(worker_env(broker.bootstrap, topic, good.url)) as w:
            await produce_records(broker.bootstrap, topic, [follows, network_path, backslash])
            await good.wait_for(lambda: len(good.seen) == 1)
            await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                              reason="unsafe") == 2)
        assert evil.seen == []
        # The captured Host is the request's identity (its virtual host), never where the
        # connection goes: that is always the target.
        assert good.seen[0].headers["Host"] == f"127.0.0.1:{evil.port}"
        assert good.seen[0].headers["X-Redrive-Replay"] == follows.id


async def test_a_non_idempotent_request_without_an_idempotency_key_is_dead_lettered_unsafe(
        broker: Broker, topic: str) -> None:
    from redrive.envelope import to_dict
    from tests.support.worker import produce

    record = make_record(error=Failure(kind="read_timeout", reached_upstream=True))
    raw = to_dict(record)
    del raw["idempotency_key"]  # as the original interceptor wrote it
    async with target() as t, worker(worker_env(broker.bootstrap, topic, t.url)) as w:
        await produce(broker.bootstrap, topic, [json.dumps(raw).encode()])
        await wait_until(lambda: w.metric("redrive_retry_worker_dead_letters_total",
                                          reason="unsafe") == 1)
    assert t.seen == []
    [(_, value, _)] = await read_topic(broker.bootstrap, f"{topic}.dlq", expect=1)
    assert read_letter(value).reason == "unsafe"


class JsonLines(logging.Handler):
    """Formats at emit time, inside the worker's log context (capture_id, attempt)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_every_attempt_leaves_one_summary_log_line(broker: Broker, topic: str) -> None:
    async def answers(request: web.Request, n: int) -> web.StreamResponse:
        if request.path.startswith("/bad"):
            return web.Response(status=400)
        return web.Response(status=503 if n == 1 else 200)

    flaky = make_record(uri="/api/users?token=s3cret", path="/api/users")
    bad = make_record(uri="/bad?token=s3cret", path="/bad")
    handler = JsonLines()
    logger = logging.getLogger("retry_worker")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with target(answers) as t, \
                worker(worker_env(broker.bootstrap, topic, t.url)) as w:
            await produce_records(broker.bootstrap, topic, [flaky, bad])
            await wait_until(lambda: w.metric("redrive_retry_worker_replays_total",
                                              outcome="success") == 1
                             and w.metric("redrive_retry_worker_dead_letters_total",
                                          reason="permanent") == 1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [e for e in handler.lines if e["message"] == "replay attempt"]
    by_id: dict[object, list[object]] = {}
    for e in lines:
        by_id.setdefault(e["capture_id"], []).append(e["outcome"])
        assert isinstance(e["duration_seconds"], float) and e["attempt"] in (1, 2)
        assert e["kind"] == flaky.error.kind
        assert "s3cret" not in json.dumps(e)
    assert sorted(by_id[flaky.id]) == ["retry_scheduled", "success"]  # type: ignore[type-var]
    assert by_id[bad.id] == ["dead_lettered"]
    assert not [e for e in handler.lines if e["message"] == "record dead-lettered"]
