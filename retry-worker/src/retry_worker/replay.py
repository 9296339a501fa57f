"""The outbound HTTP boundary: turn a record into a request to the target, and send it.

The request always goes to ``REDRIVE_TARGET_URL``: the record contributes only an
origin-form path (``/a/b?x=1``), checked so that the resulting URL keeps the target's
origin; ``backend_url`` from the record is never used. The replay keeps the request's
identity: the connection goes to the target, but the ``Host`` header is the captured one
(an app that routes by Host gets the replay on the right virtual host; a missing or
malformed one falls back to the target's), and ``X-Forwarded-For/-Proto/-Host`` are sent
as captured (the sidecar passes a replay's forwarding headers on unchanged). Redirects
are not followed. aiohttp's exceptions stop here: :meth:`Replayer.send` returns a
:class:`~retry_worker.policy.Result` with either a status or an error name.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Callable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from redrive.envelope import Record
from redrive.headers import ATTEMPT_HEADER, HOP_BY_HOP, IDEMPOTENCY_HEADER, REPLAY_HEADER
from redrive.sealing import SealError, SealKeys
from retry_worker.policy import Result, parse_retry_after
from retry_worker.settings import TargetSettings, target_origin

log = logging.getLogger(__name__)

REPLACED = frozenset({"host", "content-length", "expect", IDEMPOTENCY_HEADER.lower(),
                      REPLAY_HEADER.lower(), ATTEMPT_HEADER.lower()})
"""Set by the replay itself (or by aiohttp from the body), never copied as is."""
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
    if "\\" in uri or "#" in uri or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F
                                        for ch in uri):
        raise UnsafeTarget(f"uri {uri[:80]!r} contains characters not allowed in a path")
    try:
        url = URL(target.rstrip("/") + uri, encoded=True)
    except ValueError as exc:
        raise UnsafeTarget(f"uri {uri[:80]!r} does not form a valid URL: {exc}") from None
    if (url.scheme, (url.host or "").lower(), url.port) != target_origin(target):
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


def new_session(target: TargetSettings, concurrency: int) -> aiohttp.ClientSession:
    """One session for the worker's life. No cookie jar: one record's cookies must never
    reach another's replay. No automatic headers: the replay carries the record's own."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=target.timeout_seconds,
                                      sock_connect=target.connect_timeout_seconds),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        auto_decompress=False,
    )


class Replayer:
    """Sends replays over one ``ClientSession``; :meth:`send` never raises for I/O."""

    def __init__(self, session: aiohttp.ClientSession, target: str,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter,
                 sealing: SealKeys | None = None) -> None:
        self._session = session
        self._sealing = sealing
        self._target = target
        self._clock = clock
        self._timer = timer

    def url(self, record: Record) -> URL:
        """Raises :class:`UnsafeTarget` (checked before the first attempt)."""
        return replay_url(self._target, record.uri)

    async def send(self, record: Record, attempt: int) -> Result:
        url = self.url(record)
        headers = replay_headers(record, self._target, attempt)
        headers.update(self._unsealed(record))
        started_at, start = self._clock(), self._timer()

        def result(status: int | None = None, error: str | None = None,
                   retry_after: str | None = None) -> Result:
            return Result(started_at=started_at, duration_seconds=self._timer() - start,
                          status=status, error=error,
                          retry_after_seconds=parse_retry_after(retry_after, self._clock()))

        try:
            async with self._session.request(record.method, url, headers=headers,
                                             data=_payload(record.body),
                                             allow_redirects=False) as resp:
                await resp.read()
                return result(resp.status, retry_after=resp.headers.get("Retry-After"))
        except TimeoutError:
            return result(error="timeout")
        except aiohttp.ClientConnectorError:
            return result(error="connect_error")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
                aiohttp.ClientPayloadError):
            return result(error="connection_error")
        except aiohttp.ClientResponseError as exc:
            # A response aiohttp could not parse: the service answered, but not in HTTP.
            return result(error=f"bad_response_{exc.status}" if exc.status else "bad_response")
        except aiohttp.ClientError:
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


async def close_session(session: aiohttp.ClientSession) -> None:
    await session.close()
    # Let the connector's transports close before the loop goes (aiohttp's advice).
    await asyncio.sleep(0)


def _payload(body: bytes) -> bytes | io.BytesIO | None:
    """Large bodies (chunked records can hold megabytes) as a stream, as aiohttp asks
    for bodies over 1 MiB; small ones as bytes."""
    if not body:
        return None
    return io.BytesIO(body) if len(body) > 1_048_576 else body
