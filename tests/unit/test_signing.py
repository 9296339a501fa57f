"""Record signatures: format, rotation, tamper detection, key parsing."""

from __future__ import annotations

import base64

import pytest

from redrive.signing import SIGNATURE_HEADER, KeyFormatError, SigningKeys, Verdict, with_signature

A = base64.b64encode(b"a" * 32).decode()
B = base64.b64encode(b"b" * 32).decode()


def test_sign_and_verify() -> None:
    keys = SigningKeys.parse(f"new:{A}")
    header = keys.sign(b"value")
    assert header.startswith("v1;kid=new;sig=")
    assert keys.verify(b"value", header) is Verdict.VALID
    assert keys.verify(b"value!", header) is Verdict.FORGED
    assert keys.verify(b"value", None) is Verdict.UNSIGNED


def test_rotation_old_kid_verifies_new_kid_signs() -> None:
    old = SigningKeys.parse(f"old:{A}")
    rotated = SigningKeys.parse(f"new:{B},old:{A}")
    assert rotated.verify(b"v", old.sign(b"v")) is Verdict.VALID
    assert rotated.sign(b"v").startswith("v1;kid=new;")
    assert old.verify(b"v", rotated.sign(b"v")) is Verdict.FORGED


def test_unknown_kid_or_wrong_kid_is_forged() -> None:
    keys = SigningKeys.parse(f"a:{A},b:{B}")
    sig = keys.sign(b"v").replace("kid=a", "kid=b")
    assert keys.verify(b"v", sig) is Verdict.FORGED
    assert keys.verify(b"v", "garbage") is Verdict.FORGED
    assert keys.verify(b"v", b"\xff\xfe") is Verdict.FORGED


def test_bare_secret_gets_a_stable_kid_and_the_chart_key_parses() -> None:
    one, two = SigningKeys.parse(A), SigningKeys.parse(f" {A} ")
    assert one.signing_kid == two.signing_kid and one.signing_kid.startswith("k")


def test_headers_helpers() -> None:
    keys = SigningKeys.parse(A)
    headers = with_signature([("redrive-version", b"1"), (SIGNATURE_HEADER, b"old")], b"v", keys)
    assert [k for k, _ in headers] == ["redrive-version", SIGNATURE_HEADER]
    assert keys.verify_headers(b"v", headers) is Verdict.VALID
    assert keys.verify_headers(b"v", [("redrive-version", b"1")]) is Verdict.UNSIGNED
    assert keys.verify_headers(b"v", headers + headers[-1:]) is Verdict.FORGED
    assert with_signature(headers, b"v", None) == [("redrive-version", b"1")]


@pytest.mark.parametrize("raw", ["", "short", "a:" + base64.b64encode(b"x" * 8).decode(),
                                 f"bad kid:{A}", f"a:{A},a:{B}", f"{A},,{B}", "a:!!!!"])
def test_bad_key_lists_are_refused_without_echoing_secrets(raw: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        SigningKeys.parse(raw)
    assert A not in str(info.value) and "!!!!" not in str(info.value)


def test_repr_hides_secrets() -> None:
    assert A not in repr(SigningKeys.parse(A)) and "aaaa" not in repr(SigningKeys.parse(A))
