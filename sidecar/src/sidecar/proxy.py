"""The reverse proxy: forward to the app, pass answers back, hand failures to capture.

The happy path is kept lean on purpose (no per-request logging, no JSON, header sets
computed once, headers kept as plain pairs, one pooled lean upstream client): the proxy
sits in front of every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from redrive.envelope import SAFE_METHODS, Failure, merge_headers, new_id
from redrive.status import status_path  # issue 13: request status
from sidecar import failures
from sidecar.capture import Captured, Capturer, RequestInfo
from sidecar.metrics import SidecarMetrics
from sidecar.settings import Settings
from sidecar.upstream import Response, UpstreamClient, UpstreamError

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies also strip.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})
# Recomputed by the upstream client from the buffered body, or rewritten by us.
_REQUEST_SKIP = HOP_BY_HOP | {"content-length", "x-forwarded-proto", "x-forwarded-host"}
_RESPONSE_SKIP = HOP_BY_HOP | {"content-length"}
REPLAY_HEADER = "X-Redrive-Replay"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Bodies up to this size are read whole and answered in one write; larger ones stream.
_BUFFER_RESPONSE_BYTES = 64 * 1024


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def _forward_headers(headers: CIMultiDictProxy[str], remote: str | None, scheme: str,
                     host: str | None) -> list[tuple[str, str]]:
    skip = _REQUEST_SKIP
    if "Connection" in headers:
        skip = skip | _connection_tokens(headers)
    out: list[tuple[str, str]] = []
    prior: list[str] = []
    for name, value in headers.items():
        lname = name.lower()
        if lname in skip:
            continue
        if remote and lname == "x-forwarded-for":
            prior.append(value)
        else:
            out.append((name, value))
    # X-Forwarded-For: append the peer to what the client sent (documented: the chain is
    # only as trustworthy as the hop before us).
    if remote:
        out.append(("X-Forwarded-For", ", ".join([*prior, remote]) if prior else remote))
    out.append(("X-Forwarded-Proto", scheme))
    if host:
        out.append(("X-Forwarded-Host", host))
    return out


def _origin_form(target: str) -> tuple[str, str]:
    """``http://host:port/p?q#f`` -> (``/p?q``, ``host:port``), the bytes kept as sent."""
    rest = target.partition("://")[2]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].partition("#")[0]
    if not path.startswith("/"):
        path = "/" + path
    return path, authority


def _response_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    tokens: set[str] = set()
    for name, value in headers:
        lname = name.lower()
        if lname in _RESPONSE_SKIP:
            if lname == "connection":
                tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
            continue
        out.append((name, value))
    tokens -= HOP_BY_HOP
    if tokens:  # RFC 9110 §7.6.1: the fields Connection names are hop-by-hop too
        out = [(name, value) for name, value in out if name.lower() not in tokens]
    return out


def _json_response(status: int, payload: dict[str, object],
                   headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    resp = web.Response(status=status, body=json.dumps(payload).encode(),
                        content_type="application/json")
    for name, value in headers:
        resp.headers[name] = value
    return resp


class BodyTooLarge(Exception):
    pass


class Proxy:
    """The request handler. One instance per process, bound to one UpstreamClient (which
    holds the upstream URL, its path prefix and the timeouts)."""

    def __init__(self, settings: Settings, client: UpstreamClient,
                 capturer: Capturer, metrics: SidecarMetrics) -> None:
        self._client = client
        self._capturer = capturer
        self._metrics = metrics
        self._capture_statuses = settings.upstream.capture_statuses
        self._max_body = settings.listen.max_body_bytes
        self._read_timeout = settings.listen.client_read_timeout
        self._accept_mode = settings.capture.failure_response == "accept"
        self._retry_after = str(settings.capture.retry_after)
        self._outcome = {o: metrics.requests.labels(outcome=o)
                         for o in ("proxied", "queued", "not_queued", "replay_failed",
                                   "rejected")}
        self._failure_kind = {k: metrics.upstream_failures.labels(kind=k)
                              for k in failures.KINDS}
        self._observe = metrics.upstream_duration.observe

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.method
        headers = request.headers
        try:
            body = await self._read_body(request)
        except BodyTooLarge:
            return self._reject(request, 413, "body_too_large",
                                f"request body exceeds {self._max_body} bytes")
        except TimeoutError:
            return self._reject(request, 408, "client_timeout",
                                "the request body did not arrive in time")
        except aiohttp.web.HTTPException:
            raise
        except (aiohttp.ClientPayloadError, ValueError) as exc:
            return self._reject(request, 400, "bad_request", f"malformed request body: {exc}")

        target = request.raw_path
        if target[0] == "/":
            fwd = _forward_headers(headers, request.remote, request.scheme, request.host)
        else:
            # Absolute-form (the server let only http(s) URLs through): RFC 9112 §3.2.2,
            # the target's authority replaces Host; the app gets origin-form, as always.
            target, authority = _origin_form(target)
            fwd = [(n, v) for n, v in _forward_headers(headers, request.remote,
                                                       request.scheme, authority)
                   if n.lower() != "host"]
            fwd.insert(0, ("Host", authority))
        replay = REPLAY_HEADER in headers
        request_id: str | None = None
        idem_key = headers.get(IDEMPOTENCY_HEADER)
        if idem_key is None and method not in SAFE_METHODS:
            # The original attempt and every replay must carry one key, so the app can
            # tell a redrive from new work. The capture id doubles as the key.
            request_id = new_id()
            idem_key = request_id
            fwd.append((IDEMPOTENCY_HEADER, idem_key))

        # raw_path keeps the client's exact bytes (percent-encoding included); the parsed
        # forms (request.path, request.query_string) are decoded and must not be re-sent.
        # The client prepends the upstream URL's path prefix.
        data = body if body or method not in SAFE_METHODS else None
        started = time.perf_counter()
        try:
            upstream = await self._client.request(method, target, fwd, data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._observe(time.perf_counter() - started)
            failure = failures.classify_exception(exc)
            self._failure_kind[failure.kind].inc()
            if replay:
                return self._replay_failed(failure)
            return await self._captured(request, target, fwd, body, request_id, idem_key,
                                        failure, None)
        self._observe(time.perf_counter() - started)

        status = upstream.status
        if status in self._capture_statuses and not replay:
            self._failure_kind[failures.UPSTREAM_STATUS].inc()
            retry_after = upstream.header("Retry-After")
            upstream.release()
            return await self._captured(request, target, fwd, body, request_id, idem_key,
                                        failures.status_failure(status), retry_after)
        if status in self._capture_statuses:
            self._failure_kind[failures.UPSTREAM_STATUS].inc()
        return await self._pass_back(request, upstream)

    async def _read_body(self, request: web.Request) -> bytes:
        if not request.body_exists:
            return b""
        length = request.content_length
        if length is not None and length > self._max_body:
            raise BodyTooLarge
        if length is not None:
            # Usually the whole body came with the head: take it without arming a timer.
            body = request.content.read_nowait(length)
            if len(body) == length:
                return body
            async with asyncio.timeout(self._read_timeout):
                return body + await request.content.readexactly(length - len(body))
        async with asyncio.timeout(self._read_timeout):
            chunks: list[bytes] = []
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > self._max_body:
                    raise BodyTooLarge
                chunks.append(chunk)
            return b"".join(chunks)

    async def _pass_back(self, request: web.Request,
                         upstream: Response) -> web.StreamResponse:
        headers = _response_headers(upstream.raw_headers)
        length = upstream.content_length
        try:
            if request.method == "HEAD" or upstream.status in (204, 304):
                upstream.release()
                head = web.Response(status=upstream.status, reason=upstream.reason,
                                    headers=headers)
                if length is not None and request.method == "HEAD":
                    head.headers["Content-Length"] = str(length)
                self._outcome["proxied"].inc()
                return head
            if length is not None and length <= _BUFFER_RESPONSE_BYTES:
                body = await upstream.read()
                self._outcome["proxied"].inc()
                return web.Response(status=upstream.status, reason=upstream.reason,
                                    headers=headers, body=body)
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=headers)
            if length is not None:
                resp.content_length = length
            await resp.prepare(request)
            while chunk := await upstream.next_chunk():
                await resp.write(chunk)
            await resp.write_eof()
            self._outcome["proxied"].inc()
            return resp
        except (UpstreamError, aiohttp.ClientError, TimeoutError) as exc:
            # The app's answer broke off after it started: the request was processed, so
            # it is not captured. The client must not mistake a truncated body for a
            # whole one, so its connection is dropped.
            self._failure_kind[failures.CONNECTION_RESET].inc()
            log.warning("upstream response broke off", extra={
                "method": request.method, "status": upstream.status, "error": repr(exc)})
            if request.transport is not None:
                request.transport.abort()
            raise
        finally:
            upstream.release()

    async def _captured(self, request: web.Request, target: str, fwd: list[tuple[str, str]],
                        body: bytes, request_id: str | None, idem_key: str | None,
                        failure: Failure, upstream_retry_after: str | None) -> web.Response:
        rid = request_id or new_id()
        info = RequestInfo(
            id=rid, method=request.method, uri=target,
            query_string=target.partition("?")[2],
            headers=merge_headers((k, v) for k, v in fwd
                                  if k.lower() not in _FORWARDING_HEADERS),
            body=body, remote_addr=request.remote or "", idempotency_key=idem_key or rid)
        captured = await self._capturer.capture(info, failure)
        retry_after = upstream_retry_after or self._retry_after
        return self._answer(captured, retry_after)

    def _answer(self, captured: Captured, retry_after: str) -> web.Response:
        rid = captured.record_id
        status_url = status_path(rid)  # issue 13: request status
        if captured.queued:
            self._outcome["queued"].inc()
            if self._accept_mode:
                return _json_response(202, {"status": "queued", "id": rid,
                                            "status_url": status_url},  # issue 13
                                      [("X-Redrive-Id", rid), ("Location", status_url),
                                       ("Retry-After", retry_after)])  # issue 13
            message = ("The service is temporarily unavailable. Your request was saved "
                       "and will be retried automatically.")
        else:
            self._outcome["not_queued"].inc()
            message = ("The service is temporarily unavailable and your request could not "
                       "be saved. Please retry later.")
        return _json_response(503, {"error": "service_unavailable", "message": message,
                                    "id": rid, "queued": captured.queued,
                                    "status_url": status_url},  # issue 13
                              [("Retry-After", retry_after), ("X-Redrive-Id", rid)])

    def _replay_failed(self, failure: Failure) -> web.Response:
        # Replays are never captured again: the worker sees the failure and retries.
        self._outcome["replay_failed"].inc()
        status = 504 if failure.kind in (failures.READ_TIMEOUT, failures.CONNECT_TIMEOUT) else 502
        return _json_response(status, {"error": failure.kind,
                                       "message": failures.reason(failure)})

    def _reject(self, request: web.Request, status: int, error: str,
                message: str) -> web.Response:
        self._outcome["rejected"].inc()
        resp = _json_response(status, {"error": error, "message": message})
        # Part of the body may still be unread: close rather than resync the stream.
        resp.force_close()
        return resp


# Added by this proxy; a replay passes through the sidecar again, which adds them anew.
_FORWARDING_HEADERS = frozenset({"x-forwarded-proto", "x-forwarded-host"})
