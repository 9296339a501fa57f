"""The reverse proxy: forward to the app, pass answers back, hand failures to capture.

The happy path is kept lean on purpose (no per-request logging, no JSON, header sets
computed once, headers kept as plain pairs, one pooled lean upstream client): the proxy
sits in front of every request. The server (``sidecar.server``) has already read and
checked the whole request, body included, before :meth:`Proxy.handle` runs.

Capture policy: a failure is captured only for a method in ``REDRIVE_CAPTURE_METHODS``,
a path not in ``REDRIVE_CAPTURE_EXCLUDE_PATHS`` and a request that is not itself a replay.
Any other failed request gets the failure passed through: the app's own answer when it
sent one (a 503 stays the app's 503), else a 502 (504 for a timeout) JSON answer with
``queued: false`` and no ``X-Redrive-Id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from json.encoder import encode_basestring_ascii as _json_text  # as json.dumps writes a str

from redrive.envelope import SAFE_METHODS, Failure, merge_headers, new_id
from redrive.headers import HOP_BY_HOP, IDEMPOTENCY_HEADER, REDRIVE_ID_HEADER, REPLAY_HEADER
from redrive.status import status_path
from sidecar import failures
from sidecar.capture import Captured, Capturer, RequestInfo
from sidecar.metrics import SidecarMetrics
from sidecar.server import Request, Response, json_response
from sidecar.settings import Settings
from sidecar.upstream import Response as UpstreamResponse
from sidecar.upstream import UpstreamClient

log = logging.getLogger(__name__)

_JSON_TYPE = ("Content-Type", "application/json")
_QUEUED_MESSAGE = _json_text("The service is temporarily unavailable. Your request was saved "
                             "and will be retried automatically.")
_NOT_QUEUED_MESSAGE = _json_text("The service is temporarily unavailable and your request "
                                 "could not be saved. Please retry later.")

# Recomputed by the upstream client from the buffered body, or rewritten by us.
_FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
_REQUEST_SKIP = HOP_BY_HOP | {"content-length", "x-forwarded-proto", "x-forwarded-host",
                              "expect"}
# A replay's forwarding headers were recorded at capture: passed on as they are.
_REPLAY_SKIP = HOP_BY_HOP | {"content-length", "expect"}
_RESPONSE_SKIP = HOP_BY_HOP | {"content-length"}
# Bodies up to this size are read whole and answered in one write; larger ones stream.
_BUFFER_RESPONSE_BYTES = 64 * 1024


def _connection_tokens(headers: list[tuple[str, str]]) -> frozenset[str]:
    return frozenset(t.strip().lower() for name, value in headers
                     if name.lower() == "connection" for t in value.split(",") if t.strip())


def _forward_headers(request: Request, host: str | None,
                     replay: bool) -> list[tuple[str, str]]:
    """The request's end-to-end headers plus X-Forwarded-For/-Proto/-Host.

    A replay's X-Forwarded-* headers were recorded at capture and are passed on as they
    are, so the app sees what it saw the first time (not the worker's address); a
    header the replay lacks is added as for any request."""
    raw = request.raw_headers
    skip = _REPLAY_SKIP if replay else _REQUEST_SKIP
    if "Connection" in request.headers:
        skip = skip | _connection_tokens(raw)
    remote = request.remote
    out: list[tuple[str, str]] = []
    prior: list[str] = []
    present: set[str] = set()
    for name, value in raw:
        lname = name.lower()
        if lname in skip:
            continue
        if lname in _FORWARDING:
            if not replay:
                prior.append(value)  # only X-Forwarded-For gets here
                continue
            present.add(lname)
        out.append((name, value))
    # X-Forwarded-For: append the peer to what the client sent (documented: the chain is
    # only as trustworthy as the hop before us).
    if remote and "x-forwarded-for" not in present:
        out.append(("X-Forwarded-For", ", ".join([*prior, remote]) if prior else remote))
    if "x-forwarded-proto" not in present:
        out.append(("X-Forwarded-Proto", "http"))
    if host and "x-forwarded-host" not in present:
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


class PathMatcher:
    """Exact paths, and prefixes written with a trailing ``*`` (``/internal/*``)."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._exact = frozenset(p for p in patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def matches(self, path: str) -> bool:
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))


class Proxy:
    """The request handler. One instance per process, bound to one UpstreamClient (which
    holds the upstream URL, its path prefix and the timeouts)."""

    def __init__(self, settings: Settings, client: UpstreamClient,
                 capturer: Capturer, metrics: SidecarMetrics) -> None:
        self._client = client
        self._capturer = capturer
        self._capture_statuses = settings.upstream.capture_statuses
        self._capture_methods = settings.capture.methods
        self._exclude = PathMatcher(settings.capture.exclude_paths)
        self._accept_mode = settings.capture.failure_response == "accept"
        self._retry_after = str(settings.capture.retry_after)
        self._outcome = {o: metrics.requests.labels(outcome=o)
                         for o in ("proxied", "queued", "not_queued", "replay_failed",
                                   "not_captured")}
        self._failure_kind = {k: metrics.upstream_failures.labels(kind=k)
                              for k in failures.KINDS}
        self._observe = metrics.upstream_duration.observe

    def _captures(self, method: str, target: str, replay: bool) -> bool:
        if replay or method not in self._capture_methods:
            return False
        return not (self._exclude and self._exclude.matches(target.partition("?")[0]))

    async def handle(self, request: Request) -> Response:
        method = request.method
        headers = request.headers
        body = request.body
        replay = REPLAY_HEADER in headers
        target = request.target
        if target[0] == "/":
            fwd = _forward_headers(request, headers.get("Host"), replay)
        else:
            # Absolute-form (the server let only http(s) URLs through): RFC 9112 §3.2.2,
            # the target's authority replaces Host; the app gets origin-form, as always.
            target, authority = _origin_form(target)
            fwd = [(n, v) for n, v in _forward_headers(request, authority, replay)
                   if n.lower() != "host"]
            fwd.insert(0, ("Host", authority))
        request_id: str | None = None
        idem_key = headers.get(IDEMPOTENCY_HEADER)
        if idem_key is None and method not in SAFE_METHODS:
            # The original attempt and every replay must carry one key, so the app can
            # tell a redrive from new work. The capture id doubles as the key.
            request_id = new_id()
            idem_key = request_id
            fwd.append((IDEMPOTENCY_HEADER, idem_key))

        # The target keeps the client's exact bytes (percent-encoding included); the
        # client prepends the upstream URL's path prefix.
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
            if not self._captures(method, target, replay):
                return self._not_captured(failure, replay)
            return await self._captured(request, target, fwd, request_id, idem_key,
                                        failure, None)
        self._observe(time.perf_counter() - started)

        status = upstream.status
        if status in self._capture_statuses:
            self._failure_kind[failures.UPSTREAM_STATUS].inc()
            if self._captures(method, target, replay):
                retry_after = upstream.header("Retry-After")
                upstream.release()
                return await self._captured(request, target, fwd, request_id, idem_key,
                                            failures.status_failure(status), retry_after)
        return await self._pass_back(request, upstream)

    async def _pass_back(self, request: Request, upstream: UpstreamResponse) -> Response:
        headers = _response_headers(upstream.raw_headers)
        length = upstream.content_length
        status, reason = upstream.status, upstream.reason
        if request.method == "HEAD" or status in (204, 304):
            upstream.release()
            self._outcome["proxied"].inc()
            return Response(status, headers, reason=reason,
                            length=length if request.method == "HEAD" else None)
        if length is not None and length <= _BUFFER_RESPONSE_BYTES:
            try:
                body = await upstream.read()
            except Exception as exc:
                self._broke_off(request, status, exc)
                raise
            finally:
                upstream.release()
            self._outcome["proxied"].inc()
            return Response(status, headers, body, reason=reason)
        return Response(status, headers, reason=reason, length=length,
                        stream=self._stream(request, upstream))

    async def _stream(self, request: Request, upstream: UpstreamResponse) -> AsyncIterator[bytes]:
        try:
            while chunk := await upstream.next_chunk():
                yield chunk
            self._outcome["proxied"].inc()
        except Exception as exc:
            self._broke_off(request, upstream.status, exc)
            raise
        finally:
            upstream.release()

    def _broke_off(self, request: Request, status: int, exc: Exception) -> None:
        # The app's answer broke off after it started: the request was processed, so it
        # is not captured. The server drops the client's connection.
        self._failure_kind[failures.CONNECTION_RESET].inc()
        log.warning("upstream response broke off", extra={
            "method": request.method, "status": status, "error": repr(exc)})

    async def _captured(self, request: Request, target: str, fwd: list[tuple[str, str]],
                        request_id: str | None, idem_key: str | None,
                        failure: Failure, upstream_retry_after: str | None) -> Response:
        rid = request_id or new_id()
        # The headers as the app got them, X-Forwarded-* included, so that a replay
        # presents the request as it first arrived.
        info = RequestInfo(
            id=rid, method=request.method, uri=target,
            query_string=target.partition("?")[2], headers=merge_headers(fwd),
            body=request.body, remote_addr=request.remote or "",
            idempotency_key=idem_key or rid)
        captured = await self._capturer.capture(info, failure)
        retry_after = upstream_retry_after or self._retry_after
        return self._answer(captured, retry_after)

    def _answer(self, captured: Captured, retry_after: str) -> Response:
        # Written from templates (byte for byte what json.dumps writes for these objects,
        # see tests/unit/test_proxy_answers.py): this is the answer of every capture.
        path = status_path(captured.record_id)
        rid, status_url = _json_text(captured.record_id), _json_text(path)
        headers = [_JSON_TYPE, ("Retry-After", retry_after),
                   (REDRIVE_ID_HEADER, captured.record_id)]
        if captured.queued:
            self._outcome["queued"].inc()
            if self._accept_mode:
                headers.append(("Location", path))
                return Response(202, headers, (
                    f'{{"status": "queued", "id": {rid}, "status_url": {status_url}}}'
                ).encode())
            message, queued = _QUEUED_MESSAGE, "true"
        else:
            self._outcome["not_queued"].inc()
            message, queued = _NOT_QUEUED_MESSAGE, "false"
        return Response(503, headers, (
            f'{{"error": "service_unavailable", "message": {message}, "id": {rid}, '
            f'"queued": {queued}, "status_url": {status_url}}}').encode())

    def _not_captured(self, failure: Failure, replay: bool) -> Response:
        # No answer from the app to pass on: say what failed, and that nothing was saved.
        # A replay is never captured again: the worker sees the failure and retries.
        self._outcome["replay_failed" if replay else "not_captured"].inc()
        status = 504 if failure.kind in (failures.READ_TIMEOUT, failures.CONNECT_TIMEOUT) else 502
        return json_response(status, {"error": failure.kind,
                                      "message": failures.reason(failure), "queued": False})
