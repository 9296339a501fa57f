"""Structured logging: one JSON object per line, context fields, text for people."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

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
