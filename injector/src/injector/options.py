"""Pod annotations that tune the injected sidecar, parsed and checked in one place.

Every problem is collected, so a refused pod's message names each bad annotation and what
it accepts, and the user fixes them in one round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redrive.settings import valid_topic

UPSTREAM_PORT = "redrive.io/upstream-port"
INTERCEPT = "redrive.io/intercept"
CAPTURE_STATUSES = "redrive.io/capture-statuses"
FAILURE_RESPONSE = "redrive.io/failure-response"
TOPIC = "redrive.io/topic"

INTERCEPT_MODES = ("none", "iptables")
FAILURE_RESPONSES = ("reject", "accept")


class AnnotationError(ValueError):
    """One or more annotations are invalid; ``str()`` names each and what it accepts."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PodOptions:
    upstream_port: int
    intercept: str = "none"
    capture_statuses: str | None = None
    failure_response: str | None = None
    topic: str | None = None


def first_container_port(pod: dict[str, Any]) -> int | None:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("containerPort"):
                return int(port["containerPort"])
    return None


def parse(pod: dict[str, Any], *, reserved_ports: tuple[int, ...],
          default_intercept: str = "none") -> PodOptions:
    """The options of ``pod``; raises :class:`AnnotationError` naming every bad annotation."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    problems: list[str] = []

    def bad(name: str, accepts: str) -> None:
        problems.append(f"{name}: {annotations[name]!r} is invalid; it accepts {accepts}")

    port: int | None = first_container_port(pod)
    if UPSTREAM_PORT in annotations:
        raw = str(annotations[UPSTREAM_PORT]).strip()
        if raw.isdigit() and 1 <= int(raw) <= 65535 and int(raw) not in reserved_ports:
            port = int(raw)
        else:
            bad(UPSTREAM_PORT, "the app's port, a number from 1 to 65535 other than the "
                               f"sidecar's own ports {', '.join(map(str, reserved_ports))}")
            port = None
    elif port is None:
        problems.append(f"{UPSTREAM_PORT}: the pod declares no containerPort; set this "
                        "annotation to the app's port (1-65535)")
    elif port in reserved_ports:
        problems.append(f"{UPSTREAM_PORT}: the app's first containerPort {port} is one of the "
                        "sidecar's own ports; set this annotation to the port the app serves")

    intercept = str(annotations.get(INTERCEPT, default_intercept)).strip()
    if intercept not in INTERCEPT_MODES:
        bad(INTERCEPT, " or ".join(INTERCEPT_MODES))

    statuses = annotations.get(CAPTURE_STATUSES)
    if statuses is not None:
        items = [s.strip() for s in str(statuses).split(",")]
        if not items or not all(s.isdigit() and 100 <= int(s) <= 599 for s in items):
            bad(CAPTURE_STATUSES, "a comma-separated list of HTTP statuses, e.g. 502,503,504")
        statuses = ",".join(items)

    failure = annotations.get(FAILURE_RESPONSE)
    if failure is not None and str(failure).strip() not in FAILURE_RESPONSES:
        bad(FAILURE_RESPONSE, " or ".join(FAILURE_RESPONSES))

    topic = annotations.get(TOPIC)
    if topic is not None and not valid_topic(str(topic).strip()):
        bad(TOPIC, "a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)")

    if problems:
        raise AnnotationError(problems)
    assert port is not None
    return PodOptions(upstream_port=port, intercept=intercept,
                      capture_statuses=statuses,
                      failure_response=str(failure).strip() if failure is not None else None,
                      topic=str(topic).strip() if topic is not None else None)
