"""Deciding what counts as a failure, and what kind (pure: no I/O).

Following mitmproxy's split between an error and a response: a transport error or a
timeout is always a failure; an HTTP response is a failure only when its status is in
``REDRIVE_CAPTURE_STATUSES``. Each failure says whether the request may have reached the
app (``reached_upstream``); it is False only when the app provably never saw it.
"""

from __future__ import annotations

from redrive.envelope import Failure
from sidecar import upstream

CONNECT_REFUSED = "connect_refused"
CONNECT_TIMEOUT = "connect_timeout"
CONNECT_ERROR = "connect_error"
READ_TIMEOUT = "read_timeout"
CONNECTION_RESET = "connection_reset"
PROTOCOL_ERROR = "protocol_error"
UPSTREAM_STATUS = "upstream_status"

KINDS = (CONNECT_REFUSED, CONNECT_TIMEOUT, CONNECT_ERROR, READ_TIMEOUT, CONNECTION_RESET,
         PROTOCOL_ERROR, UPSTREAM_STATUS)

_REASONS = {
    CONNECT_REFUSED: "the backend refused the connection (it is down or not listening)",
    CONNECT_TIMEOUT: "the backend did not accept a connection in time",
    CONNECT_ERROR: "the backend could not be reached",
    READ_TIMEOUT: "the backend did not answer in time",
    CONNECTION_RESET: "the backend closed the connection without answering",
    PROTOCOL_ERROR: "the backend sent an invalid HTTP response",
}


def classify_exception(exc: BaseException) -> Failure:
    """Map an exception of the upstream client (``sidecar.upstream``), or a timeout,
    raised before the response headers arrived to a :class:`Failure`."""
    if isinstance(exc, upstream.UpstreamError):
        return _classify_upstream(exc)
    if isinstance(exc, TimeoutError):
        return Failure(READ_TIMEOUT, None, reached_upstream=True)
    # Anything else (ValueError for headers that cannot be sent, a bug): the bytes may
    # have reached the app, so the worker must treat the request as seen.
    return Failure(CONNECTION_RESET, None, reached_upstream=True)


def _classify_upstream(exc: upstream.UpstreamError) -> Failure:
    if isinstance(exc, upstream.ConnectTimeout):
        return Failure(CONNECT_TIMEOUT, None, reached_upstream=False)
    if isinstance(exc, upstream.ConnectRefused):
        return Failure(CONNECT_REFUSED, None, reached_upstream=False)
    if isinstance(exc, upstream.ConnectError):
        return Failure(CONNECT_ERROR, None, reached_upstream=False)
    if isinstance(exc, upstream.ReadTimeout):
        return Failure(READ_TIMEOUT, None, reached_upstream=True)
    if isinstance(exc, upstream.ProtocolError):
        return Failure(PROTOCOL_ERROR, None, reached_upstream=True)
    # ConnectionReset: the bytes may have reached the app.
    return Failure(CONNECTION_RESET, None, reached_upstream=True)


def status_failure(status: int) -> Failure:
    return Failure(UPSTREAM_STATUS, status, reached_upstream=True)


def reason(failure: Failure) -> str:
    """A human-readable sentence for the record's ``error_reason``."""
    if failure.kind == UPSTREAM_STATUS:
        return f"the backend answered {failure.status}"
    return _REASONS.get(failure.kind, f"upstream failure: {failure.kind}")
