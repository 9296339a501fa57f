"""The proxy's HTTP/1.1 server: an ``asyncio.Protocol`` on httptools (llhttp).

Only public API of its dependencies: httptools parses (the same llhttp aiohttp uses, and
the one ``sidecar.upstream`` parses responses with), this module frames, times and
answers. llhttp refuses most request-smuggling shapes on its own: Content-Length beside
Transfer-Encoding, duplicate or signed Content-Length, obfuscated or repeated
Transfer-Encoding, bare CR or LF, NUL and control bytes, invalid methods and targets,
obsolete line folding. What it leaves to us, and this module adds (the pure checks and
the error answers live in ``sidecar.guards``):

- Messages it parses but a reverse proxy must not pass on: versions other than HTTP/1.0
  and 1.1 (505), ``CONNECT`` (405), request targets that are neither origin-form
  (``/path``) nor an absolute http(s) URL (400), a Transfer-Encoding other than plain
  ``chunked`` (501, or 400 on HTTP/1.0, where its framing is not trusted), an HTTP/1.1
  request without exactly one ``Host`` (400). Refused before any handler runs, so
  nothing reaches the app or Kafka.
- Limits: ``REDRIVE_MAX_HEADER_BYTES`` (request target and each header field) and
  ``REDRIVE_MAX_HEADERS`` (431), ``REDRIVE_MAX_BODY_BYTES`` (413, as soon as the
  declared or received size passes it).
- A byte budget for request bodies held at once, across all connections
  (``REDRIVE_BUFFERED_BODY_MAX_BYTES``, :class:`BodyBudget`): a body is charged from its
  first byte (a declared Content-Length at once) until its answer is written. A request
  whose body would pass the budget is answered ``503`` JSON with ``queued: false`` and
  Retry-After before its body is read (a chunked one as soon as it passes), so a crowd
  of large uploads costs at most the budget, never an OOM.
- Deadlines: a request head that starts arriving must be complete within
  ``REDRIVE_CLIENT_READ_TIMEOUT_SECONDS`` (408 ``request_timeout``), and its body again
  within that time (408 ``client_timeout``); a new connection that sends nothing in that
  time is closed. An idle keep-alive connection is not a slow client: it is closed after
  ``keepalive_timeout``.
- Error answers: a short JSON body, ``Connection: close``, never the offending bytes; one
  rate-limited log line with the error class. After an error the connection half-closes
  and discards what the client still sends for a moment (a lingering close), so the
  client reads the answer instead of a reset.

Requests on one connection are answered in order (pipelining); the handler gets the whole
body (bounded by ``REDRIVE_MAX_BODY_BYTES``) and returns a :class:`Response`, whose body
is bytes or an async iterator of chunks. A client that goes away does not cancel its
handler: a capture in progress still completes.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httptools
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from multidict import CIMultiDict

from sidecar.guards import (
    TOO_MANY_HEADERS,
    HttpVersion10,
    HttpVersion11,
    LogBudget,
    Refused,
    check_framing,
    check_host,
    check_message,
    classify,
    parse_error,
)

# The names tests/unit/test_http_guard.py has always imported from here.
_classify = classify
__all__ = ["BodyBudget", "FrontDoor", "Limits", "Overloaded", "Refused", "Request",
           "Response", "check_message", "json_response"]

log = logging.getLogger("sidecar.http")
access_log = logging.getLogger("sidecar.access")

_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
# Pipelined requests parsed ahead of the one being answered; past it, reading pauses.
_MAX_QUEUED = 8
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 4 * 1024 * 1024
_READ_SLACK = 256 * 1024  # the most asyncio's selector transports read at once


class Request:
    """One parsed request, its body complete."""

    __slots__ = ("body", "charge", "headers", "keep_alive", "method", "raw_headers",
                 "remote", "target", "version")

    def __init__(self, method: str, target: str, version: tuple[int, int],
                 raw_headers: list[tuple[str, str]], remote: str | None,
                 keep_alive: bool) -> None:
        self.method = method
        self.target = target
        """The request target exactly as sent (percent-encoding kept)."""
        self.version = version
        self.raw_headers = raw_headers
        """Header fields in the order sent, names as sent."""
        self.headers: CIMultiDict[str] = CIMultiDict(raw_headers)
        self.remote = remote
        """The peer's IP address."""
        self.keep_alive = keep_alive
        self.body = b""
        self.charge = 0
        """Bytes of the body budget this request holds until it is answered."""

    @property
    def path(self) -> str:
        """The raw request target (the name aiohttp's parsed head gives it)."""
        return self.target


@dataclass(slots=True)
class Response:
    """What a handler answers. ``body`` is sent whole, unless ``stream`` yields the body
    in chunks (framed by ``length`` when known, else chunked). For HEAD and 204/304 no
    body is sent; ``length`` then sets the Content-Length announced for HEAD."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reason: str = ""
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None
    close: bool = False
    """Close the connection after this response."""


def json_response(status: int, payload: dict[str, object],
                  headers: list[tuple[str, str]] | None = None,
                  *, close: bool = False) -> Response:
    out = [("Content-Type", "application/json")]
    if headers:
        out.extend(headers)
    return Response(status, out, json.dumps(payload).encode(), close=close)


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Limits:
    head_timeout: float
    """Seconds for a request head to arrive in full from its first byte, and again for
    its body; also how long a new connection may stay silent."""
    max_header_bytes: int = 8190
    """Longest request target and longest header field (name, colon, value)."""
    max_headers: int = 128
    max_body_bytes: int = 1_048_576
    keepalive_timeout: float = 75.0
    """Seconds an idle keep-alive connection is kept open."""
    max_buffered_body_bytes: int = 64 * 1_048_576
    """Budget for the request bodies held by all requests in progress at once."""
    overload_retry_after: int = 1
    """Retry-After seconds in the 503 answer past the body budget."""


class Overloaded(Refused):
    """A request refused because its body would pass the body budget (503)."""

    def __init__(self, limit: int) -> None:
        super().__init__(503, "overloaded",
                         f"request bodies in progress would exceed {limit} bytes; "
                         "retry later")


class BodyBudget:
    """Bytes of request bodies held at once by every connection of a :class:`FrontDoor`."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        """Charge ``size`` bytes; False (nothing charged) when that would pass the limit."""
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


class FrontDoor:
    """The listening server: makes a :class:`_Connection` per client, stops accepting and
    drains on :meth:`shutdown`."""

    def __init__(self, handler: Handler, limits: Limits, *,
                 on_refused: Callable[[int], None] = lambda _status: None,
                 access_log: bool = False, log_per_second: int = 10) -> None:
        self.handler = handler
        self.limits = limits
        self.on_refused = on_refused
        self.access_log = access_log
        self.budget = LogBudget(log_per_second)
        self.bodies = BodyBudget(limits.max_buffered_body_bytes)
        self.closing = False
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self, host: str, port: int) -> list[tuple[str, int]]:
        """Listen; returns the bound (host, port) addresses (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port,
                                                backlog=1024, reuse_address=True)
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, close idle connections, let requests in progress finish for up
        to ``timeout`` seconds (each then closes its connection), then cut the rest.
        Safe to call twice."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close_if_idle()
        self._update_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("drain timeout: cutting requests still in progress",
                        extra={"connections": len(self._connections)})
        cut = [task for conn in list(self._connections) if (task := conn.cut()) is not None]
        if cut:
            # Handlers past the drain timeout are cancelled (their captures are not made
            # safe, and their clients got no answer), as aiohttp's shutdown did.
            await asyncio.wait(cut, timeout=5.0)
        if self._server is not None:
            await self._server.wait_closed()

    def _update_idle(self) -> None:
        if any(c.active for c in self._connections):
            self._idle.clear()
        else:
            self._idle.set()

    def added(self, conn: _Connection) -> None:
        self._connections.add(conn)

    def removed(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if self.closing:
            self._update_idle()

    def became_idle(self) -> None:
        if self.closing:
            self._update_idle()


# Connection phases, for the one deadline timer.
_IDLE, _HEAD, _BODY, _BUSY = range(4)


class _Connection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._limits = door.limits
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._max_head = (self._limits.max_header_bytes * (self._limits.max_headers + 1)
                          + _READ_SLACK)
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._queue: deque[Request | BaseException] = deque()
        self._task: asyncio.Task[None] | None = None
        self._served = 0
        self._closed = False
        self._stopped_parsing = False  # after an error or an upgrade
        self._lingering = False
        self._lingered = 0
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        # The message being parsed.
        self._in_message = False
        self._head_done = False
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._request: Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._charge = 0  # body budget held by the message being parsed
        self._head_size = 0
        # One timer for every deadline: it fires, checks the phase, and re-arms.
        self._phase = _IDLE
        self._since = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is one without subclassing asyncio.Transport).
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._remote = peer[0] if isinstance(peer, tuple) else None
        self._door.added(self)
        if self._door.closing:
            self.abort()
            return
        self._arm(self._limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._drop_body()
        if self._task is None:
            self._release_queued()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("the client went away"))
        self._door.removed(self)

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > _LINGER_BYTES:
                self.abort()
            return
        if self._stopped_parsing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The message is complete (an Upgrade the proxy strips, so the app answers it
            # as plain HTTP); nothing after it is parsed, and the connection closes.
            self._stopped_parsing = True
            if self._request is not None:  # headers of a message with no end
                self._error(BadHttpMessage("request ended with an upgrade"))
            elif self._queue:
                last = self._queue[-1]
                if isinstance(last, Request):
                    last.keep_alive = False
        except Exception as exc:
            self._error(parse_error(exc))
            return
        if self._in_message and not self._head_done:
            # httptools buffers a header line until it ends: bound what an unfinished head
            # may hold. The chunk a head began in may also hold the previous request's
            # body, hence one read's worth of slack.
            self._head_size += len(data)
            if self._head_size > self._max_head:
                self._error(LineTooLong("request head", self._limits.max_header_bytes))
                return
        self._set_phase()

    # -- httptools callbacks

    def on_message_begin(self) -> None:
        self._in_message = True
        self._head_done = False
        self._url = b""
        self._headers = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_header_bytes:
            raise LineTooLong("request target", self._limits.max_header_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) + 2 > self._limits.max_header_bytes:
            raise LineTooLong("header field", self._limits.max_header_bytes)
        if len(self._headers) >= self._limits.max_headers:
            raise BadHttpMessage(TOO_MANY_HEADERS)
        self._headers.append((name.decode("latin-1"),
                              value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        self._head_done = True
        parser = self._parser
        major, _, minor = parser.get_http_version().partition(".")
        version = (int(major or 0), int(minor or 0))
        request = Request(parser.get_method().decode("ascii", "replace"),
                          self._url.decode("utf-8", "surrogateescape"), version,
                          self._headers, self._remote, parser.should_keep_alive())
        refused = (check_framing(request) or check_message(request)
                   or check_host(request))
        if refused is not None:
            raise refused
        length = request.headers.get("Content-Length")
        declared = int(length) if length is not None and length.isdigit() else 0
        if declared > self._limits.max_body_bytes:
            raise self._too_large()
        self._drop_body()
        if declared and not self._door.bodies.take(declared):
            raise Overloaded(self._door.bodies.limit)
        self._charge = declared
        self._request = request
        if (version == HttpVersion11 and self._transport is not None
                and request.headers.get("Expect", "").lower() == "100-continue"):
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_bytes:
            raise self._too_large()
        if self._body_size > self._charge:  # chunked: charged as it arrives
            more = self._body_size - self._charge
            if not self._door.bodies.take(more):
                raise Overloaded(self._door.bodies.limit)
            self._charge += more
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._request
        self._request = None
        self._in_message = False
        if request is None:
            return
        if self._body:
            request.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
        request.charge, self._charge = self._charge, 0
        self._body_size = 0
        self._enqueue(request)

    def _too_large(self) -> Refused:
        return Refused(413, "body_too_large",
                       f"request body exceeds {self._limits.max_body_bytes} bytes")

    def _drop_body(self) -> None:
        """Forget a partly received body and give its budget back."""
        if self._charge:
            self._door.bodies.give(self._charge)
            self._charge = 0
        self._body = []
        self._body_size = 0

    def _release_queued(self) -> None:
        """Give back the budget of requests parsed but never answered (connection gone)."""
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, Request) and item.charge:
                self._door.bodies.give(item.charge)
                item.charge = 0

    # -- answering

    def _enqueue(self, item: Request | BaseException) -> None:
        self._queue.append(item)
        if self._task is None:
            self._task = self._loop.create_task(self._serve())
        elif len(self._queue) > _MAX_QUEUED and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()

    def _error(self, exc: BaseException) -> None:
        """Stop parsing; answer ``exc`` after the requests queued before it."""
        self._stopped_parsing = True
        self._request = None
        self._in_message = False
        self._drop_body()
        self._enqueue(exc)
        self._set_phase()

    @property
    def active(self) -> bool:
        """A request is being received or answered."""
        return self._task is not None or self._in_message

    async def _serve(self) -> None:
        try:
            while self._queue and not self._closed:
                item = self._queue.popleft()
                if self._paused and len(self._queue) <= _MAX_QUEUED // 2 and self._transport:
                    self._paused = False
                    self._transport.resume_reading()
                if isinstance(item, BaseException):
                    self._refuse(item)
                    return
                try:
                    keep = await self._answer(item)
                finally:
                    if item.charge:
                        self._door.bodies.give(item.charge)
                        item.charge = 0
                if not keep:
                    self.close()
                    return
                self._served += 1
        finally:
            self._task = None
            if self._closed:
                self._release_queued()
            if not self._closed:
                self._set_phase()
                if self._door.closing:
                    self.close_if_idle()
            self._door.became_idle()

    async def _answer(self, request: Request) -> bool:
        """Run the handler and write its answer; whether the connection stays open."""
        started = time.perf_counter()
        try:
            response = await self._door.handler(request)
        except Exception as exc:
            log.error("proxy handler failed", exc_info=exc)
            status, error, text = classify(500, exc)
            response = json_response(status, {"error": error, "message": text}, close=True)
        if self._closed or self._transport is None or self._transport.is_closing():
            return False
        keep = request.keep_alive and not response.close and not self._door.closing
        try:
            await self._write(request, response, keep)
        except Exception:
            # off mid-answer (the handler logged why); the connection is already cut.
            return False
        if self._door.access_log:
            access_log.info("request", extra={
                "method": request.method, "path": request.target.partition("?")[0],
                "status": response.status, "remote_addr": request.remote,
                "duration_seconds": round(time.perf_counter() - started, 6)})
        return keep

    async def _write(self, request: Request, response: Response, keep: bool) -> None:
        transport = self._transport
        assert transport is not None
        status = response.status
        lines = [f"HTTP/1.1 {status} {response.reason or _REASONS.get(status, 'Unknown')}"]
        lines.extend(f"{name}: {value}" for name, value in response.headers)
        no_body = request.method == "HEAD" or status in (204, 304) or status < 200
        chunked = False
        if no_body:
            if response.length is not None and request.method == "HEAD":
                lines.append(f"Content-Length: {response.length}")
        elif response.stream is None:
            lines.append(f"Content-Length: {len(response.body)}")
        elif response.length is not None:
            lines.append(f"Content-Length: {response.length}")
        elif request.version == HttpVersion11:
            chunked = True
            lines.append("Transfer-Encoding: chunked")
        else:
            keep = False  # HTTP/1.0 without a length: the close ends the body
        if not keep:
            lines.append("Connection: close")
        elif request.version == HttpVersion10:
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        if no_body:
            transport.write(head)
            if response.stream is not None:
                await _close_stream(response.stream)
            return
        if response.stream is None:
            transport.write(head + response.body)
            return
        transport.write(head)
        try:
            async for chunk in response.stream:
                if not chunk:
                    continue
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self._writable is not None:
                    await self._writable
        except BaseException:
            # Mid-body: the client must not mistake a truncated body for a whole one.
            self.abort()
            raise
        finally:
            await _close_stream(response.stream)
        if chunked:
            transport.write(b"0\r\n\r\n")

    def _refuse(self, exc: BaseException) -> None:
        """Answer a request refused before the handler, then close (lingering)."""
        status, error, text = classify(400, exc)
        self._door.on_refused(status)
        quiet = self._served == 0 and isinstance(exc, BadHttpMethod)
        self._log_refusal(status, error, text, exc, debug=quiet)
        self._send_and_linger(status, error, text, overloaded=isinstance(exc, Overloaded))

    def _send_and_linger(self, status: int, error: str, text: str, *,
                         overloaded: bool = False) -> None:
        transport = self._transport
        if transport is None or self._closed or transport.is_closing():
            return
        payload: dict[str, object] = {"error": error, "message": text}
        extra = b""
        if overloaded:
            # Nothing was captured: the client must retry (the 503 a capture answers
            # carries queued: true and an X-Redrive-Id instead).
            payload["queued"] = False
            extra = b"Retry-After: %d\r\n" % self._limits.overload_retry_after
        body = json.dumps(payload).encode()
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, _REASONS.get(status, "Error").encode(), extra, len(body), body))
        self._stopped_parsing = True
        if transport.can_write_eof():
            # Half-close and discard what the client still sends, so it reads this answer
            # rather than a reset (its unread bytes would make our close send RST).
            transport.write_eof()
            self._lingering = True
            if self._paused:
                self._paused = False
                transport.resume_reading()
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_later(_LINGER_SECONDS, self.abort)
        else:
            transport.close()

    def _log_refusal(self, status: int, error: str, reason: str, exc: BaseException | None,
                     *, debug: bool = False) -> None:
        # Never the offending bytes: they are the client's, and may be anything.
        if debug:
            log.debug("request refused", extra={"status": status, "error": error})
            return
        ok, suppressed = self._door.budget.take()
        if not ok:
            return
        extra: dict[str, Any] = {"status": status, "error": error, "reason": reason,
                                 "remote_addr": self._remote}
        if exc is not None and not isinstance(exc, Refused):
            extra["parser_error"] = type(exc).__name__
        if suppressed:
            extra["suppressed"] = suppressed
        log.info("request refused", extra=extra)

    # -- deadlines

    def _set_phase(self) -> None:
        if self._lingering or self._closed:
            return
        if self._task is not None:
            phase = _BUSY
        elif self._in_message:
            phase = _BODY if self._head_done else _HEAD
        else:
            phase = _IDLE
        if phase == self._phase:
            return
        self._phase = phase
        self._since = now = self._loop.time()
        if phase == _BUSY:
            return
        limit = self._limits.keepalive_timeout if phase == _IDLE and self._served \
            else self._limits.head_timeout
        if self._timer is None or self._timer.when() > now + limit:
            self._arm(limit)

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._deadline)

    def _deadline(self) -> None:
        self._timer = None
        if self._closed or self._lingering:
            return
        phase = self._phase
        if phase == _BUSY:
            return  # the handler's own timeouts apply; the phase after it re-arms
        limit = self._limits.keepalive_timeout if phase == _IDLE and self._served \
            else self._limits.head_timeout
        left = self._since + limit - self._loop.time()
        if left > 0:
            self._arm(left)
            return
        if phase == _IDLE:
            self.close()
            return
        self._door.on_refused(408)
        if phase == _HEAD:
            error, text = "request_timeout", "the request head did not arrive in time"
        else:
            error, text = "client_timeout", "the request body did not arrive in time"
        self._log_refusal(408, error, text, None)
        self._in_message = False
        self._drop_body()
        self._send_and_linger(408, error, text)

    # -- closing

    def close_if_idle(self) -> None:
        if not self.active:
            self.close()

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.abort()

    def cut(self) -> asyncio.Task[None] | None:
        """Abort the connection and cancel its handler; the task, if one was running."""
        task = self._task
        if task is not None:
            task.cancel()
        self.abort()
        return task


async def _close_stream(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
