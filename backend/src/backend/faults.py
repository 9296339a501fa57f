"""Fault injection as pure data: the fault spec, its strict validation, and the state machine.

Nothing here does I/O or reads the real time: :class:`FaultState` takes a clock (a
function returning monotonic seconds), so tests drive expiry with a fake clock. The
application (``backend.app``) asks the state, per request, whether to inject a fault; the
server (``backend.server``) closes and reopens the listening socket for ``refuse``.

Modes:

``none``
    Serve normally.
``status``
    Answer ``status`` (default 503) with a JSON error, optionally with ``Retry-After``.
``slow``
    Wait ``delay_seconds``, then serve normally (the work still happens, as with a slow
    real service whose client has given up).
``reset``
    Read the request, then drop the connection without any response (TCP RST).
``refuse``
    Stop listening on the main port so connections are refused, for ``for_seconds`` or,
    when set through the separate control port, until cleared there.

``count`` limits a fault to the next N matching requests and ``for_seconds`` to a
duration; whichever ends first returns the state to ``none``.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Clock = Callable[[], float]
"""Monotonic seconds, e.g. ``time.monotonic`` or ``loop.time``."""

DEFAULT_STATUS = 503
DEFAULT_PATH_PREFIX = "/api/"
MAX_DELAY_SECONDS = 3600.0
"""Longest ``slow`` delay accepted: longer than any sensible client timeout."""


class FaultMode(enum.StrEnum):
    """What the backend does to a matching request."""

    NONE = "none"
    STATUS = "status"
    SLOW = "slow"
    RESET = "reset"
    REFUSE = "refuse"


# Which optional fields make sense with which mode; anything else is a client mistake.
_ALLOWED_FIELDS: Mapping[FaultMode, frozenset[str]] = {
    FaultMode.NONE: frozenset(),
    FaultMode.STATUS: frozenset({"status", "retry_after", "count", "for_seconds", "path_prefix"}),
    FaultMode.SLOW: frozenset({"delay_seconds", "count", "for_seconds", "path_prefix"}),
    FaultMode.RESET: frozenset({"count", "for_seconds", "path_prefix"}),
    FaultMode.REFUSE: frozenset({"for_seconds"}),
}
_ALL_FIELDS = frozenset({"mode"}).union(*_ALLOWED_FIELDS.values())


class FaultSpecError(ValueError):
    """A fault request or ``BACKEND_FAULT`` value that is not valid; names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class FaultSpec:
    """One fault, as asked for. Use :func:`parse_fault_spec` to build it from JSON."""

    mode: FaultMode = FaultMode.NONE
    status: int = DEFAULT_STATUS
    """HTTP status sent in ``status`` mode."""
    retry_after: int | None = None
    """Seconds to send as ``Retry-After`` in ``status`` mode; ``None`` sends no header."""
    delay_seconds: float = 0.0
    """How long ``slow`` mode waits before serving."""
    count: int | None = None
    """Fault only this many matching requests, then recover; ``None`` means no limit."""
    for_seconds: float | None = None
    """Recover this many seconds after the fault was set; ``None`` means no limit."""
    path_prefix: str = DEFAULT_PATH_PREFIX
    """Only requests whose path starts with this are faulted."""

    def matches(self, path: str) -> bool:
        """Whether a request for ``path`` is subject to this fault."""
        return self.mode is not FaultMode.NONE and path.startswith(self.path_prefix)

    def to_json(self) -> dict[str, Any]:
        """The fields that apply to this mode, as JSON-ready data."""
        out: dict[str, Any] = {"mode": self.mode.value}
        allowed = _ALLOWED_FIELDS[self.mode]
        if "status" in allowed:
            out["status"] = self.status
            out["retry_after"] = self.retry_after
        if "delay_seconds" in allowed:
            out["delay_seconds"] = self.delay_seconds
        if "count" in allowed:
            out["count"] = self.count
        if "for_seconds" in allowed:
            out["for_seconds"] = self.for_seconds
        if "path_prefix" in allowed:
            out["path_prefix"] = self.path_prefix
        return out


NO_FAULT = FaultSpec()


def _number(data: Mapping[str, Any], field: str, *, minimum: float, maximum: float = math.inf,
            exclusive_minimum: bool = True) -> float:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultSpecError(field, f"must be a number, got {json.dumps(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise FaultSpecError(field, "must be a finite number")
    too_small = value <= minimum if exclusive_minimum else value < minimum
    if too_small or value > maximum:
        low = f"> {minimum:g}" if exclusive_minimum else f">= {minimum:g}"
        high = "" if math.isinf(maximum) else f" and <= {maximum:g}"
        raise FaultSpecError(field, f"must be {low}{high}, got {value:g}")
    return value


def _integer(data: Mapping[str, Any], field: str, *, minimum: int, maximum: int) -> int:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultSpecError(field, f"must be an integer, got {json.dumps(value)}")
    if not minimum <= value <= maximum:
        raise FaultSpecError(field, f"must be between {minimum} and {maximum}, got {value}")
    return value


def parse_fault_spec(data: object, *, refuse_needs_duration: bool = True) -> FaultSpec:
    """Validate decoded JSON (the ``PUT /_faults`` body) into a :class:`FaultSpec`.

    Strict: unknown fields, fields that do not apply to the mode, wrong types and
    out-of-range values all raise :class:`FaultSpecError` naming the field.
    ``refuse_needs_duration`` is false only where the control API survives a refusing
    main port (the separate control port), so an open-ended refuse can still be undone.
    """
    if not isinstance(data, dict):
        raise FaultSpecError("body", "must be a JSON object such as {\"mode\": \"none\"}")
    for key in data:
        if key not in _ALL_FIELDS:
            raise FaultSpecError(key, f"unknown field; expected some of {sorted(_ALL_FIELDS)}")
    if "mode" not in data:
        raise FaultSpecError("mode", "is required")
    raw_mode = data["mode"]
    try:
        mode = FaultMode(raw_mode) if isinstance(raw_mode, str) else None
    except ValueError:
        mode = None
    if mode is None:
        choices = ", ".join(m.value for m in FaultMode)
        raise FaultSpecError("mode", f"must be one of {choices}, got {json.dumps(raw_mode)}")
    allowed = _ALLOWED_FIELDS[mode]
    for key in data:
        if key != "mode" and key not in allowed:
            raise FaultSpecError(key, f"does not apply to mode {mode.value}")

    fields: dict[str, Any] = {"mode": mode}
    if "status" in data:
        fields["status"] = _integer(data, "status", minimum=200, maximum=599)
    if "retry_after" in data:
        fields["retry_after"] = _integer(data, "retry_after", minimum=0, maximum=86_400)
    if mode is FaultMode.SLOW:
        if "delay_seconds" not in data:
            raise FaultSpecError("delay_seconds", "is required for mode slow")
        fields["delay_seconds"] = _number(data, "delay_seconds", minimum=0.0,
                                          maximum=MAX_DELAY_SECONDS)
    if "count" in data:
        fields["count"] = _integer(data, "count", minimum=1, maximum=1_000_000_000)
    if mode is FaultMode.REFUSE and refuse_needs_duration and "for_seconds" not in data:
        # Refusing also takes the control API on the main port away, so it must end itself.
        raise FaultSpecError("for_seconds", "is required for mode refuse unless set "
                                            "through BACKEND_CONTROL_PORT")
    if "for_seconds" in data:
        fields["for_seconds"] = _number(data, "for_seconds", minimum=0.0)
    if "path_prefix" in data:
        prefix = data["path_prefix"]
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise FaultSpecError("path_prefix", f"must be a string starting with '/', "
                                                f"got {json.dumps(prefix)}")
        fields["path_prefix"] = prefix
    return FaultSpec(**fields)


def parse_fault_env(text: str, name: str = "BACKEND_FAULT", *,
                    refuse_needs_duration: bool = True) -> FaultSpec:
    """Parse the initial fault from the environment.

    Accepts ``none``, ``reset``, ``status`` (503), ``status:CODE``, ``slow:SECONDS``,
    ``refuse:SECONDS`` (plain ``refuse`` too when ``refuse_needs_duration`` is false),
    or a JSON object as for ``PUT /_faults``. Empty means ``none``. Raises
    :class:`FaultSpecError` with ``field`` set to ``name``.
    """
    text = text.strip()
    try:
        if not text:
            return NO_FAULT
        if text.startswith("{"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise FaultSpecError("body", f"is not valid JSON ({exc})") from None
            return parse_fault_spec(data, refuse_needs_duration=refuse_needs_duration)
        mode, _, arg = text.partition(":")
        mode = mode.strip().lower()
        arg = arg.strip()
        body: dict[str, Any] = {"mode": mode}
        if arg:
            field = {"status": "status", "slow": "delay_seconds",
                     "refuse": "for_seconds"}.get(mode)
            if field is None:
                raise FaultSpecError("mode", f"{mode!r} takes no argument")
            try:
                body[field] = int(arg) if field == "status" else float(arg)
            except ValueError:
                raise FaultSpecError(field, f"{arg!r} is not a number") from None
        return parse_fault_spec(body, refuse_needs_duration=refuse_needs_duration)
    except FaultSpecError as exc:
        raise FaultSpecError(name, f"{exc} (expected e.g. none, status:503, slow:2.5, "
                                   f"reset, refuse:10, or a JSON object)") from None


class FaultState:
    """The current fault and its automatic recovery, driven by an injected clock.

    Not thread-safe; the backend calls it from its event loop only.
    """

    def __init__(self, clock: Clock, initial: FaultSpec = NO_FAULT) -> None:
        self._clock = clock
        self._spec = NO_FAULT
        self._remaining: int | None = None
        self._expires_at: float | None = None
        self.injected_total = 0
        """Faults injected since start (requests faulted, in any mode)."""
        self.injected_by_mode: dict[str, int] = {m.value: 0 for m in FaultMode
                                                 if m is not FaultMode.NONE}
        self.set(initial)

    def set(self, spec: FaultSpec) -> None:
        """Make ``spec`` the current fault; ``count`` and ``for_seconds`` start now."""
        self._spec = spec
        self._remaining = spec.count
        self._expires_at = (None if spec.for_seconds is None
                            else self._clock() + spec.for_seconds)

    def clear(self) -> None:
        """Back to normal service."""
        self.set(NO_FAULT)

    def current(self) -> FaultSpec:
        """The fault in force now (``NO_FAULT`` once expired or used up)."""
        if self._expires_at is not None and self._clock() >= self._expires_at:
            self.clear()
        return self._spec

    def take(self, path: str) -> FaultSpec | None:
        """The fault to inject into a request for ``path``, consuming one of ``count``.

        Returns ``None`` when the request should be served normally.
        """
        spec = self.current()
        if not spec.matches(path):
            return None
        if self._remaining is not None:
            self._remaining -= 1
            if self._remaining <= 0:
                self.clear()
        self.injected_total += 1
        self.injected_by_mode[spec.mode.value] += 1
        return spec

    def expires_in(self) -> float | None:
        """Seconds until the current fault ends by itself, or ``None`` if it does not."""
        self.current()
        if self._expires_at is None:
            return None
        return max(0.0, self._expires_at - self._clock())

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-ready data, as ``GET /_faults`` answers it."""
        spec = self.current()
        out = spec.to_json()
        out["remaining"] = self._remaining
        expires_in = self.expires_in()
        out["expires_in_seconds"] = None if expires_in is None else round(expires_in, 3)
        out["injected_total"] = self.injected_total
        return out
