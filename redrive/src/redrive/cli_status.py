"""``redrive status ID``: one request's state, as the status API answers it.

With ``REDRIVE_STATUS_URL`` (``--status-url``) it asks a retry worker's status API
(``GET /v1/requests/{id}``) and prints its JSON. Without it, it reads the status topic
from the beginning (``REDRIVE_STATUS_TOPIC``, default ``<REDRIVE_TOPIC>.status``) and
prints the latest state the same way: slower on a large topic, but needs only Kafka.
Exit codes: 0 found, 1 not known (or the service unreachable), 2 a malformed id.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from typing import IO

from redrive.cli_kafka import CliError, read_all
from redrive.settings import Env, KafkaSettings, parse_base_url, valid_topic
from redrive.status import (
    API_PREFIX,
    StatusError,
    StatusRecord,
    decode_any,
    latest,
    status_topic,
    valid_id,
)


def settings(env: Env, topic: str) -> tuple[str | None, str]:
    """(status URL or None, status topic) from ``REDRIVE_STATUS_URL``/``_TOPIC``."""
    url = env.optional("REDRIVE_STATUS_URL")
    if url:
        try:
            url = parse_base_url(url)
        except ValueError as exc:
            env.problem("REDRIVE_STATUS_URL", str(exc))
    name = env.optional("REDRIVE_STATUS_TOPIC") or status_topic(topic)
    if not valid_topic(name):
        env.problem("REDRIVE_STATUS_TOPIC", f"{name!r} is not a valid Kafka topic name")
    return url or None, name


def _ask(url: str, capture_id: str, timeout: float) -> tuple[int, bytes]:
    # The URL passed parse_base_url: http(s) only.
    request = urllib.request.Request(url + API_PREFIX + capture_id,  # noqa: S310
                                     headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the status API at {url}: {reason}") from None


async def _from_topic(kafka: KafkaSettings, topic: str, capture_id: str,
                      timeout: float) -> StatusRecord | None:
    found: list[StatusRecord] = []
    for m in await read_all(kafka, topic, timeout):
        key = (m.key or b"").decode("utf-8", "replace")
        if key != capture_id and not key.startswith("queued-batch:"):
            continue
        try:
            found.extend(r for r in decode_any(m.value) if r.id == capture_id)
        except StatusError:
            continue
    return latest(found)


async def run(capture_id: str, kafka: KafkaSettings, url: str | None, topic: str,
              timeout: float, out: IO[str]) -> int:
    if not valid_id(capture_id):
        print(f"redrive: error: {capture_id!r} is not a request id (a UUID, as in "
              "X-Redrive-Id)", file=sys.stderr)
        return 2
    capture_id = capture_id.lower()
    if url is None:
        record = await _from_topic(kafka, topic, capture_id, timeout)
        if record is None:
            print(f"redrive: no request {capture_id} on {topic}", file=sys.stderr)
            return 1
        out.write(json.dumps(record.public()) + "\n")
        return 0
    status, body = await asyncio.to_thread(_ask, url, capture_id, timeout)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CliError(f"the status API at {url} answered {status} without JSON") from None
    if status == 200:
        out.write(json.dumps(payload) + "\n")
        return 0
    message = payload.get("message") if isinstance(payload, dict) else None
    print(f"redrive: {message or f'status API answered {status}'}", file=sys.stderr)
    return 1
