"""Dead-letter records and the retry headers (redrive.deadletter)."""

from __future__ import annotations

import base64
import json

from redrive.deadletter import (
    AttemptLog,
    dead_letter,
    decode_due,
    decode_history,
    encode_due,
    encode_history,
    malformed_letter,
    read_letter,
    replay_marker,
)
from redrive.envelope import decode, encode
from tests.support.worker import make_record


def test_a_dead_letter_keeps_every_field_and_adds_the_history() -> None:
    record = make_record(extra={"newer": 1}, sealed_headers="c2VhbGVk")
    attempts = [AttemptLog(at=10.0, duration_seconds=0.5, status=503),
                AttemptLog(at=20.0, duration_seconds=2.0, error="timeout")]
    letter = decode(encode(dead_letter(record, "max_attempts", attempts, at=30.0, detail="d")))
    assert letter.dead_letter == {
        "reason": "max_attempts", "detail": "d", "at": 30.0,
        "attempts": [{"at": 10.0, "status": 503, "duration_seconds": 0.5},
                     {"at": 20.0, "error": "timeout", "duration_seconds": 2.0}]}
    assert letter.extra == {"newer": 1} and letter.sealed_headers == "c2VhbGVk"
    assert (letter.id, letter.body, letter.headers) == (record.id, record.body, record.headers)


def test_the_history_header_round_trips_and_tolerates_garbage() -> None:
    attempts = [AttemptLog(at=1.5, duration_seconds=0.25, status=500)]
    assert decode_history(encode_history(attempts)) == attempts
    assert decode_history(None) == []
    assert decode_history(b"{not json") == []
    assert decode_history(b'[{"at": "x"}, 3, {"at": 2, "duration_seconds": 1}]') == [
        AttemptLog(at=2.0, duration_seconds=1.0)]


def test_the_due_header_round_trips_and_rejects_nonsense() -> None:
    assert decode_due(encode_due(1234.5678)) == 1234.568
    assert decode_due(b"nan") is None and decode_due(b"inf") is None
    assert decode_due(b"soon") is None and decode_due(None) is None


def test_a_malformed_value_is_wrapped_with_its_raw_bytes() -> None:
    raw = b"\xff\xfe not even utf-8"
    letter_id, value = malformed_letter(raw, ["not JSON"], at=5.0, topic="t", partition=2,
                                        offset=9, key=b"k")
    obj = json.loads(value)
    assert base64.b64decode(obj["raw_base64"]) == raw
    assert obj["dead_letter"]["origin"] == {"topic": "t", "partition": 2, "offset": 9,
                                            "key": "k"}
    letter = read_letter(value)
    assert (letter.id, letter.reason, letter.record) == (letter_id, "malformed", None)


def test_reading_a_record_letter_gives_the_record_and_its_history() -> None:
    record = make_record()
    value = encode(dead_letter(record, "permanent",
                               [AttemptLog(at=1, duration_seconds=0.1, status=400)], at=2))
    letter = read_letter(value)
    assert letter.reason == "permanent" and letter.record is not None
    assert letter.record.id == record.id and letter.attempts[0].status == 400


def test_unreadable_entries_and_replay_markers_are_recognised() -> None:
    assert read_letter(b"\x00garbage", b"key").reason == "malformed"
    marker = read_letter(replay_marker("abc", by="me@host", at=3.0))
    assert (marker.id, marker.reason, marker.record) == ("abc", "replayed", None)
