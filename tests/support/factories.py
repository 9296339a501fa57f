"""Factories for records and requests, in one place (as mitmproxy's tflow)."""

from __future__ import annotations

from typing import Any

from redrive.envelope import Failure, Record, Source


def record(**overrides: Any) -> Record:
    fields: dict[str, Any] = {
        "id": "0190a0b0-0000-7000-8000-000000000001",
        "timestamp": 1697812345.678,
        "method": "POST",
        "uri": "/api/users?x=1",
        "path": "/api/users",
        "query_string": "x=1",
        "headers": {"content-type": "application/json", "host": "localhost:8080"},
        "body": b'{"name": "Ada"}',
        "remote_addr": "10.1.2.3",
        "backend_url": "http://127.0.0.1:3000",
        "error_reason": "the backend refused the connection",
        "error": Failure("connect_refused", None, reached_upstream=False),
        "idempotency_key": "0190a0b0-0000-7000-8000-000000000001",
        "source": Source("pod-a", "default"),
    }
    fields.update(overrides)
    return Record(**fields)
