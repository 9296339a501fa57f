"""Structured logging: one JSON object per line on stdout (or readable text).

Configure once with :func:`configure`; every module then uses
``logging.getLogger(__name__)`` and passes event fields through ``extra=``:

    log.info("request captured", extra={"capture_id": rid, "kind": "connect_refused"})

Fields bound with :func:`bind` (a context variable) are added to every line logged in
that task, like kopf's object loggers. Never pass bodies or credentials as fields.

Logging never blocks the event loop: the root logger's only handler puts records on a
queue (``logging.handlers.QueueHandler``), and a ``QueueListener`` thread formats them
and writes to stdout, so a slow or full stdout pipe stalls that thread, not the proxy.
:func:`shutdown` (also run at exit) writes what is still queued.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import json
import logging
import logging.handlers
import queue
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
        elif record.exc_text:
            out["exception"] = record.exc_text
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
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the listener thread with what only the emitting thread knows:
    the bound context fields, the formatted message and the traceback text."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # A copy: other handlers (pytest's, say) see the record as it was logged.
        record = copy.copy(record)
        attrs = record.__dict__
        for key, value in _CONTEXT.get().items():
            attrs.setdefault(key, value)
        record.msg = record.getMessage()
        record.args = None
        if record.exc_info:
            record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        return record


_EXC_FORMATTER = logging.Formatter()
_listener: logging.handlers.QueueListener | None = None


def configure(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Install the queue handler on the root logger and start the thread that writes to
    ``stream`` (stdout). Safe to call more than once."""
    global _listener  # noqa: PLW0603 - one listener per process
    shutdown()
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_QueueHandler(records))
    root.setLevel(level.upper())
    _listener = logging.handlers.QueueListener(records, handler)
    _listener.start()
    # aiokafka logs every failed reconnect at ERROR with a traceback; our own code reports
    # Kafka health once per state change, so keep the library to real warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


def shutdown() -> None:
    """Write every queued record and stop the writer thread (safe to call twice)."""
    global _listener  # noqa: PLW0603 - one listener per process
    if _listener is not None:
        _listener.stop()
        _listener = None


def flush() -> None:
    """Block until every record logged so far is written (tests, and before exiting)."""
    if _listener is not None:
        _listener.stop()
        _listener.start()


atexit.register(shutdown)


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line emitted inside the ``with`` block (this task only)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)
