"""A lean HTTP/1.1 client for one origin (the sidecar's app, the retry worker's target).

aiohttp's client spends most of a request's CPU on generality a proxy or a replayer never
uses (cookie jars, redirects, URL objects, per-request timers and trace hooks). This client
does only what they need: a keep-alive pool of ``asyncio.Protocol``
connections to one origin (LIFO, so the warmest connection is reused; idle ones are closed
after ``idle_timeout``), each request written in one piece (request line with the target
exactly as given, the caller's headers, ``Content-Length`` of the buffered body), and
responses parsed by ``httptools`` (llhttp): HTTP is never parsed by hand here. The
response headers are available before the body; the body is buffered and, when the
consumer lags, the socket stops being read (backpressure).

Failures surface as a few exception types (see ``sidecar.failures`` for what each one
means for a capture): :class:`ConnectRefused`/:class:`ConnectError`/
:class:`ConnectTimeout` prove the app never saw the request; :class:`ReadTimeout`,
:class:`ConnectionReset` and :class:`ProtocolError` do not. Used by the sidecar (through
``sidecar.upstream``) and by the retry worker's replays.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Iterable
from typing import cast

import httptools
from yarl import URL

from redrive.envelope import IDEMPOTENT_METHODS

# Above this many unconsumed body bytes the socket stops being read; below the low mark
# it resumes. A small body (the proxy buffers up to 64 KiB) never pauses.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
# Only these may carry a body of their own; the caller frames the request body here.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_DNS_TTL = 300.0
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EAGAIN, errno.EINTR})


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def _open_socket(loop: asyncio.AbstractEventLoop, family: int,
                       address: tuple[str, int], timeout: float) -> socket.socket:
    """A connected non-blocking TCP socket, or OSError / TimeoutError.

    ``loop.sock_connect`` does the same with more machinery (address resolution, a done
    callback per call); a refused connection is the capture path's common case, and it
    costs less this way (measured in CHANGELOG.md's benchmark notes).
    """
    if timeout <= 0:
        raise TimeoutError
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        err = sock.connect_ex(address)
        if err in _IN_PROGRESS:
            fut: asyncio.Future[None] = loop.create_future()
            fd = sock.fileno()
            loop.add_writer(fd, _wake, fut)
            timer = loop.call_later(timeout, _expire, fut)
            try:
                await fut
            finally:
                timer.cancel()
                loop.remove_writer(fd)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


class UpstreamError(Exception):
    """Base of every failed exchange with the app."""


class ConnectError(UpstreamError):
    """No connection could be opened (DNS, unreachable, TLS); the app never saw the
    request. ``errno`` is the operating system's code when there is one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


class ConnectRefused(ConnectError):
    """Every address of the app refused the connection: it is down or not listening."""


class ConnectTimeout(UpstreamError):
    """No connection within the connect timeout; the app never saw the request."""


class ReadTimeout(UpstreamError, TimeoutError):
    """The total deadline passed after the request was (or was being) sent."""


class ConnectionReset(UpstreamError):
    """The connection closed or broke before the response was complete.

    ``response_started`` tells whether any byte of a response had arrived."""

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class ProtocolError(UpstreamError):
    """The app's bytes are not a valid HTTP/1.1 response."""


def serialize_request(method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes | None, default_host: str) -> bytes:
    """The request head (and a small body) as the bytes to write.

    ``target`` goes on the request line unchanged (the client's raw path keeps its
    percent-encoding). ``Host`` is added when ``headers`` has none; ``Content-Length`` is
    sent when ``body`` is not None. Raises ValueError for framing headers in ``headers``
    (the body is framed here) and for CR or LF inside any part (header injection)."""
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    for name, value in headers:
        lname = name.lower()
        if lname == "host":
            has_host = True
        elif lname in _FRAMING:
            raise ValueError(f"the request body is framed by the client, not by {name}")
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.append(f"Host: {default_host}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines)
    separators = len(lines) - 1
    if head.count("\r") != separators or head.count("\n") != separators:
        raise ValueError("CR or LF inside the request line or a header")
    data = (head + "\r\n\r\n").encode("utf-8", "surrogateescape")
    if body and len(body) <= _LOW_WATER:
        return data + body
    return data


class Response:
    """One response from the app: status and headers first, then the body.

    Read the body with :meth:`read` (whole) or :meth:`next_chunk` (streamed, ``b""`` at
    the end); both raise :class:`UpstreamError` if the response breaks off. Call
    :meth:`release` when done: a response not read to the end closes its connection.
    The connection returns to the pool as soon as the whole response has arrived.
    """

    __slots__ = ("_buffered", "_chunks", "_conn", "_exc", "_head", "_interim", "_keep_alive",
                 "_parser", "_paused", "_reason", "_te", "_waiter", "complete",
                 "content_length", "headers_done", "raw_headers", "reason", "started",
                 "status")

    def __init__(self, conn: _Connection, head: bool) -> None:
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[str, str]] = []
        """Header (name, value) pairs as sent, names in their original case."""
        self.content_length: int | None = None
        """The Content-Length of the body, None when chunked or close-delimited."""
        self._conn: _Connection | None = conn
        # Dropped once the exchange ends: it holds bound methods of this object (a cycle).
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._head = head
        self._reason = b""
        self._interim = False
        self._te: bytes | None = None
        self._keep_alive = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._exc: UpstreamError | None = None
        self.headers_done = False
        self.complete = False
        self.started = False

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.raw_headers:
            if key.lower() == lname:
                return value
        return None

    async def read(self) -> bytes:
        """The whole body. Raises UpstreamError if it breaks off or the deadline passes."""
        while not self.complete:
            if self._exc is not None:
                raise self._exc
            if self._paused:
                self._resume()
            await self._wait()
        if self._exc is not None:
            raise self._exc
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def next_chunk(self) -> bytes:
        """The body bytes buffered so far (waiting for some), ``b""`` once all were read.
        Raises UpstreamError if the body breaks off or the deadline passes."""
        while not self._chunks:
            if self._exc is not None:
                raise self._exc
            if self.complete:
                return b""
            await self._wait()
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        if self._paused:
            self._resume()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def release(self) -> None:
        """Done with this response. An incomplete one closes its connection (the unread
        rest cannot be skipped safely); a complete one is a no-op."""
        if not self.complete and self._exc is None:
            self._fail(ConnectionReset("response released before its end",
                                       response_started=self.started))

    # -- inside the client ---------------------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        self._paused = False
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()

    def _fail(self, exc: UpstreamError) -> None:
        """Break the exchange off: remember why, drop the connection, wake the reader."""
        if self.complete or self._exc is not None:
            return
        self._exc = exc
        self._parser = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self._wake()

    def _on_deadline(self) -> None:
        self._fail(ReadTimeout("the app did not finish answering before the deadline"))

    def _finish(self) -> None:
        self.complete = True
        self._parser = None
        self._wake()

    def _eof(self, exc: Exception | None) -> None:
        """The connection closed while this exchange was open."""
        if self.complete or self._exc is not None:
            return
        self._conn = None
        if exc is None and self.headers_done and self._close_delimited():
            self._finish()  # the body of a response without framing ends at the close
            return
        reason = "the app closed the connection" if exc is None else f"connection lost: {exc}"
        self._fail(ConnectionReset(reason, response_started=self.started))

    def _close_delimited(self) -> bool:
        if self.content_length is not None:
            return False
        te = self._te
        return te is None or te.rsplit(b",", 1)[-1].strip().lower() != b"chunked"

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _Unexpected  # bytes after the end of the response: out of sync

    def on_status(self, status: bytes) -> None:
        self._reason += status  # llhttp may hand a span over in pieces

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # trailer fields after a chunked body: dropped, as aiohttp did
        lname = name.lower()
        if lname == b"content-length":
            self.content_length = int(value)  # llhttp has checked it is one number
        elif lname == b"transfer-encoding":
            self._te = value if self._te is None else self._te + b"," + value
        self.raw_headers.append((name.decode("latin-1"),
                                 value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            # An interim response (100 Continue, 103 Early Hints): skip it whole.
            self._interim = True
            self._reason = b""
            self.raw_headers = []
            self.content_length = None
            self._te = None
            return
        self.status = status
        self.reason = self._reason.decode("utf-8", "surrogateescape")
        self._keep_alive = parser.should_keep_alive()
        if self._te is not None:
            self.content_length = None
        self.headers_done = True
        if self._head:
            # llhttp cannot be told the request was HEAD: the response ends here whatever
            # its Content-Length says, and any byte after it is an error.
            self._finish()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            raise _Unexpected  # a body after a HEAD response
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused:
            conn = self._conn
            if conn is not None and conn.transport is not None:
                self._paused = True
                conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.complete:
            self._finish()


class _Unexpected(Exception):
    """Raised inside a parser callback: the app sent bytes past the response's end."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange at a time (no pipelining)."""

    def __init__(self, pool: UpstreamClient) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Response | None = None
        self.idle_since = 0.0
        self.closed = False
        # The exchange's deadline, checked by one timer that re-arms itself when it fires
        # early: a keep-alive connection arms a timer about once per timeout, not once
        # per request (deadlines only grow, so the pending timer is never late).
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is one without subclassing asyncio.Transport).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def start(self, data: bytes, body: bytes | None, head: bool, deadline: float,
              loop: asyncio.AbstractEventLoop) -> Response:
        resp = Response(self, head)
        self.exchange = resp
        transport = self.transport
        assert transport is not None
        transport.write(data)
        if body and len(body) > _LOW_WATER:
            transport.write(body)
        self._deadline = deadline
        if self._timer is None:
            self._loop = loop
            self._timer = loop.call_at(deadline, self._check_deadline)
        return resp

    def _check_deadline(self) -> None:
        self._timer = None
        resp = self.exchange
        if resp is None or self.closed or self._loop is None:
            return  # idle: the next exchange arms the timer again
        # call_at may fire up to the clock's resolution early.
        if self._loop.time() >= self._deadline - 0.001:
            resp._on_deadline()
        else:
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)

    def data_received(self, data: bytes) -> None:
        resp = self.exchange
        if resp is None:
            self.abort()  # nothing was asked: the stream is out of sync
            return
        resp.started = True
        parser = resp._parser
        if parser is None:  # the exchange already ended (failed): nothing more to read
            self.abort()
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not resp.complete:
                resp._fail(ProtocolError(f"invalid response from the app: {exc}"))
            self.exchange = None
            self.abort()
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            resp._fail(ProtocolError(f"invalid response from the app: {exc!r}"))
            self.exchange = None
            self.abort()
            return
        if resp.complete:
            self.exchange = None
            resp._conn = None
            transport = self.transport
            assert transport is not None
            if resp._paused:
                resp._paused = False
                transport.resume_reading()
            # An early answer (a 413 before the whole body was sent) leaves the stream
            # mid-request: only a connection with nothing left to write is reused.
            if resp._keep_alive and not transport.get_write_buffer_size():
                self._pool._put(self)
            else:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        resp, self.exchange = self.exchange, None
        if resp is not None:
            resp._eof(exc)
        self._pool._forget(self)

    @property
    def usable(self) -> bool:
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamClient:
    """HTTP/1.1 to one origin (``url``: ``http(s)://host[:port][/prefix]``).

    ``connect_timeout`` (seconds) bounds opening a connection; ``timeout`` (seconds) bounds
    the whole exchange, connect included, until the last body byte. Up to ``max_idle``
    connections stay open for reuse, each for at most ``idle_timeout`` seconds unused.
    """

    def __init__(self, url: str, *, connect_timeout: float, timeout: float,
                 max_idle: int = 256, idle_timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        base = URL(url)
        host = base.raw_host
        if not host or base.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = host
        self._port = base.port or (443 if base.scheme == "https" else 80)
        self._prefix = base.raw_path.rstrip("/")
        bracketed = f"[{host}]" if ":" in host else host
        self._host_header = (bracketed if base.explicit_port is None
                             else f"{bracketed}:{base.explicit_port}")
        self._ssl: ssl.SSLContext | None = None
        if base.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._probe: asyncio.Future[bool] | None = None
        """The connection attempt in flight; its result says whether it was refused."""
        self._addresses: list[tuple[int, str, int]] = []
        self._resolved_at = -_DNS_TTL
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._addresses = [(family, host, self._port)]
            self._resolved_at = float("inf")

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]],
                      body: bytes | None) -> Response:
        """Send one request; return once the final response's headers have arrived.

        ``target`` is the client's raw path (and query), appended to the URL's prefix as
        is. ``body`` None sends no Content-Length. A pooled connection that turns out to
        be closed is retried once on a new one, for idempotent methods, when no byte of a
        response arrived. Raises an :class:`UpstreamError` subclass (ValueError for
        headers that cannot be sent)."""
        if self._closed:
            raise ConnectError("the upstream client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        data: bytes | None = None
        head = method == "HEAD"
        conn = self._take_idle()
        if conn is not None:
            data = serialize_request(method, self._prefix + target, headers, body,
                                     self._host_header)
            try:
                return await self._exchange(conn, data, body, head, deadline, loop)
            except ConnectionReset as exc:
                # The app closed the idle connection as we picked it (RFC 9112 §9.3.1):
                # safe to send again only if it never answered and the method may repeat.
                if exc.response_started or method not in IDEMPOTENT_METHODS:
                    raise
        # Headers that cannot be sent fail before a connection is opened for them.
        if data is None:
            data = serialize_request(method, self._prefix + target, headers, body,
                                     self._host_header)
        conn = await self._connect(deadline, loop)
        return await self._exchange(conn, data, body, head, deadline, loop)

    async def close(self) -> None:
        """Close every connection, idle or busy; later requests raise ConnectError."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        conns = [*self._idle, *self._busy]
        self._idle.clear()
        for conn in conns:
            if conn.exchange is not None:
                conn.exchange._fail(ConnectionReset("the upstream client closed",
                                                    response_started=conn.exchange.started))
            conn.close()
        if conns:
            await asyncio.sleep(0)  # let the transports call connection_lost

    @property
    def idle_connections(self) -> int:
        """How many open connections wait in the pool."""
        return len(self._idle)

    # -- pool --------------------------------------------------------------------------------

    async def _exchange(self, conn: _Connection, data: bytes, body: bytes | None,
                        head: bool, deadline: float,
                        loop: asyncio.AbstractEventLoop) -> Response:
        self._busy.add(conn)
        resp = conn.start(data, body, head, deadline, loop)
        try:
            while not resp.headers_done:
                if resp._exc is not None:
                    raise resp._exc
                await resp._wait()
        except BaseException:
            resp.release()  # cancelled, timed out or broken: the connection is unusable
            raise
        return resp

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            conn.abort()
        return None

    def _put(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if self._closed or len(self._idle) >= self._max_idle or not conn.usable:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(
                self._idle_timeout / 2, self._sweep)

    def _forget(self, conn: _Connection) -> None:
        self._busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def _sweep(self) -> None:
        """Close connections idle longer than idle_timeout (the oldest are first)."""
        self._sweeper = None
        cutoff = time.monotonic() - self._idle_timeout
        idle = self._idle
        stale = 0
        while stale < len(idle) and idle[stale].idle_since <= cutoff:
            stale += 1
        if stale:
            old, self._idle = idle[:stale], idle[stale:]
            for conn in old:
                conn.close()
        if self._idle and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(
                self._idle_timeout / 2, self._sweep)

    async def _connect(self, deadline: float, loop: asyncio.AbstractEventLoop) -> _Connection:
        until = loop.time() + max(0.0, min(self._connect_timeout, deadline - loop.time()))
        probe = self._probe
        # An attempt to connect is already on its way. If the app refuses it, it would
        # refuse this request too: the refusal is seen after this request arrived, so
        # the request shares it rather than paying for its own socket. (A surge of
        # requests while the app is down is the capture path's worst case.) Any other
        # outcome, success included, and the request makes its own attempt. The probe
        # is bounded by its own connect timeout.
        if probe is not None and not probe.done() and await asyncio.shield(probe):
            raise ConnectRefused(f"{self._host}:{self._port} refused the connection",
                                 errno.ECONNREFUSED)
        probe = self._probe = loop.create_future()
        refused = False
        try:
            conn = await self._open_connection(until, loop)
        except ConnectRefused:
            refused = True
            raise
        finally:
            probe.set_result(refused)
            if self._probe is probe:
                self._probe = None
        return conn

    async def _open_connection(self, until: float,
                               loop: asyncio.AbstractEventLoop) -> _Connection:
        addresses = self._addresses
        if time.monotonic() - self._resolved_at >= _DNS_TTL:
            try:
                async with asyncio.timeout(until - loop.time()):
                    addresses = await self._resolve(loop)
            except TimeoutError:
                raise ConnectTimeout(f"cannot resolve {self._host} within "
                                     f"{self._connect_timeout:.3g}s") from None
            except OSError as exc:
                raise ConnectError(f"cannot resolve {self._host}: {exc}", exc.errno) from exc
        errors: list[OSError] = []
        for family, host, port in addresses:
            try:
                sock = await _open_socket(loop, family, (host, port), until - loop.time())
            except TimeoutError:
                raise ConnectTimeout(f"no connection to {self._host}:{self._port} within "
                                     f"{self._connect_timeout:.3g}s") from None
            except OSError as exc:
                errors.append(exc)
                continue
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self), sock=sock, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                    ssl_handshake_timeout=(max(0.001, until - loop.time())
                                           if self._ssl is not None else None))
            except (OSError, TimeoutError) as exc:  # the TLS handshake
                sock.close()
                if isinstance(exc, TimeoutError):
                    raise ConnectTimeout(f"no TLS session with {self._host}:{self._port} "
                                         f"within {self._connect_timeout:.3g}s") from None
                errors.append(exc)
                continue
            except BaseException:
                sock.close()
                raise
            self._busy.add(conn)
            return conn
        if errors and all(e.errno == errno.ECONNREFUSED for e in errors):
            raise ConnectRefused(f"{self._host}:{self._port} refused the connection",
                                 errno.ECONNREFUSED) from errors[-1]
        last = errors[-1] if errors else None
        raise ConnectError(f"cannot connect to {self._host}:{self._port}: {last}",
                           last.errno if last else None) from last

    async def _resolve(self, loop: asyncio.AbstractEventLoop) -> list[tuple[int, str, int]]:
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        self._addresses = [(family, str(addr[0]), int(addr[1]))
                           for family, _, _, _, addr in infos]
        self._resolved_at = time.monotonic()
        return self._addresses
