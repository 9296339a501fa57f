"""The proxy's HTTP/1.1 server: aiohttp's, with the guards a front door needs.

aiohttp's parser (llhttp) already refuses most request-smuggling shapes with a 400:
Content-Length beside Transfer-Encoding, duplicate Content-Length, obfuscated or repeated
Transfer-Encoding, bare CR or LF, NUL and control bytes, invalid methods and targets,
obsolete line folding. Four things it leaves to the application, and this module adds:

- Messages it parses but a reverse proxy must not pass on: versions other than HTTP/1.0
  and 1.1 (505), ``CONNECT`` (405), request targets that are neither origin-form
  (``/path``) nor an absolute http(s) URL (400), a Transfer-Encoding other than plain
  ``chunked`` (501, or 400 on HTTP/1.0, where its framing is not trusted).
  They are turned into error responses before any handler runs, so nothing reaches the
  app or Kafka.
- Error answers: aiohttp's echo the offending bytes in the body and log them, with a
  traceback, at error level. Here the client gets a short JSON error, the log gets one
  line with the error class, and oversized header lines or too many headers get 431.
- A deadline for the request head. aiohttp has none (only the idle keep-alive timeout),
  so a client trickling header bytes holds a connection forever. Here a head that starts
  arriving must be complete within ``REDRIVE_CLIENT_READ_TIMEOUT_SECONDS`` (408, then
  close); a new connection that sends nothing in that time is closed. The body has the
  same deadline, enforced by the proxy handler.
- Limits from settings: ``REDRIVE_MAX_HEADER_BYTES`` (request line and each header
  field) and ``REDRIVE_MAX_HEADERS``.

The hooks (``data_received``, ``handle_error``, the message queue and ``_ErrInfo``) are
aiohttp internals: the pinned aiohttp version is tested against them
(tests/integration/test_sidecar_hostile_http.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, InvalidHeader, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

log = logging.getLogger("sidecar.http")

_ABSOLUTE_FORM = re.compile(r"(?i)^https?://[^/?#@\s]+(?:[/?#]|$)")
_TOO_MANY_HEADERS = "Too many headers received"


class Refused(Exception):
    """A parsed request the proxy will not handle: status, error code, message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def check_message(msg: RawRequestMessage) -> Refused | None:
    """Why a request parsed by llhttp must still be refused, or None."""
    if msg.version not in (HttpVersion10, HttpVersion11):
        return Refused(505, "http_version_not_supported",
                       "only HTTP/1.0 and HTTP/1.1 are served on this port")
    if msg.method == "CONNECT":
        return Refused(405, "method_not_allowed", "CONNECT is not supported by this proxy")
    target = msg.path
    if not target.startswith("/") and _ABSOLUTE_FORM.match(target) is None:
        return Refused(400, "bad_request_target",
                       "the request target must be a path (/...) or an absolute http(s) URL")
    codings = msg.headers.getall("Transfer-Encoding", ())
    if codings:
        if msg.version == HttpVersion10:
            return Refused(400, "bad_request", "Transfer-Encoding is not valid in HTTP/1.0")
        if ",".join(codings).strip().lower() != "chunked":
            return Refused(501, "unsupported_transfer_coding",
                           "only the chunked transfer coding is supported")
    return None


def _parser_reason(exc: BaseException | None) -> str | None:
    """llhttp's reason for a parse error ("Duplicate Content-Length"), never the bytes
    around it (aiohttp appends them after a blank line)."""
    if not isinstance(exc, BadHttpMessage) or isinstance(exc, (InvalidHeader, LineTooLong)):
        return None
    head = " ".join(exc.message.split(":\n\n", 1)[0].split())
    if not head or "b'" in head or 'b"' in head or "bytearray(" in head or len(head) > 120:
        return None
    return head


def _classify(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    if isinstance(exc, Refused):
        return exc.status, exc.error, exc.message
    if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS):
        return (431, "request_header_fields_too_large",
                "the request line, a header field or the number of headers is over the limit")
    if status == 400:
        detail = _parser_reason(exc)
        return 400, "bad_request", f"malformed HTTP request: {detail}" if detail else \
            "malformed HTTP request"
    if status == 504:
        return 504, "gateway_timeout", "the request took too long"
    return 500, "internal_error", "the proxy failed to handle the request"


@dataclass(frozen=True)
class Guard:
    """What every connection of the proxy shares."""

    head_timeout: float
    """Seconds for a request head to arrive in full, from its first byte."""
    on_refused: Callable[[int], None] = lambda _status: None
    """Called with the status of every request refused before reaching the handler."""
    log_per_second: int = 10
    """Refusal log lines per second at most (a flood is counted, not logged line by line)."""


class _LogBudget:
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.window = 0
        self.used = 0
        self.suppressed = 0

    def take(self) -> tuple[bool, int]:
        """(may log, lines suppressed since the last logged one)."""
        now = int(time.monotonic())
        if now != self.window:
            self.window, self.used = now, 0
        if self.used >= self.per_second:
            self.suppressed += 1
            return False, 0
        self.used += 1
        suppressed, self.suppressed = self.suppressed, 0
        return True, suppressed


class GuardedRequestHandler(RequestHandler):
    """One client connection (see the module docstring)."""

    def __init__(self, manager: Server, *, guard: Guard, budget: _LogBudget,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._budget = budget
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False
        self._body: StreamReader | None = None  # the last parsed request's body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._cancel_head_timer()
            self._body = self._messages[-1][1] if self._messages else None
            for i in range(queued, len(self._messages)):
                msg, _ = self._messages[i]
                if isinstance(msg, RawRequestMessage):
                    refused = check_message(msg)
                    if refused is not None:
                        self._messages[i] = (_ErrInfo(status=refused.status, exc=refused,
                                                      message=refused.message), EMPTY_PAYLOAD)
        elif (data and not self._request_in_progress and not self._messages
              and (self._body is None or self._body.is_eof())):
            # Bytes of a new request head: no request is being handled, queued, or still
            # receiving its body (aiohttp reads an unread body on after the answer).
            self._head_bytes = True
            if self._head_timer is None:
                self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._head_timer = self._loop.call_later(self._guard.head_timeout, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._head_bytes = False

    def _head_late(self) -> None:
        self._head_timer = None
        if self._request_in_progress or self._messages or self.transport is None:
            return  # a request is being handled: its body has its own deadline
        if self._head_bytes:
            self._guard.on_refused(408)
            self._log_refusal(408, "request_timeout", "the request head did not arrive in time",
                              None)
            body = json.dumps({"error": "request_timeout",
                               "message": "the request head did not arrive in time"}).encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        self.force_close()

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        status, error, text = _classify(status, exc)
        if status == 500:
            # A bug of ours, not the client's bytes: keep the traceback.
            self.log_exception("proxy handler failed", exc_info=exc)
        else:
            self._guard.on_refused(status)
            quiet = self._request_count == 1 and isinstance(exc, BadHttpMethod)
            self._log_refusal(status, error, text, exc, debug=quiet)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        resp = web.Response(status=status, content_type="application/json",
                            body=json.dumps({"error": error, "message": text}).encode())
        resp.force_close()
        return resp

    def _log_refusal(self, status: int, error: str, reason: str, exc: BaseException | None,
                     *, debug: bool = False) -> None:
        # Never the offending bytes: they are the client's, and may be anything.
        if debug:
            log.debug("request refused", extra={"status": status, "error": error})
            return
        ok, suppressed = self._budget.take()
        if not ok:
            return
        peer = self.peername
        extra: dict[str, Any] = {
            "status": status, "error": error, "reason": reason,
            "remote_addr": peer[0] if isinstance(peer, tuple) else None}
        if exc is not None and not isinstance(exc, Refused):
            extra["parser_error"] = type(exc).__name__
        if suppressed:
            extra["suppressed"] = suppressed
        log.info("request refused", extra=extra)


class GuardedServer(Server):
    """aiohttp's Server, making GuardedRequestHandlers."""

    guard: Guard
    budget: _LogBudget

    @classmethod
    def adopt(cls, server: Server, guard: Guard) -> GuardedServer:
        """The same server (no connection yet), making guarded handlers from now on."""
        guarded = cls.__new__(cls)
        guarded.__dict__.update(server.__dict__)
        guarded.guard = guard
        guarded.budget = _LogBudget(guard.log_per_second)
        return guarded

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, guard=self.guard, budget=self.budget,
                                     loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a GuardedServer."""

    def __init__(self, app: web.Application, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> Server:
        return GuardedServer.adopt(await super()._make_server(), self.guard)
