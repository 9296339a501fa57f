"""Property tests: any change to a signed value or its header breaks the signature;
sealed headers round-trip and any tampering fails."""

from __future__ import annotations

import base64

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from redrive.sealing import SealError, SealKeys
from redrive.signing import SigningKeys, Verdict

FAST = settings(max_examples=60, deadline=None)
SIGN = SigningKeys.parse("a:" + base64.b64encode(b"s" * 32).decode())
SEAL = SealKeys.parse("k:" + base64.b64encode(b"k" * 32).decode())


@FAST
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_a_changed_value_breaks_the_signature(value: bytes, other: bytes) -> None:
    header = SIGN.sign(value)
    assert SIGN.verify(value, header) is Verdict.VALID
    assume(other != value)
    assert SIGN.verify(other, header) is Verdict.FORGED


@FAST
@given(st.binary(max_size=100), st.data())
def test_a_changed_header_breaks_the_signature(value: bytes, data: st.DataObject) -> None:
    header = bytearray(SIGN.sign(value).encode())
    i = data.draw(st.integers(0, len(header) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != header[i]))
    header[i] = new
    assert SIGN.verify(value, bytes(header)) is Verdict.FORGED


headers = st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=4)


@FAST
@given(headers, st.text(min_size=1, max_size=20))
def test_seal_round_trip(hdrs: dict[str, str], rid: str) -> None:
    assume("\ud800" not in rid)
    assert SEAL.open(SEAL.seal(hdrs, rid), rid) == hdrs


@FAST
@given(headers, st.data())
def test_tampered_seal_fails(hdrs: dict[str, str], data: st.DataObject) -> None:
    blob = bytearray(SEAL.seal(hdrs, "id").encode())
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] = data.draw(st.sampled_from(b"AB+/=x").filter(lambda b: b != blob[i]))
    with pytest.raises(SealError):
        SEAL.open(bytes(blob).decode(), "id")
