"""HTTP header names of the contract (CONTRACT.md), defined once for every component."""

from __future__ import annotations

REPLAY_HEADER = "X-Redrive-Replay"
"""On every replay: the capture id. The sidecar never captures a request carrying it."""
ATTEMPT_HEADER = "X-Redrive-Attempt"
"""On every replay: the attempt number, from 1."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
"""Added by the sidecar to a non-safe request that has none; kept by every replay."""
REDRIVE_ID_HEADER = "X-Redrive-Id"
"""On every capture answer: the capture id."""

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
})
"""RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies also strip:
meaningful for one connection only, never forwarded (lower-case)."""
