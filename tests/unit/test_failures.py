"""Failure classification: transport errors, timeouts and statuses become kinds."""

from __future__ import annotations

import errno

import pytest

from redrive.envelope import Failure
from sidecar import failures, upstream


@pytest.mark.parametrize(("exc", "expected"), [
    (upstream.ConnectRefused("x", errno.ECONNREFUSED), Failure("connect_refused", None, False)),
    (upstream.ConnectError("x", errno.EHOSTUNREACH), Failure("connect_error", None, False)),
    (upstream.ConnectTimeout("x"), Failure("connect_timeout", None, False)),
    (upstream.ReadTimeout("x"), Failure("read_timeout", None, True)),
    (TimeoutError(), Failure("read_timeout", None, True)),
    (upstream.ConnectionReset("x", response_started=False),
     Failure("connection_reset", None, True)),
    (upstream.ProtocolError("x"), Failure("protocol_error", None, True)),
    (ValueError("CR or LF inside a header"), Failure("connection_reset", None, True)),
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
