"""Structured logging: one JSON object per line on stdout (or readable text).

Configure once with :func:`configure`; every module then uses
``logging.getLogger(__name__)`` and passes event fields through ``extra=``:

    log.info("request captured", extra={"capture_id": rid, "kind": "connect_refused"})

Fields bound with :func:`bind` (a context variable) are added to every line logged in
that task, like kopf's object loggers. Never pass bodies or credentials as fields.

Logging never blocks the event loop: the root logger's only handler puts records on a
queue (``logging.handlers.QueueHandler``), and a writer thread formats them and writes
them to stdout in batches, so a slow or full stdout pipe stalls that thread, not the
proxy. :func:`flush` waits until what was logged is written; :func:`shutdown` (also run
at exit) writes what is still queued and stops the thread.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import logging.handlers
import queue
import sys
import threading
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


_LINE = json.JSONEncoder(default=str, ensure_ascii=False)
"""What ``json.dumps(out, default=str, ensure_ascii=False)`` writes, without building an
encoder per line."""


class Event:
    """One line logged through :func:`event`: what a LogRecord would carry for it, and
    nothing else."""

    __slots__ = ("bound", "created", "fields", "level", "logger", "message")

    def __init__(self, created: float, level: int, logger: str, message: str,
                 fields: Mapping[str, Any], bound: Mapping[str, Any]) -> None:
        self.created = created
        self.level = level
        self.logger = logger
        self.message = message
        self.fields = fields
        self.bound = bound


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return self._line(record.created, record.levelname, record.name, record.getMessage(),
                          _fields(record),
                          self.formatException(record.exc_info) if record.exc_info else None)

    def format_event(self, event: Event) -> str:
        return self._line(event.created, logging.getLevelName(event.level), event.logger,
                          event.message, {**event.bound, **event.fields}, None)

    @staticmethod
    def _line(created: float, level: str, logger: str, message: str,
              fields: Mapping[str, Any], exception: str | None) -> str:
        out: dict[str, Any] = {"ts": _timestamp(created), "level": level.lower(),
                               "logger": logger, "message": message}
        out.update(fields)
        if exception:
            out["exception"] = exception
        return _LINE.encode(out)


class TextFormatter(logging.Formatter):
    """``ts level logger: message key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return self._line(record.created, record.levelname, record.name, record.getMessage(),
                          _fields(record),
                          self.formatException(record.exc_info) if record.exc_info else None)

    def format_event(self, event: Event) -> str:
        return self._line(event.created, logging.getLevelName(event.level), event.logger,
                          event.message, {**event.bound, **event.fields}, None)

    @staticmethod
    def _line(created: float, level: str, logger: str, message: str,
              fields: Mapping[str, Any], exception: str | None) -> str:
        line = f"{_timestamp(created)} {level.lower():<7} {logger}: {message}"
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if exception:
            line += "\n" + exception
        return line


class _QueueHandler(logging.handlers.QueueHandler):
    """Puts records on the writer's queue, adding what only the emitting task knows: the
    fields bound with :func:`bind`. The record is not copied or flattened (a thread, not a
    process, reads it), so this is all the event loop pays per line."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        bound = _CONTEXT.get()
        if bound:
            attrs = record.__dict__
            for key, value in bound.items():
                attrs.setdefault(key, value)
        return record


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class _Writer:
    """The thread that formats queued records and writes them out, in batches.

    It waits ``linger`` seconds after the first record of a batch so a burst is written
    with one ``write`` and ``flush`` and the thread takes the GIL a few times a second,
    not once per line (a thread woken per line competes with the event loop)."""

    def __init__(self, stream: IO[str], formatter: JsonFormatter | TextFormatter,
                 linger: float = 0.05) -> None:
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stream = stream
        self._formatter = formatter
        self._linger = linger
        self._thread = threading.Thread(target=self._run, name="redrive-log-writer",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        q = self.queue
        while True:
            batch = [q.get()]
            if isinstance(batch[0], logging.LogRecord | Event):
                time.sleep(self._linger)
            while True:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            lines: list[str] = []
            flushes: list[_Flush] = []
            stop = False
            for item in batch:
                if isinstance(item, logging.LogRecord | Event):
                    lines.append(self._format(item))
                elif isinstance(item, _Flush):
                    flushes.append(item)
                else:
                    stop = True
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):
                    pass  # stdout is gone: nowhere left to say so
            for f in flushes:
                f.done.set()
            if stop:
                return

    def _format(self, item: logging.LogRecord | Event) -> str:
        try:
            if isinstance(item, Event):
                return self._formatter.format_event(item)
            return self._formatter.format(item)
        except Exception as exc:
            return json.dumps({"level": "error", "logger": "redrive.logs",
                               "message": "log record could not be formatted",
                               "error": repr(exc),
                               "logger_name": item.logger if isinstance(item, Event)
                               else item.name})

    def flush(self, timeout: float = 5.0) -> None:
        marker = _Flush()
        self.queue.put(marker)
        marker.done.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.queue.put(_STOP)
        self._thread.join(timeout)


_writer: _Writer | None = None
_handler: _QueueHandler | None = None


def configure(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Install the queue handler on the root logger and start the thread that writes to
    ``stream`` (stdout). Safe to call more than once."""
    global _writer, _handler  # noqa: PLW0603 - one writer per process
    shutdown()
    # Fields our formatters never write: not worth computing for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    _writer = _Writer(stream or sys.stdout,
                      JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    _handler = _QueueHandler(_writer.queue)
    root.addHandler(_handler)
    root.setLevel(level.upper())
    # aiokafka logs every failed reconnect at ERROR with a traceback; our own code reports
    # Kafka health once per state change, so keep the library to real warnings.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


def shutdown() -> None:
    """Write every queued record and stop the writer thread (safe to call twice)."""
    global _writer
    if _writer is not None:
        writer, _writer = _writer, None
        writer.stop()


def flush() -> None:
    """Block until every record logged so far is written (tests, and before exiting)."""
    if _writer is not None:
        _writer.flush()


atexit.register(shutdown)


def event(logger: logging.Logger, level: int, message: str, fields: Mapping[str, Any]) -> None:
    """Log one line with ``fields``, as ``logger.log(level, message, extra=fields)`` would
    write it, for lines logged once per request on the event loop (a capture).

    When logging is configured by :func:`configure` alone (its handler the root's only
    one, the logger adding none of its own), the line goes straight to the writer thread:
    no LogRecord, no search for the caller's frame, no handler chain, which is most of
    what a log call costs the loop. Otherwise (tests capturing logs, another handler
    added) it is an ordinary log call. The caller checks ``logger.isEnabledFor(level)``.
    """
    writer = _writer
    handlers = logging.root.handlers
    if writer is not None and len(handlers) == 1 and handlers[0] is _handler \
            and logger.propagate and not logger.handlers and not logger.filters:
        writer.queue.put(Event(time.time(), level, logger.name, message, fields,
                               _CONTEXT.get()))
    else:
        logger.log(level, message, extra=dict(fields))


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line emitted inside the ``with`` block (this task only)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **fields})
    try:
        yield
    finally:
        _CONTEXT.reset(token)
