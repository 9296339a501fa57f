"""Dead letters: the records the retry worker gives up on, as written to the DLQ topic.

Shared by the retry worker (which writes them) and the operator CLI (which lists, shows and
replays them). A dead letter is the original record with every field kept plus
``dead_letter = {reason, detail, at, attempts: [{at, status | error, duration_seconds}]}``.
A value that is not a record at all (not JSON, unknown version, missing fields) cannot keep
its fields, so it is wrapped instead: the raw bytes travel base64-encoded in ``raw_base64``
and ``dead_letter.reason`` is ``malformed``.

This module also names the Kafka headers the worker uses between attempts: the due time of
the next attempt and the history of attempts so far. Everything here is pure (no I/O).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redrive.envelope import RECORD_VERSION, Record, decode, new_id
from redrive.errors import RecordError

PERMANENT = "permanent"
"""The service answered with a status that trying again cannot fix (a 4xx, a 3xx)."""
MAX_ATTEMPTS = "max_attempts"
"""``REDRIVE_MAX_ATTEMPTS`` replays all failed."""
MAX_AGE = "max_age"
"""The record got older than ``REDRIVE_MAX_AGE_SECONDS`` before it succeeded."""
UNSAFE = "unsafe"
"""Replaying could change state twice (no Idempotency-Key), or the target is not ours."""
MALFORMED = "malformed"
"""The Kafka value is not a record this version can read."""
UNSIGNED = "unsigned"
"""Signing is on and the record carries no ``redrive-signature`` header."""
FORGED = "forged"
"""Signing is on and the signature is wrong, malformed, or from an unknown key id."""
REJECTED = (UNSIGNED, FORGED)
"""Reasons whose letters are never re-signed and never replayed by ``dlq replay``."""
REASONS = (PERMANENT, MAX_ATTEMPTS, MAX_AGE, UNSAFE, MALFORMED, UNSIGNED, FORGED)
REPLAYED = "replayed"
"""Not a dead letter: a marker the CLI appends after putting a record back on the main
topic, so listings show only what is still dead. A later failure appends a new letter."""
MARKER_FIELD = "redrive_marker"

DUE_HEADER = "redrive-due"
"""Kafka header on retry-topic records: epoch seconds before which the next attempt waits."""
HISTORY_HEADER = "redrive-history"
"""Kafka header on retry-topic records: the attempts so far, JSON as in ``dead_letter``."""


@dataclass(frozen=True, slots=True)
class AttemptLog:
    """One replay attempt as kept in a record's history."""

    at: float
    """When the attempt started, epoch seconds."""
    duration_seconds: float
    status: int | None = None
    """The service's HTTP status, when it answered."""
    error: str | None = None
    """Why there was no answer (``connect_error``, ``timeout``...), when it did not."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": round(self.at, 3)}
        if self.status is not None:
            out["status"] = self.status
        if self.error is not None:
            out["error"] = self.error
        out["duration_seconds"] = round(self.duration_seconds, 6)
        return out

    @classmethod
    def from_dict(cls, obj: Any) -> AttemptLog | None:
        """Lenient: anything unreadable is None (history is informative, never critical)."""
        if not isinstance(obj, dict):
            return None
        at, duration = obj.get("at"), obj.get("duration_seconds", 0.0)
        status, error = obj.get("status"), obj.get("error")
        if not isinstance(at, int | float) or not isinstance(duration, int | float) \
                or isinstance(at, bool) or isinstance(duration, bool):
            return None
        if status is not None and (not isinstance(status, int) or isinstance(status, bool)):
            status = None
        return cls(at=float(at), duration_seconds=float(duration), status=status,
                   error=error if isinstance(error, str) else None)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def encode_history(attempts: Iterable[AttemptLog]) -> bytes:
    return json.dumps([a.to_dict() for a in attempts], separators=(",", ":")).encode()


def decode_history(raw: bytes | None) -> list[AttemptLog]:
    """The attempts in a history header; an absent or unreadable header is no history."""
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return []
    if not isinstance(items, list):
        return []
    return [a for a in (AttemptLog.from_dict(i) for i in items) if a is not None]


def decode_due(raw: bytes | None) -> float | None:
    """The due time in a due header (epoch seconds), or None when absent or unreadable."""
    if not raw:
        return None
    try:
        value = float(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def encode_due(due: float) -> bytes:
    return f"{due:.3f}".encode("ascii")


def dead_letter(record: Record, reason: str, attempts: Sequence[AttemptLog], *,
                at: float, detail: str = "") -> Record:
    """``record`` with every field kept and ``dead_letter`` set."""
    return replace(record, dead_letter={
        "reason": reason,
        "detail": detail,
        "at": round(at, 3),
        "attempts": [a.to_dict() for a in attempts],
    })


def malformed_letter(raw: bytes, problems: Sequence[str], *, at: float, topic: str,
                     partition: int, offset: int, key: bytes | None) -> tuple[str, bytes]:
    """(id, value) of the wrapper for a value that is not a record; keeps the raw bytes."""
    letter_id = new_id()
    value = {
        "version": RECORD_VERSION,
        "id": letter_id,
        "timestamp": round(at, 3),
        "raw_base64": base64.b64encode(raw).decode("ascii"),
        "dead_letter": {
            "reason": MALFORMED,
            "detail": "; ".join(problems)[:2000],
            "at": round(at, 3),
            "attempts": [],
            "origin": {"topic": topic, "partition": partition, "offset": offset,
                       "key": key.decode("utf-8", "replace") if key is not None else None},
        },
    }
    return letter_id, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def replay_marker(letter_id: str, *, by: str, at: float) -> bytes:
    """The DLQ value noting that ``letter_id`` was put back on the main topic."""
    return json.dumps({"version": RECORD_VERSION, "id": letter_id, MARKER_FIELD: REPLAYED,
                       "by": by, "at": round(at, 3)}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Letter:
    """A DLQ entry as read back: the record when it is one, else the malformed wrapper."""

    id: str
    reason: str
    detail: str
    at: float | None
    attempts: tuple[AttemptLog, ...]
    record: Record | None
    """The dead-lettered record; None for a malformed wrapper (or unreadable entry)."""
    raw: Mapping[str, Any] | None
    """The entry's JSON object, None when the entry is not even JSON."""


def read_letter(value: bytes, key: bytes | None = None) -> Letter:
    """Interpret one DLQ value. Never raises: unreadable entries come back as ``malformed``."""
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        return Letter(id=key.decode("utf-8", "replace") if key else "?", reason=MALFORMED,
                      detail="DLQ entry is not a JSON object", at=None, attempts=(),
                      record=None, raw=None)
    if obj.get(MARKER_FIELD) == REPLAYED:
        at = obj.get("at")
        return Letter(id=str(obj.get("id") or "?"), reason=REPLAYED,
                      detail=f"replayed by {obj.get('by')}", attempts=(), record=None, raw=obj,
                      at=float(at) if isinstance(at, int | float) else None)
    info = obj.get("dead_letter") if isinstance(obj.get("dead_letter"), dict) else {}
    assert isinstance(info, dict)
    attempts = tuple(a for a in (AttemptLog.from_dict(i) for i in info.get("attempts") or [])
                     if a is not None)
    record: Record | None
    try:
        record = decode(value) if "raw_base64" not in obj else None
    except RecordError:
        record = None
    at = info.get("at")
    rid = obj.get("id")
    fallback = key.decode("utf-8", "replace") if key else "?"
    return Letter(
        id=rid if isinstance(rid, str) and rid else fallback,
        reason=str(info.get("reason") or (MALFORMED if record is None else "unknown")),
        detail=str(info.get("detail") or ""),
        at=float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
        attempts=attempts,
        record=record,
        raw=obj,
    )
