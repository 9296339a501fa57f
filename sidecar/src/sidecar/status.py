"""Request status in the sidecar: the ``queued`` record, and the well-known path.

Two small jobs, kept off the proxy's happy path:

- :meth:`SidecarStatus.queued` is called once a capture is safe (in Kafka or the spool).
  It appends the ``queued`` state to a batch and returns at once; every 50 ms a background
  sender publishes the batch as one Kafka record through the sidecar's existing publisher
  (see :func:`redrive.status.encode_queued_batch`). The client's answer never waits for
  it. A state Kafka did not take is kept in memory for an hour (bounded), so this sidecar
  can still answer ``queued`` for it.
- :meth:`SidecarStatus.forward` answers ``GET /.well-known/redrive/requests/{id}`` by
  asking the worker's status API (``REDRIVE_STATUS_URL`` + ``/v1/requests/{id}``), so a
  client polls the origin it called (202 + ``Location``). Its answer is passed back as is
  (JSON, status 200/400/404/503); an unset URL, a timeout or an unreachable worker is a
  503 JSON with ``Retry-After``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from redrive.envelope import Record
from redrive.kafka import Publisher
from redrive.settings import Env, parse_base_url, valid_topic
from redrive.signing import SigningKeys
from redrive.status import (
    API_PREFIX,
    WELL_KNOWN_PREFIX,
    status_topic,
    valid_id,
)
from redrive.status_writer import QueuedBatcher
from sidecar.server import Request, Response, json_response

log = logging.getLogger(__name__)

_NO_STORE = ("Cache-Control", "no-store")
_PASSED_BACK = frozenset({200, 400, 404, 503})


@dataclass(frozen=True)
class StatusSettings:
    url: str | None = None
    """The worker's status API (``REDRIVE_STATUS_URL``, e.g. ``http://redrive-retry-worker
    :9080``); unset, the well-known path answers 503."""
    topic: str = "failed-requests.status"
    """Where ``queued`` records go (``REDRIVE_STATUS_TOPIC``; default
    ``<REDRIVE_TOPIC>.status``)."""
    timeout: float = 2.0
    """Longest wait for the worker's answer (``REDRIVE_STATUS_TIMEOUT_SECONDS``)."""
    records: bool = True
    """Write ``queued`` records (``REDRIVE_STATUS_RECORDS``); off, requests read 404 until
    the worker's first attempt."""

    @classmethod
    def from_env(cls, env: Env, topic: str) -> StatusSettings:
        raw_url = env.optional("REDRIVE_STATUS_URL")
        url = None
        if raw_url:
            try:
                url = parse_base_url(raw_url)
            except ValueError as exc:
                env.problem("REDRIVE_STATUS_URL", str(exc))
        explicit = env.optional("REDRIVE_STATUS_TOPIC")
        name = explicit or status_topic(topic)
        # A derived name is only as valid as REDRIVE_TOPIC, which is checked on its own.
        if explicit and (not valid_topic(name) or name == topic):
            env.problem("REDRIVE_STATUS_TOPIC", f"{name!r} is not a valid Kafka topic name "
                                                "distinct from REDRIVE_TOPIC")
        return cls(url=url, topic=name,
                   timeout=env.number("REDRIVE_STATUS_TIMEOUT_SECONDS", 2.0, positive=True,
                                      maximum=60),
                   records=env.boolean("REDRIVE_STATUS_RECORDS", True))


def _answer(status: int, payload: Mapping[str, object],
            headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, dict(payload), [_NO_STORE, *(headers or {}).items()])


def _unavailable(message: str) -> Response:
    return _answer(503, {"error": "status_unavailable", "message": message},
                   {"Retry-After": "5"})


class SidecarStatus:
    def __init__(self, settings: StatusSettings, publisher: Publisher, *, source: str,
                 signing: SigningKeys | None = None, publish_timeout: float = 5.0) -> None:
        self._settings = settings
        self._source = source
        self._writer = QueuedBatcher(publisher, settings.topic, source,
                                     timeout=publish_timeout, signing=signing,
                                     ready=lambda: publisher.connected)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._settings.records:
            await self._writer.start()

    async def close(self, timeout: float = 2.0) -> None:
        """Send queued status records (bounded), close the client. Safe to call twice."""
        await self._writer.stop(timeout)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # -- queued ------------------------------------------------------------------------

    def queued(self, record: Record) -> None:
        """A capture is safe: write its ``queued`` status in the background."""
        if not self._settings.records:
            return
        self._writer.add(record.id, record.timestamp, record.method,
                         record.path or record.uri.split("?")[0])

    # -- the well-known path -----------------------------------------------------------

    async def forward(self, request: Request) -> Response:
        """Answer ``/.well-known/redrive/requests/{id}`` from the worker's status API."""
        if request.method not in ("GET", "HEAD"):
            return _answer(405, {"error": "method_not_allowed",
                                 "message": "request status is read with GET"},
                           {"Allow": "GET, HEAD"})
        capture_id = request.target.split("?")[0][len(WELL_KNOWN_PREFIX):]
        if not valid_id(capture_id):
            return _answer(400, {"error": "malformed_id",
                                 "message": "a request id is a UUID, as in X-Redrive-Id"})
        if self._settings.url is None:
            return _unavailable("request status is not configured on this sidecar "
                                "(REDRIVE_STATUS_URL is unset)")
        url = self._settings.url.rstrip("/") + API_PREFIX + capture_id.lower()
        try:
            async with self._client().get(url, allow_redirects=False) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("status API unreachable", extra={"error": repr(exc)})
            return self._local_or(capture_id, _unavailable(
                "the request-status service did not answer; try again shortly"))
        if status in (404, 503):  # unknown, or the replica is still loading
            return self._local_or(capture_id, _pass_back(status, body))
        if status not in _PASSED_BACK:
            return _unavailable(f"the request-status service answered {status}")
        return _pass_back(status, body)

    def _local_or(self, capture_id: str, fallback: Response) -> Response:
        unsent = self._writer.unsent(capture_id.lower())
        return fallback if unsent is None else _answer(200, unsent.public())

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
                connector=aiohttp.TCPConnector(limit=32), auto_decompress=True)
        return self._session


def _pass_back(status: int, body: bytes) -> Response:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _unavailable("the request-status service gave an unreadable answer")
    if not isinstance(payload, dict):
        return _unavailable("the request-status service gave an unreadable answer")
    return _answer(status, payload)
