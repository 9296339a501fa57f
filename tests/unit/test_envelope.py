"""Record v1: encoding, decoding, validation and forward compatibility."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redrive import envelope
from redrive.envelope import Failure, Source
from redrive.errors import RecordError
from tests.support.factories import record


def roundtrip(r: envelope.Record) -> envelope.Record:
    return envelope.decode(envelope.encode(r))


def test_a_record_survives_encode_and_decode_unchanged() -> None:
    r = record()
    assert roundtrip(r) == r


def test_a_utf8_body_is_stored_as_text() -> None:
    obj = json.loads(envelope.encode(record(body="héllo ✓".encode())))
    assert obj["body"] == "héllo ✓"
    assert obj["body_encoding"] == "utf-8"


def test_a_binary_body_is_stored_as_base64_and_restored_byte_for_byte() -> None:
    body = bytes(range(256)) * 3
    r = record(body=body)
    obj = json.loads(envelope.encode(r))
    assert obj["body_encoding"] == "base64"
    assert roundtrip(r).body == body


def test_an_empty_body_round_trips() -> None:
    assert roundtrip(record(body=b"")).body == b""


def test_unicode_in_uri_and_headers_round_trips() -> None:
    r = record(uri="/api/caf%C3%A9?q=%E2%9C%93&n=日本", query_string="q=%E2%9C%93&n=日本",
               headers={"x-name": "Zoë", "content-type": "text/plain; charset=utf-8"})
    assert roundtrip(r) == r


def test_repeated_headers_are_joined_and_names_lower_cased() -> None:
    merged = envelope.merge_headers([("Accept", "a/b"), ("ACCEPT", "c/d"), ("Cookie", "a=1"),
                                     ("cookie", "b=2"), ("X-Empty", "")])
    assert merged == {"accept": "a/b, c/d", "cookie": "a=1; b=2", "x-empty": ""}


def test_the_record_has_the_original_demo_fields_and_the_contract_fields() -> None:
    obj = json.loads(envelope.encode(record()))
    for name in ("version", "id", "timestamp", "method", "uri", "path", "query_string",
                 "headers", "body", "body_encoding", "remote_addr", "backend_url",
                 "error_reason", "error", "idempotency_key", "attempt", "source",
                 "redacted_headers"):
        assert name in obj
    assert obj["version"] == 1
    assert obj["error"] == {"kind": "connect_refused", "status": None,
                            "reached_upstream": False}
    assert "sealed_headers" not in obj


def test_unknown_fields_are_kept_and_written_back() -> None:
    obj = json.loads(envelope.encode(record()))
    obj["added_by_a_newer_sidecar"] = {"x": [1, 2]}
    again = json.loads(envelope.encode(envelope.decode(json.dumps(obj))))
    assert again["added_by_a_newer_sidecar"] == {"x": [1, 2]}


def test_an_unknown_version_is_refused_with_a_clear_error() -> None:
    obj = json.loads(envelope.encode(record()))
    obj["version"] = 2
    with pytest.raises(RecordError, match="unsupported record version 2"):
        envelope.decode(json.dumps(obj))


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(RecordError) as info:
        envelope.decode(json.dumps({"version": 1, "method": "GE T", "uri": "http://x/",
                                    "headers": {"a": 1}}))
    text = str(info.value)
    for expected in ("id: missing", "timestamp: missing", "method:", "uri:", "headers:",
                     "error: missing"):
        assert expected in text


@pytest.mark.parametrize("data", [b"", b"\xff\xfe", b"[1, 2]", b'"text"', b"{", b"null"])
def test_garbage_is_a_record_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(RecordError):
        envelope.decode(data)


def test_bad_base64_is_reported() -> None:
    obj = json.loads(envelope.encode(record()))
    obj.update(body="!!!", body_encoding="base64")
    with pytest.raises(RecordError, match="body: not valid base64"):
        envelope.decode(json.dumps(obj))


def test_idempotency_key_defaults_to_the_id_for_older_producers() -> None:
    obj = json.loads(envelope.encode(record()))
    del obj["idempotency_key"]
    assert envelope.decode(json.dumps(obj)).idempotency_key == obj["id"]


def test_redaction_removes_named_headers_case_insensitively() -> None:
    kept, removed = envelope.redact({"authorization": "Bearer x", "x-api-key": "k", "a": "1"},
                                    frozenset({"authorization", "x-api-key"}))
    assert kept == {"a": "1"}
    assert removed == ("authorization", "x-api-key")


def test_ids_are_unique_uuid7_and_sort_by_time() -> None:
    ids = [envelope.new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    stamps = [i[:13] for i in ids]
    assert stamps == sorted(stamps)


def test_failure_defaults_mean_the_request_may_have_reached_the_app() -> None:
    assert Failure("read_timeout").reached_upstream is True


def _json_dumps(r: envelope.Record) -> bytes:
    return json.dumps(envelope.to_dict(r), ensure_ascii=False, separators=(",", ":")).encode()


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


@given(method=_text, uri=_text, headers=st.dictionaries(_text, _text, max_size=4),
       body=st.binary(max_size=40) | _text.map(str.encode),
       status=st.none() | st.integers(100, 599),
       reached=st.booleans(), timestamp=st.floats(allow_nan=False, allow_infinity=False),
       attempt=st.integers(0, 10**6), sealed=st.none() | _text,
       redacted=st.lists(_text, max_size=3).map(tuple), pod=_text)
def test_the_fast_encoding_is_byte_for_byte_what_json_dumps_writes(
        method: str, uri: str, headers: dict[str, str], body: bytes, status: int | None,
        reached: bool, timestamp: float, attempt: int, sealed: str | None,
        redacted: tuple[str, ...], pod: str) -> None:
    r = record(method=method, uri=uri, path=uri, query_string=uri, headers=headers, body=body,
               error=Failure(method, status, reached), timestamp=timestamp, attempt=attempt,
               sealed_headers=sealed, redacted_headers=redacted, remote_addr=pod,
               backend_url=uri, error_reason=pod, idempotency_key=method,
               source=Source(pod, method))
    assert envelope.encode(r) == _json_dumps(r)


@pytest.mark.parametrize("overrides", [
    {"extra": {"future": [1, 2]}}, {"dead_letter": {"reason": "x"}},
    {"timestamp": float("nan")}, {"timestamp": 5}, {"attempt": True}])
def test_records_off_the_capture_path_encode_as_json_dumps_does(
        overrides: dict[str, object]) -> None:
    r = record(**overrides)
    assert envelope.encode(r) == _json_dumps(r)
