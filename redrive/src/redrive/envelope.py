"""The record: what the sidecar writes to Kafka and the retry worker reads back.

Version 1 is a superset of the original OpenResty interceptor's JSON, so its consumers
keep working. Encoding and decoding are pure (no I/O). Decoding validates every field
and reports all problems in one :class:`~redrive.errors.RecordError`; fields this
version does not know are kept in ``extra`` and written back unchanged, so an older
worker never strips what a newer sidecar added.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from json.encoder import c_encode_basestring, py_encode_basestring  # type: ignore[attr-defined]
from typing import Any

from redrive.errors import RecordError

RECORD_VERSION = 1
VERSION_HEADER = "redrive-version"
SIGNATURE_HEADER = "redrive-signature"
KAFKA_HEADERS: list[tuple[str, bytes]] = [(VERSION_HEADER, str(RECORD_VERSION).encode())]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods that never change state (RFC 9110 §9.2.1): no Idempotency-Key is added."""
IDEMPOTENT_METHODS = SAFE_METHODS | {"PUT", "DELETE"}
"""Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2)."""

_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _RandomPool:
    """os.urandom read in blocks: one getrandom() call serves a thousand ids. The bytes
    stay cryptographically random (capture ids double as Idempotency-Keys, so they must
    not be guessable); only the system-call count changes."""

    _BLOCK = 10 * 1024

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._buf):
            self._buf, self._pos = os.urandom(self._BLOCK), 0
        start = self._pos
        self._pos = start + n
        return self._buf[start:self._pos]


_RANDOM = _RandomPool()


def new_id() -> str:
    """A UUIDv7-style id: unique, and sorts by capture time (RFC 9562 layout)."""
    ms = time.time_ns() // 1_000_000
    raw = bytearray(ms.to_bytes(6, "big") + _RANDOM.take(10))
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()  # uuid.UUID's canonical form, without building a UUID object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the request was captured."""

    kind: str
    """``connect_refused``, ``connect_timeout``, ``read_timeout``, ``upstream_status``..."""
    status: int | None = None
    """The upstream's HTTP status, for ``upstream_status``; else None."""
    reached_upstream: bool = True
    """False only when the request provably never reached the app (connection refused)."""


@dataclass(frozen=True, slots=True)
class Source:
    pod: str = ""
    namespace: str = ""


@dataclass(slots=True)
class Record:
    """One captured request (record version 1).

    A value: code never changes a record's fields, it makes a new one (:meth:`with_attempt`,
    :func:`dataclasses.replace`). Not declared frozen because a frozen dataclass's
    ``__init__`` sets each of these twenty fields through ``object.__setattr__``: five
    times the cost, paid once per capture on the event loop.
    """

    id: str
    timestamp: float
    method: str
    uri: str
    headers: Mapping[str, str]
    body: bytes
    error: Failure
    idempotency_key: str
    path: str = ""
    query_string: str = ""
    remote_addr: str = ""
    backend_url: str = ""
    error_reason: str = ""
    attempt: int = 0
    source: Source = field(default_factory=Source)
    redacted_headers: tuple[str, ...] = ()
    sealed_headers: str | None = None
    dead_letter: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Fields this version does not know, kept for forward compatibility."""
    version: int = RECORD_VERSION

    def with_attempt(self, attempt: int) -> Record:
        return replace(self, attempt=attempt)


def split_uri(uri: str) -> tuple[str, str]:
    """``/a/b?x=1`` -> (``/a/b``, ``x=1``)."""
    path, _, query = uri.partition("?")
    return path, query


def merge_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names; join repeated fields with ``, `` (``; `` for Cookie, RFC 9110 §5.3)."""
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if key in out:
            out[key] = out[key] + ("; " if key == "cookie" else ", ") + value
        else:
            out[key] = value
    return out


def redact(headers: Mapping[str, str],
           names: frozenset[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Split ``headers`` into (kept, redacted names, sorted). Names compare lower-case."""
    kept: dict[str, str] = {}
    removed: list[str] = []
    for key, value in headers.items():
        if key.lower() in names:
            removed.append(key.lower())
        else:
            kept[key] = value
    return kept, tuple(sorted(removed))


def encode_body(body: bytes) -> tuple[str, str]:
    """(text, encoding): UTF-8 text when the bytes are valid UTF-8, else base64."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"


def to_dict(record: Record) -> dict[str, Any]:
    body, body_encoding = encode_body(record.body)
    out: dict[str, Any] = dict(record.extra)
    out.update({
        "version": record.version,
        "id": record.id,
        "timestamp": record.timestamp,
        "method": record.method,
        "uri": record.uri,
        "path": record.path,
        "query_string": record.query_string,
        "headers": dict(record.headers),
        "body": body,
        "body_encoding": body_encoding,
        "remote_addr": record.remote_addr,
        "backend_url": record.backend_url,
        "error_reason": record.error_reason,
        "error": {"kind": record.error.kind, "status": record.error.status,
                  "reached_upstream": record.error.reached_upstream},
        "idempotency_key": record.idempotency_key,
        "attempt": record.attempt,
        "source": {"pod": record.source.pod, "namespace": record.source.namespace},
        "redacted_headers": list(record.redacted_headers),
    })
    if record.sealed_headers is not None:
        out["sealed_headers"] = record.sealed_headers
    if record.dead_letter is not None:
        out["dead_letter"] = dict(record.dead_letter)
    return out


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_text = c_encode_basestring or py_encode_basestring
"""A str as a JSON string literal, as json.dumps(ensure_ascii=False) writes it."""


def encode(record: Record) -> bytes:
    """The Kafka value: compact UTF-8 JSON, byte for byte what ``json.dumps`` writes for
    :func:`to_dict` (key order included).

    A captured record (no ``extra`` or ``dead_letter``, a finite timestamp) is written
    field by field from a fixed template, without building the dict first: this runs once
    per capture, on the event loop. Anything else goes through :func:`to_dict`.
    """
    ts = record.timestamp
    if record.extra or record.dead_letter is not None or type(ts) is not float \
            or not math.isfinite(ts) or type(record.attempt) is not int \
            or type(record.version) is not int:
        return _ENCODER.encode(to_dict(record)).encode()
    body, body_encoding = encode_body(record.body)
    error = record.error
    status = "null" if error.status is None else int.__repr__(error.status)
    headers = ",".join([_text(k) + ":" + _text(v) for k, v in record.headers.items()])
    redacted = ",".join([_text(n) for n in record.redacted_headers])
    sealed = "" if record.sealed_headers is None else \
        ',"sealed_headers":' + _text(record.sealed_headers)
    t = _text
    return (
        f'{{"version":{int.__repr__(record.version)},"id":{t(record.id)}'
        f',"timestamp":{float.__repr__(ts)},"method":{t(record.method)},"uri":{t(record.uri)}'
        f',"path":{t(record.path)},"query_string":{t(record.query_string)}'
        f',"headers":{{{headers}}},"body":{t(body)},"body_encoding":"{body_encoding}"'
        f',"remote_addr":{t(record.remote_addr)},"backend_url":{t(record.backend_url)}'
        f',"error_reason":{t(record.error_reason)},"error":{{"kind":{t(error.kind)}'
        f',"status":{status},"reached_upstream":{"true" if error.reached_upstream else "false"}}}'
        f',"idempotency_key":{t(record.idempotency_key)},"attempt":{int.__repr__(record.attempt)}'
        f',"source":{{"pod":{t(record.source.pod)},"namespace":{t(record.source.namespace)}}}'
        f',"redacted_headers":[{redacted}]{sealed}}}'
    ).encode()


_KNOWN = frozenset({
    "version", "id", "timestamp", "method", "uri", "path", "query_string", "headers", "body",
    "body_encoding", "remote_addr", "backend_url", "error_reason", "error", "idempotency_key",
    "attempt", "source", "redacted_headers", "sealed_headers", "dead_letter",
})


def decode(data: bytes | str) -> Record:
    """Parse and validate a Kafka value. Raises :class:`RecordError` listing every problem."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecordError([f"not JSON: {exc}"]) from None
    return from_dict(obj)


def from_dict(obj: Any) -> Record:
    if not isinstance(obj, dict):
        raise RecordError([f"expected a JSON object, got {type(obj).__name__}"])
    p = _Checker(obj)
    version = p.get("version", int)
    if version is not None and version != RECORD_VERSION:
        raise RecordError([f"unsupported record version {version!r} "
                           f"(this build reads version {RECORD_VERSION})"])
    rid = p.get("id", str)
    if rid is not None and not rid:
        p.problems.append("id: must not be empty")
    timestamp = p.get("timestamp", float)
    method = p.get("method", str)
    if method is not None and (not method or not set(method) <= _TOKEN_CHARS):
        p.problems.append(f"method: {method!r} is not an HTTP method token")
    uri = p.get("uri", str)
    if uri is not None and not uri.startswith("/"):
        p.problems.append("uri: must be an origin-form target starting with '/'")
    headers = p.get("headers", dict)
    if headers is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        p.problems.append("headers: must map header names to string values")
        headers = None
    body = _body(p)
    error = _error(p)
    key = p.get("idempotency_key", str, required=False)
    attempt = p.get("attempt", int, required=False)
    if attempt is not None and attempt < 0:
        p.problems.append("attempt: must not be negative")
    source = p.get("source", dict, required=False) or {}
    redacted = p.get("redacted_headers", list, required=False) or []
    if not all(isinstance(n, str) for n in redacted):
        p.problems.append("redacted_headers: must be a list of header names")
    sealed = p.get("sealed_headers", str, required=False)
    dead_letter = p.get("dead_letter", dict, required=False)
    optional_text = {name: p.get(name, str, required=False) or ""
                     for name in ("path", "query_string", "remote_addr", "backend_url",
                                  "error_reason")}
    if p.problems:
        raise RecordError(p.problems)
    assert rid is not None and method is not None and uri is not None
    assert headers is not None and body is not None and error is not None
    assert timestamp is not None
    path, query = split_uri(uri)
    return Record(
        version=RECORD_VERSION,
        id=rid,
        timestamp=float(timestamp),
        method=method,
        uri=uri,
        path=optional_text["path"] or path,
        query_string=optional_text["query_string"] or query,
        headers={k.lower(): v for k, v in headers.items()},
        body=body,
        remote_addr=optional_text["remote_addr"],
        backend_url=optional_text["backend_url"],
        error_reason=optional_text["error_reason"],
        error=error,
        idempotency_key=key or rid,
        attempt=attempt or 0,
        source=Source(pod=str(source.get("pod", "")), namespace=str(source.get("namespace", ""))),
        redacted_headers=tuple(str(n) for n in redacted),
        sealed_headers=sealed,
        dead_letter=dead_letter,
        extra={k: v for k, v in obj.items() if k not in _KNOWN},
    )


class _Checker:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.problems: list[str] = []

    def get(self, name: str, kind: type[Any], *, required: bool = True) -> Any:
        if name not in self.obj or self.obj[name] is None:
            if required:
                self.problems.append(f"{name}: missing")
            return None
        value = self.obj[name]
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            self.problems.append(f"{name}: expected {_TYPE_NAMES[kind]}, "
                                 f"got {type(value).__name__}")
            return None
        return value


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", dict: "an object",
               list: "a list", bool: "true or false"}


def _body(p: _Checker) -> bytes | None:
    text = p.get("body", str, required=False)
    encoding = p.get("body_encoding", str, required=False) or "utf-8"
    if text is None:
        return b""
    if encoding == "utf-8":
        try:
            return str(text).encode("utf-8")
        except UnicodeEncodeError:
            p.problems.append("body: contains characters that are not valid UTF-8")
            return None
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            p.problems.append("body: not valid base64")
            return None
    p.problems.append(f"body_encoding: {encoding!r} is not 'utf-8' or 'base64'")
    return None


def _error(p: _Checker) -> Failure | None:
    err = p.get("error", dict)
    if err is None:
        return None
    kind = err.get("kind")
    status = err.get("status")
    reached = err.get("reached_upstream", True)
    ok = True
    if not isinstance(kind, str) or not kind:
        p.problems.append("error.kind: missing or not a string")
        ok = False
    if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
        p.problems.append("error.status: expected an integer or null")
        ok = False
    if not isinstance(reached, bool):
        p.problems.append("error.reached_upstream: expected true or false")
        ok = False
    return Failure(kind=kind, status=status, reached_upstream=reached) if ok else None
