"""Record signatures: HMAC-SHA256 over the exact Kafka record value bytes.

Pure functions, no I/O. The signature travels in the Kafka record header
``redrive-signature`` as ``v1;kid=<kid>;sig=<base64url, unpadded>``.

``REDRIVE_SIGNING_KEY`` is a comma-separated list of entries, ``kid:secret`` or a bare
``secret``; the secret is base64 (standard or URL-safe, padding optional) of at least
32 bytes. A bare secret gets the kid ``k`` + the first 8 hex digits of SHA-256(secret),
so the same secret always has the same kid. The first entry signs; every entry verifies
(key rotation). Secrets are never echoed in errors or ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from redrive.envelope import SIGNATURE_HEADER

MIN_SECRET_BYTES = 32
_KID = re.compile(r"^[A-Za-z0-9._-]{1,32}$")
_HEADER = re.compile(r"^v1;kid=([A-Za-z0-9._-]{1,32});sig=([A-Za-z0-9_-]{43})$")


class KeyFormatError(ValueError):
    """A key list could not be parsed; the message never contains secret material."""


def decode_secret(text: str, *, what: str) -> bytes:
    """Decode a base64 (standard or URL-safe, padding optional) secret."""
    cleaned = text.strip()
    padded = cleaned + "=" * (-len(cleaned) % 4)
    try:
        if "-" in cleaned or "_" in cleaned:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise KeyFormatError(f"{what} is not valid base64") from None


def default_kid(secret: bytes) -> str:
    return "k" + hashlib.sha256(secret).hexdigest()[:8]


def parse_key_list(raw: str, *, min_bytes: int,
                   exact: bool = False) -> tuple[tuple[str, bytes], ...]:
    """Parse ``kid:secret[,kid:secret...]`` (kid optional) into ``((kid, secret), ...)``."""
    entries = [e.strip() for e in raw.split(",")]
    if not any(entries):
        raise KeyFormatError("holds no key")
    keys: list[tuple[str, bytes]] = []
    for n, entry in enumerate(entries, start=1):
        if not entry:
            raise KeyFormatError(f"entry {n} is empty")
        kid: str | None
        if ":" in entry:
            kid, _, text = entry.partition(":")
            kid = kid.strip()
            if not _KID.match(kid):
                raise KeyFormatError(f"entry {n}: the key id must be 1-32 characters "
                                     "of A-Z a-z 0-9 . _ -")
        else:
            kid, text = None, entry
        secret = decode_secret(text, what=f"entry {n}'s secret")
        if exact and len(secret) != min_bytes:
            raise KeyFormatError(f"entry {n}'s secret must decode to exactly {min_bytes} "
                                 f"bytes (got {len(secret)})")
        if len(secret) < min_bytes:
            raise KeyFormatError(f"entry {n}'s secret must decode to at least {min_bytes} "
                                 f"bytes (got {len(secret)})")
        kid = kid or default_kid(secret)
        if any(k == kid for k, _ in keys):
            raise KeyFormatError(f"entry {n}: key id {kid!r} appears twice")
        keys.append((kid, secret))
    return tuple(keys)


class Verdict(Enum):
    VALID = "valid"
    UNSIGNED = "unsigned"
    FORGED = "forged"


@dataclass(frozen=True)
class SigningKeys:
    """An ordered key ring: the first key signs, any key verifies."""

    keys: tuple[tuple[str, bytes], ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyFormatError("holds no key")

    @classmethod
    def parse(cls, raw: str) -> SigningKeys:
        return cls(parse_key_list(raw, min_bytes=MIN_SECRET_BYTES))

    @property
    def signing_kid(self) -> str:
        return self.keys[0][0]

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    def __repr__(self) -> str:
        return f"SigningKeys(kids={self.kids!r})"

    def sign(self, value: bytes) -> str:
        """The ``redrive-signature`` header value for ``value``, with the first key."""
        kid, secret = self.keys[0]
        return f"v1;kid={kid};sig={_mac(secret, value)}"

    def verify(self, value: bytes, header: bytes | str | None) -> Verdict:
        """Check ``header`` against ``value`` in constant time."""
        if header is None:
            return Verdict.UNSIGNED
        if isinstance(header, bytes):
            try:
                header = header.decode("ascii")
            except UnicodeDecodeError:
                return Verdict.FORGED
        match = _HEADER.match(header)
        if match is None:
            return Verdict.FORGED
        kid, sig = match.groups()
        ok = False
        for k, secret in self.keys:
            # Compare against every key so timing does not reveal which kid matched.
            same = hmac.compare_digest(_mac(secret, value).encode(), sig.encode())
            ok |= same and hmac.compare_digest(k.encode(), kid.encode())
        return Verdict.VALID if ok else Verdict.FORGED

    def verify_headers(self, value: bytes,
                       headers: Mapping[str, bytes] | list[tuple[str, bytes]] | None) -> Verdict:
        """Verify from Kafka record headers; several signature headers count as forged."""
        items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        found = [v for k, v in items if k.lower() == SIGNATURE_HEADER]
        if not found:
            return Verdict.UNSIGNED
        if len(found) > 1:
            return Verdict.FORGED
        return self.verify(value, found[0])


def _mac(secret: bytes, value: bytes) -> str:
    digest = hmac.new(secret, value, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def with_signature(headers: list[tuple[str, bytes]], value: bytes,
                   keys: SigningKeys | None) -> list[tuple[str, bytes]]:
    """``headers`` minus any old signature, plus a fresh one when ``keys`` is set."""
    kept = [(k, v) for k, v in headers if k.lower() != SIGNATURE_HEADER]
    if keys is not None:
        kept.append((SIGNATURE_HEADER, keys.sign(value).encode("ascii")))
    return kept
