"""The status record, the per-replica view and the fire-and-forget writer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from redrive.envelope import new_id
from redrive.errors import ConfigError, PublishError
from redrive.settings import Env
from redrive.status import (
    StatusError,
    StatusRecord,
    decode,
    encode,
    status_path,
    status_topic,
    valid_id,
)
from redrive.status_writer import StatusWriter
from retry_worker.settings import Settings as WorkerSettings
from retry_worker.status_store import StatusView
from sidecar.settings import Settings as SidecarSettings


def rec(rid: str, state: str, at: float, **kw: object) -> StatusRecord:
    fields: dict[str, object] = {"attempts": 0, "captured_at": 100.0, **kw}
    return StatusRecord(id=rid, state=state, updated_at=at, **fields)  # type: ignore[arg-type]


def test_a_record_round_trips_and_its_public_answer_says_nothing_about_the_request() -> None:
    rid = new_id()
    r = rec(rid, "dead_lettered", 105.0, attempts=3, response=400, reason="permanent",
            detail="the service answered 400", method="POST", path="/api/pay",
            source="shop/api-0", attempt={"at": 104.0, "status": 400, "duration_seconds": 0.1})
    assert decode(encode(r)) == r
    assert r.public() == {"id": rid, "state": "dead_lettered", "attempts": 3,
                          "updated_at": 105.0, "created_at": 100.0,
                          "response": {"status": 400}, "reason": "permanent"}
    assert "reason" not in rec(rid, "delivered", 1.0).public()


@pytest.mark.parametrize("value", [
    b"not json", b"[]", b'{"version": 2}',
    b'{"version":1,"id":"x","state":"queued","attempts":0,"updated_at":1,"captured_at":1}',
    b'{"version":1,"id":"01a23217-0417-7b8e-937e-cb2c44830dde","state":"lost",'
    b'"attempts":0,"updated_at":1,"captured_at":1}',
    b'{"version":1,"id":"01a23217-0417-7b8e-937e-cb2c44830dde","state":"queued",'
    b'"attempts":-1,"updated_at":1,"captured_at":1}',
])
def test_values_that_are_not_status_records_are_refused(value: bytes) -> None:
    with pytest.raises(StatusError):
        decode(value)


def test_ids_names_and_paths() -> None:
    assert valid_id(new_id()) and not valid_id("../../etc") and not valid_id("")
    assert status_topic("orders") == "orders.status"
    assert status_path("abc") == "/.well-known/redrive/requests/abc"


def test_the_view_keeps_the_latest_state_and_a_late_queued_never_goes_back() -> None:
    view = StatusView()
    rid = new_id()
    assert view.apply(rec(rid, "retrying", 10.0, attempts=1))
    assert not view.apply(rec(rid, "queued", 9.0))  # the sidecar's write lost the race
    assert view.apply(rec(rid, "delivered", 12.0, attempts=2, response=201))
    assert not view.apply(rec(rid, "retrying", 11.0, attempts=1))  # stale
    assert not view.apply(rec(rid, "delivered", 12.0, attempts=2, response=201))  # repeat
    got = view.get(rid)
    assert got is not None and got.state == "delivered" and got.response == 201
    assert got.attempts == 2 and view.get(new_id()) is None
    recent = view.recent(rid)
    assert recent is not None and [s for _, s in recent.states] == ["retrying", "delivered"]
    assert view.minutes and sum(row[0] for row in view.minutes.values()) == 1


def test_the_view_is_bounded_by_count_and_age() -> None:
    now = [1000.0]
    view = StatusView(max_tracked=3, max_age=100.0, recent=2, clock=lambda: now[0])
    ids = [new_id() for _ in range(5)]
    for i, rid in enumerate(ids):
        view.apply(rec(rid, "queued", 950.0 + i))
    assert len(view) == 3 and view.get(ids[0]) is None and view.get(ids[4]) is not None
    assert len(list(view.recents())) == 2
    now[0] = 1053.5
    assert view.expire() == 2 and len(view) == 1


class FakePublisher:
    """Acknowledges each enqueued record on the next loop turn (or refuses ``fail``)."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = fail

    def enqueue(self, topic: str, key: bytes, value: bytes,
                headers: Sequence[tuple[str, bytes]]) -> asyncio.Future[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            future.set_exception(PublishError("down"))
        else:
            self.sent.append((topic, key))
            asyncio.get_running_loop().call_soon(future.set_result, None)
        return future


async def test_the_writer_returns_at_once_and_sends_in_order() -> None:
    pub = FakePublisher()
    writer = StatusWriter(pub, "t.status")
    await writer.start()
    ids = [new_id() for _ in range(50)]
    for rid in ids:
        writer.write(rec(rid, "queued", 1.0))
    assert pub.sent == []  # nothing was awaited by write()
    await writer.stop(timeout=5)
    assert [k.decode() for _, k in pub.sent] == ids


async def test_the_writer_drops_the_oldest_past_its_bound() -> None:
    results: list[str] = []
    pub = FakePublisher()
    writer = StatusWriter(pub, "t.status", max_pending=2,
                          on_result=lambda r, n: results.extend([r] * n))
    ids = [new_id() for _ in range(3)]
    for rid in ids:
        writer.write(rec(rid, "queued", 1.0))
    assert results == ["dropped"]
    await writer.start()
    await writer.stop(timeout=5)
    assert [k.decode() for _, k in pub.sent] == ids[1:]


async def test_the_writer_tries_again_in_order() -> None:
    pub = FakePublisher(fail=2)
    writer = StatusWriter(pub, "t.status")
    await writer.start()
    ids = [new_id() for _ in range(2)]
    for rid in ids:
        writer.write(rec(rid, "queued", 1.0))
    async with asyncio.timeout(5):
        while len(pub.sent) < 2:
            await asyncio.sleep(0.01)
    await writer.stop()
    assert [k.decode() for _, k in pub.sent] == ids


def test_status_settings_default_from_the_topic_and_are_validated() -> None:
    w = WorkerSettings.from_env({"REDRIVE_TOPIC": "orders"})
    assert w.status.topic == "orders.status" and w.status.port == 9080
    assert w.status.console_token is None
    s = SidecarSettings.from_env({"REDRIVE_TOPIC": "orders",
                                  "REDRIVE_STATUS_URL": "http://worker:9080/"})
    assert s.status.topic == "orders.status" and s.status.url == "http://worker:9080"
    with pytest.raises(ConfigError) as info:
        WorkerSettings.from_env({"REDRIVE_CONSOLE_TOKEN": "short",
                                 "REDRIVE_STATUS_TOPIC": "failed-requests.dlq",
                                 "REDRIVE_STATUS_PORT": "70000"})
    text = info.value.render()
    for name in ("REDRIVE_CONSOLE_TOKEN", "REDRIVE_STATUS_TOPIC", "REDRIVE_STATUS_PORT"):
        assert name in text
    with pytest.raises(ConfigError, match="REDRIVE_STATUS_URL"):
        SidecarSettings.from_env({"REDRIVE_STATUS_URL": "ftp://x"})
    assert Env({}).optional("REDRIVE_STATUS_URL") is None


def test_the_fast_encoder_writes_what_to_dict_says() -> None:
    import json

    r = rec(new_id(), "retrying", 1796136759.8404, attempts=2, response=503,
            method="POST", path='/a"b\\c/\u00e9\n', source="ns/pod",
            attempt={"at": 1.5, "error": "timeout", "duration_seconds": 3.0})
    assert json.loads(encode(r)) == r.to_dict()
    assert decode(encode(r)) == rec(r.id, "retrying", 1796136759.84, attempts=2,
                                    response=503, method="POST", path='/a"b\\c/\u00e9\n',
                                    source="ns/pod", attempt=r.attempt)


def test_a_queued_batch_round_trips_and_skips_unreadable_entries() -> None:
    import json

    from redrive.status import decode_any, encode_queued_batch

    a, b = new_id(), new_id()
    value = encode_queued_batch([(a, 1.0, 1.5, "POST", "/x"), (b, 2.0, 2.5, "PUT", '/"y"')],
                                "ns/pod-0")
    got = decode_any(value)
    assert [(r.id, r.state, r.captured_at, r.updated_at, r.method, r.path, r.source)
            for r in got] == [(a, "queued", 1.0, 1.5, "POST", "/x", "ns/pod-0"),
                              (b, "queued", 2.0, 2.5, "PUT", '/"y"', "ns/pod-0")]
    obj = json.loads(value)
    obj["requests"].append(["not-an-id", 1, 1, "GET", "/"])
    assert len(decode_any(json.dumps(obj).encode())) == 2
    single = rec(a, "delivered", 3.0, attempts=1, response=200)
    assert decode_any(encode(single)) == [single]


async def test_the_batcher_sends_many_states_in_few_records_and_keeps_refused_ones() -> None:
    from redrive.status import decode_any
    from redrive.status_writer import QueuedBatcher

    class Recorder(FakePublisher):
        def __init__(self, fail: int = 0) -> None:
            super().__init__(fail)
            self.values: list[bytes] = []

        def enqueue(self, topic: str, key: bytes, value: bytes,
                    headers: Sequence[tuple[str, bytes]]) -> asyncio.Future[object]:
            self.values.append(value)
            return super().enqueue(topic, key, value, headers)

    pub = Recorder(fail=1)
    batcher = QueuedBatcher(pub, "t.status", "ns/pod", linger=0.01, max_batch=40)
    await batcher.start()
    ids = [new_id() for _ in range(100)]
    for rid in ids:
        batcher.add(rid, 1.0, "POST", "/p")
    async with asyncio.timeout(5):
        while len(pub.values) < 4:
            await asyncio.sleep(0.02)
    await batcher.stop(timeout=5)
    # 40 + 40 + 20 states; the first record was refused, kept, and sent again later.
    assert [len(decode_any(v)) for v in pub.values] == [40, 40, 20, 40]
    written = [r.id for v in pub.values[1:] for r in decode_any(v)]
    assert sorted(written) == sorted(ids)
    assert all(batcher.unsent(rid) is None for rid in ids)


async def test_the_batcher_answers_for_refused_states_until_kafka_takes_them() -> None:
    from redrive.status_writer import QueuedBatcher

    pub = FakePublisher(fail=1000)
    batcher = QueuedBatcher(pub, "t.status", "ns/pod", linger=0.01)
    await batcher.start()
    rid = new_id()
    batcher.add(rid, 1.0, "POST", "/p")
    async with asyncio.timeout(5):
        while batcher.unsent(rid) is None:
            await asyncio.sleep(0.01)
    got = batcher.unsent(rid)
    assert got is not None and got.state == "queued" and got.source == "ns/pod"
    pub.fail = 0
    async with asyncio.timeout(10):
        while batcher.unsent(rid) is not None:
            await asyncio.sleep(0.05)
    await batcher.stop()
    assert [k for _, k in pub.sent if k]


async def test_while_kafka_is_known_down_the_batcher_holds_states_without_churning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A long Kafka outage with captures spooling: the states wait, each is set aside for
    unsent() once (not once per retry, which stalled the loop with 100,000 pending),
    nothing is encoded, and all go out once Kafka is back."""
    from redrive import status_writer
    from redrive.status import decode_any
    from redrive.status_writer import QueuedBatcher

    encoded: list[int] = []
    real_encode = status_writer.encode_queued_batch

    def counting(entries: list[Any], source: str) -> bytes:
        encoded.append(len(entries))
        return real_encode(entries, source)

    monkeypatch.setattr(status_writer, "encode_queued_batch", counting)
    up = False

    class Recorder(FakePublisher):
        values: list[bytes] = []

        def enqueue(self, topic: str, key: bytes, value: bytes,
                    headers: Sequence[tuple[str, bytes]]) -> asyncio.Future[object]:
            self.values.append(value)
            return super().enqueue(topic, key, value, headers)

    pub = Recorder()
    batcher = QueuedBatcher(pub, "t.status", "ns/pod", linger=0.01, ready=lambda: up)
    await batcher.start()
    first = [new_id() for _ in range(300)]
    for rid in first:
        batcher.add(rid, 1.0, "POST", "/p")
    async with asyncio.timeout(5):
        while batcher.unsent(first[-1]) is None:
            await asyncio.sleep(0.01)
    set_aside = []
    monkeypatch.setattr(batcher, "_set_aside", lambda entries: set_aside.append(len(entries)))
    later = [new_id() for _ in range(20)]
    for rid in later:
        batcher.add(rid, 2.0, "POST", "/p")
    await asyncio.sleep(1.2)  # two polls while down
    assert encoded == [] and pub.values == []
    assert sum(set_aside) == 20  # only the new ones, once
    assert batcher.unsent(first[0]) is not None
    monkeypatch.undo()
    up = True
    async with asyncio.timeout(5):
        while sum(len(decode_any(v)) for v in pub.values) < 320:
            await asyncio.sleep(0.02)
    await batcher.stop()
    assert sorted(r.id for v in pub.values for r in decode_any(v)) == sorted(first + later)
    assert all(batcher.unsent(rid) is None for rid in first + later)
