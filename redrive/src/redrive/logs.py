"""Structured logging: one JSON object per line on stdout (or readable text).

Configure once with :func:`configure`; every module then uses
``logging.getLogger(__name__)`` and passes event fields through ``extra=``:

    log.info("request captured", extra={"capture_id": rid, "kind": "connect_refused"})

Fields bound with :func:`bind` (a context variable) are added to every line logged in
that task, like kopf's object loggers. Never pass bodies or credentials as fields.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import IO, Any

_CONTEXT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "redrive_log_context", default=MappingProxyType({})
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(_CONTEXT.get())
    attrs = record.__dict__
    # A set difference runs in C: this is on the path of every captured request.
    for key in attrs.keys() - _STANDARD_ATTRS:
        if not key.startswith("_"):
            fields[key] = attrs[key]
    return fields


_second_cache: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """ISO 8601 UTC with milliseconds; the formatted second is reused within a second."""
    global _second_cache  # noqa: PLW0603 - a one-entry cache for the hottest formatter call
    second = int(created)
    if _second_cache[0] != second:
        _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_cache[1]}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts level logger: message key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = (f"{_timestamp(record.created)} {record.levelname.lower():<7} "
                f"{record.name}: {record.getMessage()}")
        if fields:
            line += " " + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Install one stdout handler on the root logger. Safe to call more than once."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiokafka logs every failed reconnect at ERROR with a traceback; our own code reports
    # Kafka health once per state change, so keep the library to real warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line emitted inside the ``with`` block (this task only)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)
