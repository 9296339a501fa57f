"""Structured logging: one JSON object per line, context fields, text for people."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from unittest import mock

import pytest

from redrive import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logs.configure("debug", "json", buf)
    yield buf
    logs.configure("info", "json")


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    logs.flush()
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_each_record_is_one_json_object_with_the_standard_fields(stream: io.StringIO) -> None:
    logging.getLogger("redrive.test").info("request captured", extra={"capture_id": "c1",
                                                                     "attempt": 2})
    [entry] = lines(stream)
    assert entry["level"] == "info" and entry["logger"] == "redrive.test"
    assert entry["message"] == "request captured"
    assert entry["capture_id"] == "c1" and entry["attempt"] == 2
    ts = str(entry["ts"])
    assert ts.endswith("Z") and len(ts) == len("2026-01-01T00:00:00.000Z")


def test_bound_fields_apply_inside_the_block_only(stream: io.StringIO) -> None:
    log = logging.getLogger("redrive.test")
    with logs.bind(request_id="r1"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(stream)
    assert inside["request_id"] == "r1" and "request_id" not in outside


def test_an_exception_is_logged_with_its_traceback_on_the_same_line(
        stream: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("redrive.test").exception("failed")
    [entry] = lines(stream)
    assert "ValueError: boom" in str(entry["exception"])


def test_text_format_is_readable_with_fields_as_key_value() -> None:
    buf = io.StringIO()
    logs.configure("info", "text", buf)
    try:
        logging.getLogger("redrive.test").warning("spool full", extra={"bytes": 10})
    finally:
        logs.configure("info", "json")
    logs.flush()
    line = buf.getvalue().strip()
    assert " warning " in line and "redrive.test: spool full" in line and "bytes=10" in line


def test_timestamps_stay_correct_across_seconds() -> None:
    assert logs._timestamp(0.25) == "1970-01-01T00:00:00.250Z"
    assert logs._timestamp(1.5) == "1970-01-01T00:00:01.500Z"
    assert logs._timestamp(0.999) == "1970-01-01T00:00:00.999Z"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_fast_event_line_is_the_line_a_log_call_writes(fmt: str) -> None:
    """``logs.event`` skips the LogRecord, not a field: the same line as ``log.log``."""
    buf = io.StringIO()
    logs.configure("info", fmt, buf)
    try:
        log = logging.getLogger("redrive.test")
        fields = {"capture_id": "c1", "status": None, "body_bytes": 12, "path": "/é"}
        with logs.bind(request_id="r1", capture_id="bound-loses"):
            log.warning("request captured", extra=dict(fields))
            # The fast path: no log call (no LogRecord, no handler chain) at all.
            with mock.patch.object(logging.Logger, "log", side_effect=AssertionError):
                logs.event(log, logging.WARNING, "request captured", fields)
        logs.flush()
        slow, fast = buf.getvalue().splitlines()
    finally:
        logs.configure("info", "json")
    # Text: the same words; the order of a log call's extra fields is not defined.
    strip = (lambda line: {k: v for k, v in json.loads(line).items() if k != "ts"}) \
        if fmt == "json" else (lambda line: sorted(line.split(" ")[1:]))
    assert strip(fast) == strip(slow)
    assert "capture_id" in fast and "bound-loses" not in fast and "r1" in fast


def test_a_fast_event_goes_through_the_handlers_when_another_is_installed() -> None:
    logs.configure("info", "json", io.StringIO())
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(extra)
    try:
        logs.event(logging.getLogger("redrive.test"), logging.INFO, "request captured",
                   {"capture_id": "c9"})
    finally:
        logging.getLogger().removeHandler(extra)
        logs.configure("info", "json")
    [record] = [r for r in seen if r.getMessage() == "request captured"]
    assert record.capture_id == "c9"  # type: ignore[attr-defined]
