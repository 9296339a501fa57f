"""Which requests the proxy refuses, and how a refusal is answered (pure: no I/O).

llhttp (through httptools) refuses most malformed and request-smuggling shapes itself;
:func:`check_message` adds what a reverse proxy must refuse although it parses (other
HTTP versions, ``CONNECT``, asterisk- and authority-form targets, transfer codings other
than plain ``chunked``), and :func:`classify` turns any refusal into the status, error
code and message the client gets, never echoing the client's bytes. Parse errors use
aiohttp's public exception types (``aiohttp.http_exceptions``) as their vocabulary.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

import httptools
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, InvalidHeader, LineTooLong
from multidict import CIMultiDict

HttpVersion10 = (1, 0)
HttpVersion11 = (1, 1)

_ABSOLUTE_FORM = re.compile(r"(?i)^https?://[^/?#@\s]+(?:[/?#]|$)")
TOO_MANY_HEADERS = "Too many headers received"


class Refused(Exception):
    """A parsed request the proxy will not handle: status, error code, message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


class Head(Protocol):
    """What :func:`check_message` reads of a parsed request head."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def version(self) -> tuple[int, int]: ...
    @property
    def headers(self) -> CIMultiDict[str]: ...


def check_message(msg: Head) -> Refused | None:
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


def check_framing(msg: Head) -> Refused | None:
    """RFC 9112 §6.3: a request whose final transfer coding is not chunked has no
    knowable length (400); llhttp refuses it too, but only after the head."""
    codings = msg.headers.getall("Transfer-Encoding", ())
    if codings and msg.version == HttpVersion11 \
            and ",".join(codings).rsplit(",", 1)[-1].strip().lower() != "chunked":
        return Refused(400, "bad_request",
                       "malformed HTTP request: the final transfer coding is not chunked")
    return None


def check_host(msg: Head) -> Refused | None:
    hosts = len(msg.headers.getall("Host", ()))
    if hosts > 1 or (hosts == 0 and msg.version == HttpVersion11):
        return Refused(400, "bad_request", "an HTTP/1.1 request needs exactly one Host header")
    return None


def _parser_reason(exc: BaseException | None) -> str | None:
    """The parser's reason for an error ("Duplicate Content-Length"), never the bytes
    around it (aiohttp's parser appends them after a blank line)."""
    if not isinstance(exc, BadHttpMessage) or isinstance(exc, (InvalidHeader, LineTooLong)):
        return None
    head = " ".join(exc.message.split(":\n\n", 1)[0].split())
    if not head or "b'" in head or 'b"' in head or "bytearray(" in head or len(head) > 120:
        return None
    return head


def classify(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """(status, error code, message) for a request refused before or by the handler."""
    if isinstance(exc, Refused):
        return exc.status, exc.error, exc.message
    if isinstance(exc, LineTooLong) or (
            isinstance(exc, BadHttpMessage) and exc.message == TOO_MANY_HEADERS):
        return (431, "request_header_fields_too_large",
                "the request line, a header field or the number of headers is over the limit")
    if status == 400:
        detail = _parser_reason(exc)
        return 400, "bad_request", f"malformed HTTP request: {detail}" if detail else \
            "malformed HTTP request"
    if status == 504:
        return 504, "gateway_timeout", "the request took too long"
    return 500, "internal_error", "the proxy failed to handle the request"


def parse_error(exc: Exception) -> BaseException:
    """An httptools error as the parse error it stands for (aiohttp's exception types,
    which ``_classify`` understands); a callback's own exception as itself."""
    if isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__ is not None:
        return exc.__context__
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        return BadHttpMethod("", "Invalid method encountered")
    return BadHttpMessage(str(exc))


class LogBudget:
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
