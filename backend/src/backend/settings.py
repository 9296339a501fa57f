"""The backend's settings, parsed from environment variables in one place.

The backend stands in for a user's application, so it keeps the original demo's plain
``PORT`` (and ``HOST``) rather than the ``REDRIVE_`` prefix; its own extras use
``BACKEND_``. :meth:`Settings.from_env` reports every invalid variable at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from backend.faults import NO_FAULT, FaultSpec, FaultSpecError, parse_fault_env

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """One or more environment variables are invalid; ``problems`` lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """Everything ``python -m backend`` needs to start."""

    host: str = "0.0.0.0"
    """``HOST``: address to bind; all interfaces by default, as a pod needs."""
    port: int = 3000
    """``PORT``: the application port, 3000 as in the original Express demo."""
    control_port: int | None = None
    """``BACKEND_CONTROL_PORT``: an extra listener serving only ``/_faults`` and
    ``/_stats``, which stays up while the main port refuses connections. Unset: none."""
    access_log: bool = False
    """``BACKEND_ACCESS_LOG``: one JSON line per request; off so the demo output stays
    about the sidecar and worker."""
    initial_fault: FaultSpec = field(default=NO_FAULT)
    """``BACKEND_FAULT``: the fault in force at start (``none``, ``status:503``, ...)."""
    shutdown_timeout_seconds: float = 3.0
    """How long in-flight requests may take to finish after SIGTERM; short, since this
    is a demo and a slow fault would otherwise hold the pod for its whole delay."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Parse ``environ``; raises :class:`SettingsError` naming every bad variable."""
        problems: list[str] = []

        def port(name: str, default: int | None) -> int | None:
            raw = environ.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not an integer port number")
                return default
            if not 1 <= value <= 65535:
                problems.append(f"{name}={value} is out of range (1-65535)")
                return default
            return value

        main_port = port("PORT", 3000)
        control_port = port("BACKEND_CONTROL_PORT", None)
        if control_port is not None and control_port == main_port:
            problems.append(f"BACKEND_CONTROL_PORT={control_port} must differ from PORT")

        host = environ.get("HOST", "0.0.0.0").strip()
        if not host:
            problems.append("HOST is empty (use 0.0.0.0 for all interfaces)")

        raw_log = environ.get("BACKEND_ACCESS_LOG", "").strip().lower()
        if raw_log not in _TRUE | _FALSE:
            problems.append(f"BACKEND_ACCESS_LOG={raw_log!r} is not a boolean (1/0, true/false)")

        fault = NO_FAULT
        try:
            fault = parse_fault_env(environ.get("BACKEND_FAULT", ""),
                                    refuse_needs_duration=control_port is None)
        except FaultSpecError as exc:
            problems.append(str(exc))

        if problems:
            raise SettingsError(problems)
        assert main_port is not None
        return cls(host=host, port=main_port, control_port=control_port,
                   access_log=raw_log in _TRUE, initial_fault=fault)
