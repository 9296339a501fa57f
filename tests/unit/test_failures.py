"""Failure classification: transport errors, timeouts and statuses become kinds."""

from __future__ import annotations

import errno

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from redrive.envelope import Failure
from sidecar import failures

KEY = ConnectionKey("127.0.0.1", 3000, False, True, None, None, None)


def connector_error(code: int) -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(KEY, OSError(code, "x"))


@pytest.mark.parametrize(("exc", "expected"), [
    (connector_error(errno.ECONNREFUSED), Failure("connect_refused", None, False)),
    (connector_error(errno.EHOSTUNREACH), Failure("connect_error", None, False)),
    (aiohttp.ConnectionTimeoutError(), Failure("connect_timeout", None, False)),
    (aiohttp.SocketTimeoutError(), Failure("read_timeout", None, True)),
    (TimeoutError(), Failure("read_timeout", None, True)),
    (aiohttp.ServerDisconnectedError(), Failure("connection_reset", None, True)),
    (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), Failure("connection_reset", None, True)),
    (aiohttp.ClientPayloadError("bad"), Failure("protocol_error", None, True)),
])
def test_exceptions_map_to_a_kind_and_whether_the_app_saw_the_request(
        exc: BaseException, expected: Failure) -> None:
    assert failures.classify_exception(exc) == expected


def test_only_a_refused_or_unreachable_connection_proves_the_app_never_saw_it() -> None:
    never = {failures.CONNECT_REFUSED, failures.CONNECT_TIMEOUT, failures.CONNECT_ERROR}
    for kind in failures.KINDS:
        f = failures.status_failure(503) if kind == "upstream_status" else Failure(kind)
        assert (kind in never) or f.reached_upstream


def test_every_kind_has_a_sentence() -> None:
    for kind in failures.KINDS:
        f = failures.status_failure(502) if kind == failures.UPSTREAM_STATUS else Failure(kind)
        assert failures.reason(f)[0].islower() and len(failures.reason(f)) > 10
    assert failures.reason(failures.status_failure(503)) == "the backend answered 503"
