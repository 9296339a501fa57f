"""Sealed headers: credential headers encrypted with AES-256-GCM into ``sealed_headers``.

Pure functions, no I/O. ``REDRIVE_SEAL_KEY`` uses the signing key-list format
(``kid:secret[,kid:secret...]``, kid optional) with secrets of exactly 32 bytes (base64).
The first key seals; any listed key opens (rotation).

``sealed_headers`` is base64 (standard, padded) of compact JSON
``{"v": 1, "kid": "<kid>", "nonce": "<b64 12 bytes>", "ct": "<b64 ciphertext+tag>"}``;
the plaintext is the JSON object of the sealed headers (lower-case name → value) and
the associated data is ``b"redrive-seal-v1\\x00" + record id``, so a blob moved to
another record, or any altered byte, fails to open.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from redrive.signing import KeyFormatError, parse_key_list

KEY_BYTES = 32
NONCE_BYTES = 12
_AAD_PREFIX = b"redrive-seal-v1\x00"
MAX_SEALED_CHARS = 1 << 20


class SealError(ValueError):
    """A sealed blob could not be opened: malformed, unknown kid, or tampered."""


@dataclass(frozen=True)
class SealKeys:
    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyFormatError("holds no key")

    @classmethod
    def parse(cls, raw: str) -> SealKeys:
        return cls(parse_key_list(raw, min_bytes=KEY_BYTES, exact=True))

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    def __repr__(self) -> str:
        return f"SealKeys(kids={self.kids!r})"

    def seal(self, headers: Mapping[str, str], record_id: str) -> str:
        kid, key = self.keys[0]
        nonce = os.urandom(NONCE_BYTES)
        plain = json.dumps(dict(headers), separators=(",", ":"), ensure_ascii=False,
                           sort_keys=True).encode("utf-8")
        ct = AESGCM(key).encrypt(nonce, plain, _aad(record_id))
        envelope = {"v": 1, "kid": kid, "nonce": _b64(nonce), "ct": _b64(ct)}
        return _b64(json.dumps(envelope, separators=(",", ":")).encode("ascii"))

    def open(self, sealed: object, record_id: str) -> dict[str, str]:
        if not isinstance(sealed, str) or not sealed or len(sealed) > MAX_SEALED_CHARS:
            raise SealError("sealed_headers must be a non-empty base64 string")
        try:
            envelope = json.loads(_unb64(sealed))
        except (ValueError, UnicodeDecodeError):
            raise SealError("sealed_headers is not a base64 JSON envelope") from None
        if not isinstance(envelope, dict) or envelope.get("v") != 1:
            raise SealError("sealed_headers has an unknown envelope version")
        kid, nonce_t, ct_t = envelope.get("kid"), envelope.get("nonce"), envelope.get("ct")
        if not (isinstance(kid, str) and isinstance(nonce_t, str) and isinstance(ct_t, str)):
            raise SealError("sealed_headers envelope lacks kid, nonce or ct")
        key = dict(self.keys).get(kid)
        if key is None:
            raise SealError("sealed_headers was sealed with an unknown key id")
        try:
            nonce, ct = _unb64(nonce_t), _unb64(ct_t)
        except ValueError:
            raise SealError("sealed_headers envelope is not base64") from None
        if len(nonce) != NONCE_BYTES:
            raise SealError("sealed_headers nonce has the wrong length")
        try:
            plain = AESGCM(key).decrypt(nonce, ct, _aad(record_id))
        except InvalidTag:
            raise SealError("sealed_headers failed authentication (tampered, moved to "
                            "another record, or a different key)") from None
        try:
            headers = json.loads(plain.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise SealError("sealed_headers plaintext is not JSON") from None
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise SealError("sealed_headers plaintext is not a header object")
        return headers


def _aad(record_id: str) -> bytes:
    return _AAD_PREFIX + record_id.encode("utf-8", "surrogatepass")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not base64") from None
