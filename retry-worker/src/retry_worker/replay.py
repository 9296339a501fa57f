"""The outbound HTTP boundary: turn a record into a request to the target, and send it.

The request always goes to ``REDRIVE_TARGET_URL``: the record contributes only an
origin-form path (``/a/b?x=1``), checked so that the resulting URL keeps the target's
origin; ``backend_url`` from the record is never used. The replay keeps the request's
identity: the connection goes to the target, but the ``Host`` header is the captured one
(an app that routes by Host gets the replay on the right virtual host; a missing or
malformed one falls back to the target's), and ``X-Forwarded-For/-Proto/-Host`` are sent
as captured (the sidecar passes a replay's forwarding headers on unchanged). Redirects
are not followed. The requests go out on :mod:`redrive.http1` (the lean keep-alive client
the sidecar uses too; about half aiohttp's client CPU per replay, see
docs/retry-worker.md); its exceptions stop here: :meth:`Replayer.send` returns a
:class:`~retry_worker.policy.Result` with either a status or an error name.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable

from multidict import CIMultiDict
from yarl import URL

from redrive import http1
from redrive.envelope import Record
from redrive.headers import ATTEMPT_HEADER, HOP_BY_HOP, IDEMPOTENCY_HEADER, REPLAY_HEADER
from redrive.sealing import SealError, SealKeys
from retry_worker.policy import Result, parse_retry_after
from retry_worker.settings import TargetSettings, target_origin

log = logging.getLogger(__name__)

REPLACED = frozenset({"host", "content-length", "expect", IDEMPOTENCY_HEADER.lower(),
                      REPLAY_HEADER.lower(), ATTEMPT_HEADER.lower()})
"""Set by the replay itself (or by the client from the body), never copied as is."""
# Methods sent without a body (and so without Content-Length) when the record has none;
# any other method says ``Content-Length: 0`` (as aiohttp did).
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Backslash, fragment, control characters and whitespace (``\s`` is str.isspace()).
_NOT_IN_PATH = re.compile(r"[\\#\s\x00-\x1f\x7f]")
# The worker has one target: its origin is parsed once, not per replay.
_origin = functools.lru_cache(maxsize=16)(target_origin)
# RFC 9110 §7.2 Host = uri-host [ ":" port ]: a reg-name, IPv4 or [IPv6] literal.
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]{1,5})?$")


class UnsafeTarget(ValueError):
    """The record's ``uri`` would send the replay somewhere other than the target."""


def replay_url(target: str, uri: str) -> URL:
    """``target`` + ``uri``, refusing anything that could leave the target's origin.

    ``uri`` must be origin-form: one leading ``/`` (``//host/x`` is a network-path
    reference), no backslash (some stacks read it as ``/``), no whitespace, control
    characters or fragment. Raises :class:`UnsafeTarget`.
    """
    if not uri.startswith("/") or uri.startswith("//"):
        raise UnsafeTarget(f"uri {uri[:80]!r} is not a path starting with a single '/'")
    if _NOT_IN_PATH.search(uri):
        raise UnsafeTarget(f"uri {uri[:80]!r} contains characters not allowed in a path")
    try:
        url = URL(target.rstrip("/") + uri, encoded=True)
    except ValueError as exc:
        raise UnsafeTarget(f"uri {uri[:80]!r} does not form a valid URL: {exc}") from None
    if (url.scheme, (url.host or "").lower(), url.port) != _origin(target):
        raise UnsafeTarget(f"uri {uri[:80]!r} would leave the target's origin")
    return url


def replay_headers(record: Record, target: str, attempt: int) -> CIMultiDict[str]:
    """The record's headers minus hop-by-hop ones, plus Host (the captured one when it is
    a valid host, else the target's) and the replay headers."""
    connection_tokens = {t.strip().lower()
                         for t in record.headers.get("connection", "").split(",") if t.strip()}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in record.headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in REPLACED or lowered in connection_tokens:
            continue
        out.add(name, value)
    captured = record.headers.get("host", "")
    if len(captured) <= 255 and _HOST.match(captured):
        out["Host"] = captured
    else:
        parts = URL(target)
        default_port = 443 if parts.scheme == "https" else 80
        host = parts.host or ""
        out["Host"] = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
    out[IDEMPOTENCY_HEADER] = record.idempotency_key
    out[REPLAY_HEADER] = record.id
    out[ATTEMPT_HEADER] = str(attempt)
    return out


def new_client(target: TargetSettings, concurrency: int) -> http1.UpstreamClient:
    """One client for the worker's life: up to ``concurrency`` keep-alive connections to
    the target. No cookies, no automatic headers: the replay carries the record's own."""
    return http1.UpstreamClient(target.url, connect_timeout=target.connect_timeout_seconds,
                                timeout=target.timeout_seconds, max_idle=concurrency)


class Replayer:
    """Sends replays over one :class:`~redrive.http1.UpstreamClient`; :meth:`send` never
    raises for I/O."""

    def __init__(self, client: http1.UpstreamClient, target: str,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter,
                 sealing: SealKeys | None = None) -> None:
        self._client = client
        self._sealing = sealing
        self._target = target
        self._clock = clock
        self._timer = timer

    def url(self, record: Record) -> URL:
        """Raises :class:`UnsafeTarget` (checked before the first attempt)."""
        return replay_url(self._target, record.uri)

    async def send(self, record: Record, attempt: int) -> Result:
        self.url(record)  # refuses a uri that would leave the target's origin
        headers = replay_headers(record, self._target, attempt)
        headers.update(self._unsealed(record))
        started_at, start = self._clock(), self._timer()

        def result(status: int | None = None, error: str | None = None,
                   retry_after: str | None = None) -> Result:
            return Result(started_at=started_at, duration_seconds=self._timer() - start,
                          status=status, error=error,
                          retry_after_seconds=parse_retry_after(retry_after, self._clock()))

        body = record.body or (None if record.method in _BODYLESS else b"")
        try:
            resp = await self._client.request(record.method, record.uri, headers.items(), body)
            try:
                await resp.read()
            finally:
                resp.release()
            return result(resp.status, retry_after=resp.header("Retry-After"))
        except (http1.ConnectTimeout, http1.ReadTimeout):
            return result(error="timeout")
        except http1.ConnectError:
            return result(error="connect_error")
        except http1.ConnectionReset:
            return result(error="connection_error")
        except http1.ProtocolError:
            # A response that is not valid HTTP/1.1: the service answered, but not in HTTP.
            return result(error="bad_response")
        except (http1.UpstreamError, ValueError):
            # ValueError: a method or header the record holds that cannot be sent.
            return result(error="client_error")

    def _unsealed(self, record: Record) -> dict[str, str]:
        """The record's sealed credential headers, decrypted just for this request; only
        names listed in ``redacted_headers`` and never a header the replay sets itself."""
        if self._sealing is None or not record.sealed_headers:
            return {}
        try:
            opened = self._sealing.open(record.sealed_headers, record.id)
        except SealError as exc:
            log.warning("sealed headers could not be opened; replaying without them",
                        extra={"capture_id": record.id, "error": str(exc)})
            return {}
        allowed = set(record.redacted_headers) - HOP_BY_HOP - REPLACED
        return {k: v for k, v in opened.items() if k.lower() in allowed}
