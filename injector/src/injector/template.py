"""The injection template: what the injector adds to a pod, as the chart renders it.

The chart renders the sidecar container and its volumes with the same named templates its
own Deployments use (``redrive.injector.template`` in ``_helpers.tpl``) into a ConfigMap
the injector mounts (``REDRIVE_INJECTOR_TEMPLATE_FILE``), as Istio does with its injection
template. ``default-template.json`` in this package is that ConfigMap rendered with the
chart's defaults (release ``redrive`` in namespace ``redrive``); a test keeps it equal to
the chart's output, so neither can drift from the other.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SIDECAR_NAME = "redrive-sidecar"


class TemplateError(ValueError):
    """The template file is missing, not JSON, or lacks the sidecar container."""


@dataclass(frozen=True)
class Template:
    native: bool
    """Put the sidecar in ``initContainers`` with ``restartPolicy: Always`` (a native
    sidecar, Kubernetes 1.29 and later); else append it to ``containers``."""
    sidecar_port: int
    admin_port: int
    pre_stop_sleep_seconds: int
    drain_timeout_seconds: float
    container: dict[str, Any] = field(repr=False)
    volumes: tuple[dict[str, Any], ...] = field(repr=False)

    def sidecar(self) -> dict[str, Any]:
        """A fresh copy of the sidecar container (callers adapt it per pod)."""
        return copy.deepcopy(self.container)

    def with_native(self, native: bool) -> Template:
        """The same template placed as a native sidecar or as a classic container."""
        container = self.sidecar()
        if native:
            container["restartPolicy"] = "Always"
        else:
            container.pop("restartPolicy", None)
        return Template(native, self.sidecar_port, self.admin_port,
                        self.pre_stop_sleep_seconds, self.drain_timeout_seconds, container,
                        self.volumes)

    @classmethod
    def parse(cls, text: str) -> Template:
        try:
            data = json.loads(text)
            containers = [c for c in data["containers"] if c.get("name") == SIDECAR_NAME]
            if len(containers) != 1:
                raise TemplateError(f"needs exactly one container named {SIDECAR_NAME}")
            return cls(native=bool(data["native"]), sidecar_port=int(data["sidecarPort"]),
                       admin_port=int(data["adminPort"]),
                       pre_stop_sleep_seconds=int(data["preStopSleepSeconds"]),
                       drain_timeout_seconds=float(data["drainTimeoutSeconds"]),
                       container=containers[0],
                       volumes=tuple(data.get("volumes") or ()))
        except TemplateError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TemplateError(f"not an injection template: {exc!r}") from None

    @classmethod
    def load(cls, path: Path | None) -> Template:
        """The template at ``path``, or the packaged default when ``path`` is None."""
        if path is None:
            return cls.parse(default_template_text())
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"cannot read {path}: {exc.strerror}") from None
        return cls.parse(text)


def default_template_text() -> str:
    return resources.files("injector").joinpath("default-template.json").read_text("utf-8")
