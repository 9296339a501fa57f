"""Sealed headers: round trip, binding to the record id, tamper detection, rotation."""

from __future__ import annotations

import base64
import json

import pytest

from redrive.sealing import SealError, SealKeys
from redrive.signing import KeyFormatError

A = base64.b64encode(b"a" * 32).decode()
B = base64.b64encode(b"b" * 32).decode()


def test_round_trip() -> None:
    keys = SealKeys.parse(f"s1:{A}")
    blob = keys.seal({"authorization": "Bearer x"}, "id-1")
    assert "Bearer" not in base64.b64decode(blob).decode()
    assert keys.open(blob, "id-1") == {"authorization": "Bearer x"}


def test_blob_is_bound_to_the_record_id() -> None:
    keys = SealKeys.parse(A)
    with pytest.raises(SealError, match="authentication"):
        keys.open(keys.seal({"cookie": "c"}, "id-1"), "id-2")


def test_rotation_and_unknown_kid() -> None:
    old, new = SealKeys.parse(f"old:{A}"), SealKeys.parse(f"new:{B},old:{A}")
    assert new.open(old.seal({"a": "b"}, "i"), "i") == {"a": "b"}
    with pytest.raises(SealError, match="unknown key id"):
        old.open(new.seal({"a": "b"}, "i"), "i")


def test_tampered_ciphertext_fails() -> None:
    keys = SealKeys.parse(A)
    env = json.loads(base64.b64decode(keys.seal({"a": "b"}, "i")))
    ct = bytearray(base64.b64decode(env["ct"]))
    ct[0] ^= 1
    env["ct"] = base64.b64encode(bytes(ct)).decode()
    with pytest.raises(SealError):
        keys.open(base64.b64encode(json.dumps(env).encode()).decode(), "i")


@pytest.mark.parametrize("blob", [None, "", 5, "!!", base64.b64encode(b"[]").decode(),
                                  base64.b64encode(b'{"v":2}').decode()])
def test_malformed_blobs_are_seal_errors(blob: object) -> None:
    with pytest.raises(SealError):
        SealKeys.parse(A).open(blob, "i")


def test_seal_key_must_be_exactly_32_bytes() -> None:
    with pytest.raises(KeyFormatError, match="exactly 32"):
        SealKeys.parse(base64.b64encode(b"a" * 33).decode())
