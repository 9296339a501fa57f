"""Property tests: the record codec and header redaction."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from redrive import envelope
from redrive.envelope import Failure, Record
from redrive.errors import RecordError

FAST = settings(max_examples=80, deadline=None)
names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF,
                              blacklist_characters=":"), min_size=1, max_size=20).map(str.lower)
values = st.text(st.characters(min_codepoint=32, max_codepoint=0x10FFFF,
                               blacklist_categories=("Cs",)), max_size=40)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@st.composite
def records(draw: st.DrawFn) -> Record:
    uri = "/" + draw(st.text(max_size=30))
    path, query = envelope.split_uri(uri)
    return Record(
        id=draw(st.text(min_size=1, max_size=30)),
        timestamp=draw(st.floats(min_value=0, max_value=4e9)),
        method=draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])),
        uri=uri,
        path=path,
        query_string=query,
        headers=draw(st.dictionaries(names, values, max_size=6)),
        body=draw(st.binary(max_size=200)),
        error=Failure(kind=draw(st.sampled_from(["connect_refused", "upstream_status"])),
                      status=draw(st.none() | st.integers(100, 599)),
                      reached_upstream=draw(st.booleans())),
        idempotency_key=draw(st.text(min_size=1, max_size=20)),
        attempt=draw(st.integers(0, 100)),
        redacted_headers=tuple(sorted(draw(st.sets(names, max_size=3)))),
        sealed_headers=draw(st.none() | st.text(min_size=1, max_size=30)),
    )


@FAST
@given(records())
def test_encode_decode_round_trip(record: Record) -> None:
    assert envelope.decode(envelope.encode(record)) == record


@FAST
@given(st.binary(max_size=300))
def test_decode_never_crashes_on_bytes(data: bytes) -> None:
    try:
        envelope.decode(data)
    except RecordError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)


@FAST
@given(json_values)
def test_decode_never_crashes_on_json_values(value: Any) -> None:
    try:
        envelope.decode(json.dumps(value))
    except RecordError as exc:
        assert str(exc).startswith("invalid record: ") and exc.problems


@FAST
@given(st.dictionaries(names, values, max_size=8),
       st.sets(names, max_size=4))
def test_redaction_removes_every_listed_name_and_keeps_the_rest(
        headers: dict[str, str], redact: set[str]) -> None:
    mixed = {(k.upper() if i % 2 else k): v for i, (k, v) in enumerate(headers.items())}
    kept, removed = envelope.redact(mixed, frozenset(redact))
    assert not {k.lower() for k in kept} & redact
    assert set(removed) == {k.lower() for k in mixed} & redact
    assert kept == {k: v for k, v in mixed.items() if k.lower() not in redact}
