"""Request status: what became of one captured request, as kept on the status topic.

The sidecar writes ``queued`` once a capture is safe; the retry worker writes ``retrying``
after each failed attempt and the final ``delivered`` (with the replay's response status)
or ``dead_lettered`` (with the reason). Every write is one small JSON record keyed by the
capture id on ``REDRIVE_STATUS_TOPIC`` (default ``<REDRIVE_TOPIC>.status``), a compacted
topic: the latest record per id is the request's state.

Nothing on this topic is secret: no headers, no body, no query string. The public answer
(:meth:`StatusRecord.public`) says even less: state, attempts, times, response status and,
for a dead letter, the reason. The other fields (method, path, the capturing pod) serve
the operator console.

Correctness never depends on compaction (the local broker does not compact): a reader
keeps the latest state per id itself, and a ``queued`` that arrives after any other state
(the sidecar's write raced the worker's) never overrides it. Pure module, no I/O.
"""

from __future__ import annotations

import json
import json.encoder
import math
import re
from dataclasses import dataclass
from typing import Any

STATUS_TOPIC_SUFFIX = ".status"
"""``REDRIVE_STATUS_TOPIC`` defaults to ``REDRIVE_TOPIC`` plus this suffix."""

QUEUED = "queued"
RETRYING = "retrying"
DELIVERED = "delivered"
DEAD_LETTERED = "dead_lettered"
STATES = (QUEUED, RETRYING, DELIVERED, DEAD_LETTERED)
"""Every state a request can be in, in the order it usually passes through them."""
FINAL_STATES = frozenset({DELIVERED, DEAD_LETTERED})

API_PREFIX = "/v1/requests/"
"""The worker's status API: ``GET /v1/requests/{id}`` on ``REDRIVE_STATUS_PORT``."""
WELL_KNOWN_PREFIX = "/.well-known/redrive/requests/"
"""The same answer through the sidecar, on the origin the client called."""
CONSOLE_PATH = "/console/"
DEFAULT_STATUS_PORT = 9080

RECORD_VERSION = 1

TOPIC_CONFIG: dict[str, str] = {
    "cleanup.policy": "compact,delete",
    # A status nobody asked about for a week is gone: the DLQ and the logs keep the rest.
    "retention.ms": str(7 * 86_400_000),
    # Keep every state for an hour before compaction may fold it (the console's history).
    "min.compaction.lag.ms": str(3_600_000),
    "delete.retention.ms": str(86_400_000),
    "segment.ms": str(6 * 3_600_000),
}
"""The status topic's configuration (also in the chart's KafkaTopic and docs/status.md)."""

_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def status_topic(topic: str) -> str:
    """The default status topic of a capture topic."""
    return topic + STATUS_TOPIC_SUFFIX


def valid_id(text: str) -> bool:
    """True for a capture id's shape (a UUID in its 36-character form)."""
    return len(text) == 36 and _ID.match(text) is not None


def status_path(capture_id: str) -> str:
    """The path a client polls, on the sidecar's origin."""
    return WELL_KNOWN_PREFIX + capture_id


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """One state of one request, as written to the status topic."""

    id: str
    state: str
    attempts: int
    """Replays made so far (0 while only queued)."""
    updated_at: float
    """When this state was reached, epoch seconds."""
    captured_at: float
    """When the sidecar captured the request, epoch seconds."""
    response: int | None = None
    """The HTTP status of the last replay that got an answer (the delivering one when
    ``delivered``)."""
    reason: str | None = None
    """Why it was dead-lettered (``permanent``, ``max_attempts``...), else None."""
    detail: str | None = None
    """A sentence saying why, for the console (never in the public answer)."""
    method: str = ""
    path: str = ""
    """Path without the query string, for the console."""
    source: str = ""
    """``namespace/pod`` of the capturing sidecar (the console's "service" filter)."""
    attempt: dict[str, Any] | None = None
    """The attempt that led to this state: ``{at, status | error, duration_seconds}``."""

    def public(self) -> dict[str, Any]:
        """The API's answer: state, attempts, times, response status; never more."""
        out: dict[str, Any] = {
            "id": self.id, "state": self.state, "attempts": self.attempts,
            "updated_at": round(self.updated_at, 3),
            "created_at": round(self.captured_at, 3),
            "response": None if self.response is None else {"status": self.response},
        }
        if self.state == DEAD_LETTERED:
            out["reason"] = self.reason or "unknown"
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": RECORD_VERSION, "id": self.id, "state": self.state,
            "attempts": self.attempts, "updated_at": round(self.updated_at, 3),
            "captured_at": round(self.captured_at, 3)}
        for name in ("response", "reason", "detail", "attempt"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("method", "path", "source"):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out


_quote = json.encoder.encode_basestring_ascii  # the C string encoder json.dumps uses


def supersedes(new_state: str, new_updated: float, old_state: str,
               old_updated: float) -> bool:
    """Whether a state read later replaces the one known: never a ``queued`` (its write may
    lose the race with the worker's), never an older or identical one."""
    if new_state == QUEUED or new_updated < old_updated:
        return False
    return not (new_updated == old_updated and new_state == old_state)


def latest(records: list[StatusRecord]) -> StatusRecord | None:
    """The current state among ``records`` of one id, in the order they were read."""
    current: StatusRecord | None = None
    for r in records:
        if current is None or supersedes(r.state, r.updated_at, current.state,
                                         current.updated_at):
            current = r
    return current


def encode(record: StatusRecord) -> bytes:
    """The JSON of :meth:`StatusRecord.to_dict`, formatted directly: it runs once per
    capture on the sidecar, where ``json.dumps`` of a dict would cost several times more."""
    r = record
    out = (f'{{"version":{RECORD_VERSION},"id":{_quote(r.id)},"state":{_quote(r.state)},'
           f'"attempts":{int(r.attempts)},"updated_at":{r.updated_at:.3f},'
           f'"captured_at":{r.captured_at:.3f}')
    if r.response is not None:
        out += f',"response":{int(r.response)}'
    if r.reason is not None:
        out += ',"reason":' + _quote(r.reason)
    if r.detail is not None:
        out += ',"detail":' + _quote(r.detail)
    if r.attempt is not None:
        out += ',"attempt":' + json.dumps(r.attempt, separators=(",", ":"))
    if r.method:
        out += ',"method":' + _quote(r.method)
    if r.path:
        out += ',"path":' + _quote(r.path)
    if r.source:
        out += ',"source":' + _quote(r.source)
    return (out + "}").encode()


class StatusError(ValueError):
    """A status-topic value this version cannot read."""


def _number(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise StatusError(f"{name} must be a number")
    return float(value)


def _text(obj: dict[str, Any], name: str, limit: int = 2048) -> str:
    value = obj.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _load(value: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise StatusError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise StatusError("not a JSON object")
    return obj


def decode(value: bytes) -> StatusRecord:
    """Read one status-topic value. Raises :class:`StatusError` for anything else."""
    return _from_dict(_load(value))


def _from_dict(obj: dict[str, Any]) -> StatusRecord:
    if obj.get("version") != RECORD_VERSION:
        raise StatusError(f"unknown version {obj.get('version')!r}")
    rid, state = obj.get("id"), obj.get("state")
    if not isinstance(rid, str) or not valid_id(rid):
        raise StatusError("id is not a capture id")
    if state not in STATES:
        raise StatusError(f"unknown state {state!r}")
    attempts = obj.get("attempts")
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 0 <= attempts < 65536:
        raise StatusError("attempts must be a whole number")
    response = obj.get("response")
    if response is not None and (not isinstance(response, int) or isinstance(response, bool)
                                 or not 100 <= response <= 999):
        response = None
    attempt = obj.get("attempt")
    return StatusRecord(
        id=rid.lower(), state=state, attempts=attempts,
        updated_at=_number(obj, "updated_at"), captured_at=_number(obj, "captured_at"),
        response=response, reason=_text(obj, "reason", 64) or None,
        detail=_text(obj, "detail") or None, method=_text(obj, "method", 16),
        path=_text(obj, "path"), source=_text(obj, "source", 256),
        attempt=attempt if isinstance(attempt, dict) else None)


BULK_KEY_PREFIX = "queued-batch:"
"""Key prefix of the sidecar's batched ``queued`` records (each key is unique)."""


def encode_queued_batch(entries: list[tuple[str, float, float, str, str]],
                        source: str) -> bytes:
    """Many ``queued`` states in one Kafka record: ``(id, captured_at, updated_at, method,
    path)`` each, all from one sidecar (``source``).

    The sidecar batches its ``queued`` writes because one Kafka record per capture would
    cost the capture path a measurable share of its rate; a batch costs it a tuple append.
    A batch's key is unique (:data:`BULK_KEY_PREFIX` + a fresh id), so compaction never
    folds one into another: batches leave the topic by its retention time. The worker's
    later states are keyed by capture id as usual, and win over ``queued`` in any order.
    """
    parts = [f'{{"version":{RECORD_VERSION},"state":"queued","source":{_quote(source)},'
             '"requests":[']
    parts.append(",".join(
        f'[{_quote(rid)},{captured:.3f},{updated:.3f},{_quote(method)},{_quote(path)}]'
        for rid, captured, updated, method, path in entries))
    parts.append("]}")
    return "".join(parts).encode()


def decode_any(value: bytes) -> list[StatusRecord]:
    """The states in one status-topic value: one record, or a sidecar's queued batch.
    Raises :class:`StatusError` when the value is neither (unreadable entries of a batch
    are skipped)."""
    obj = _load(value)
    requests = obj.get("requests")
    if requests is None:
        return [_from_dict(obj)]
    if obj.get("version") != RECORD_VERSION or obj.get("state") != QUEUED \
            or not isinstance(requests, list):
        raise StatusError("not a queued batch this version can read")
    source = _text(obj, "source", 256)
    out = []
    for item in requests:
        if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str)
                and valid_id(item[0]) and all(isinstance(t, int | float)
                                              and not isinstance(t, bool)
                                              and math.isfinite(t) for t in item[1:3])):
            continue
        out.append(StatusRecord(
            id=item[0].lower(), state=QUEUED, attempts=0, updated_at=float(item[2]),
            captured_at=float(item[1]), source=source,
            method=item[3][:16] if isinstance(item[3], str) else "",
            path=item[4][:2048] if isinstance(item[4], str) else ""))
    return out
