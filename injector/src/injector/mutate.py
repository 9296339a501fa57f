"""The admission decision: which pods get the sidecar, and the JSONPatch that adds it.

Pure: an AdmissionReview request and the template in, a :class:`Decision` out. The webhook
(``app.py``) only moves JSON. Which pods the API server sends at all is the webhook
configuration's business (namespace and object selectors in the chart); this module
re-checks what it can see, so a misconfigured selector never injects ``kube-system``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from injector import naming
from injector import options as podopts
from injector.template import SIDECAR_NAME, Template

INJECT_LABEL = "redrive.io/inject"
SIDECAR_LABEL = "redrive.io/sidecar"
"""Label on injected pods; the chart's PodMonitor selects it."""
STATUS_ANNOTATION = "redrive.io/status"
INTERCEPT_NAME = "redrive-intercept"
SKIPPED_NAMESPACES = frozenset({"kube-system"})
DEFAULT_GRACE_SECONDS = 30
SIDECAR_UID = 10001


@dataclass(frozen=True)
class Decision:
    allowed: bool
    outcome: str
    """``injected``, ``skipped`` or ``refused`` (the metric label)."""
    reason: str = ""
    patch: list[dict[str, Any]] = field(default_factory=list)


def _escape(key: str) -> str:
    """A JSON Pointer token (RFC 6901): ``~`` and ``/`` escaped."""
    return key.replace("~", "~0").replace("/", "~1")


def skip_reason(namespace: str, pod: dict[str, Any], own_namespace: str) -> str | None:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    if namespace in SKIPPED_NAMESPACES:
        return f"namespace {namespace} is never injected"
    if own_namespace and namespace == own_namespace:
        return "the injector's own namespace is never injected"
    if (meta.get("labels") or {}).get(INJECT_LABEL) == "disabled":
        return f"the pod opts out ({INJECT_LABEL}: disabled)"
    if spec.get("hostNetwork"):
        return "host-network pods share the node's ports and are never injected"
    names = {c.get("name") for c in (spec.get("containers") or [])
             + (spec.get("initContainers") or [])}
    if SIDECAR_NAME in names or (meta.get("annotations") or {}).get(STATUS_ANNOTATION):
        return "the pod already has the sidecar"
    return None


def review(request: dict[str, Any], template: Template, own_namespace: str,
           default_intercept: str = "none") -> Decision:
    """Decide on one AdmissionReview ``request`` (admission.k8s.io/v1); pods without the
    ``redrive.io/intercept`` annotation get ``default_intercept``."""
    if (request.get("kind") or {}).get("kind") != "Pod" or request.get("operation") not in (
            None, "CREATE"):
        return Decision(True, "skipped", "not a pod being created")
    pod = request.get("object") or {}
    namespace = request.get("namespace") or (pod.get("metadata") or {}).get("namespace") or ""
    reason = skip_reason(namespace, pod, own_namespace)
    if reason:
        return Decision(True, "skipped", reason)
    try:
        options = podopts.parse(pod, reserved_ports=(template.sidecar_port,
                                                         template.admin_port),
                                default_intercept=default_intercept)
    except podopts.AnnotationError as exc:
        return Decision(False, "refused", f"Redrive cannot inject this pod: {exc}")
    return Decision(True, "injected", "", build_patch(pod, namespace, options, template))


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    env = container.setdefault("env", [])
    for entry in env:
        if entry.get("name") == name:
            entry.clear()
            entry.update({"name": name, "value": value})
            return
    env.append({"name": name, "value": value})


def _env_value(container: dict[str, Any], name: str) -> str | None:
    for entry in container.get("env") or []:
        if entry.get("name") == name:
            value = entry.get("value")
            return str(value) if value is not None else None
    return None


def probe_paths(pod: dict[str, Any]) -> list[str]:
    """The app containers' httpGet probe paths: with interception the kubelet's probes come
    through the sidecar, and a failing probe must never become a captured request."""
    paths: list[str] = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            path = ((container.get(probe) or {}).get("httpGet") or {}).get("path")
            if path and path not in paths:
                paths.append(str(path))
    return paths


def sidecar_for(pod: dict[str, Any], namespace: str, options: podopts.PodOptions,
                template: Template) -> dict[str, Any]:
    """The template's sidecar container adapted to this pod."""
    container = template.sidecar()
    service = naming.service_name(pod)
    topic = options.topic or naming.topic_for(namespace, service)
    _set_env(container, "REDRIVE_TOPIC", topic)
    _set_env(container, "REDRIVE_DLQ_TOPIC", f"{topic}.dlq")
    _set_env(container, "REDRIVE_STATUS_TOPIC", f"{topic}.status")
    _set_env(container, "REDRIVE_UPSTREAM_URL", f"http://127.0.0.1:{options.upstream_port}")
    if options.capture_statuses:
        _set_env(container, "REDRIVE_CAPTURE_STATUSES", options.capture_statuses)
    if options.failure_response:
        _set_env(container, "REDRIVE_FAILURE_RESPONSE", options.failure_response)
    excluded = [p for p in (_env_value(container, "REDRIVE_CAPTURE_EXCLUDE_PATHS") or "")
                .split(",") if p]
    excluded += [p for p in probe_paths(pod) if p not in excluded]
    _set_env(container, "REDRIVE_CAPTURE_EXCLUDE_PATHS", ",".join(excluded))
    # The status API of this service's own worker: a release named like the service, in
    # the service's namespace (the template's port, else the worker's default 9080).
    status_url = _env_value(container, "REDRIVE_STATUS_URL") or ""
    port = status_url.rsplit(":", 1)[-1].rstrip("/") if status_url.count(":") == 2 else "9080"
    _set_env(container, "REDRIVE_STATUS_URL",
             f"http://{naming.release_fullname(service)}-retry-worker-status."
             f"{namespace}.svc:{port}")
    return container


def intercept_container(options: podopts.PodOptions, template: Template) -> dict[str, Any]:
    """The init container that redirects the app's port to the sidecar (NET_ADMIN, as root,
    like istio-init); it exits once the rules are in place."""
    sidecar = template.container
    return {
        "name": INTERCEPT_NAME,
        "image": sidecar["image"],
        "imagePullPolicy": sidecar.get("imagePullPolicy", "IfNotPresent"),
        "command": ["redrive-intercept", "--ports", str(options.upstream_port),
                    "--to-port", str(template.sidecar_port)],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        "securityContext": {
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def grace_period(pod: dict[str, Any], template: Template) -> int:
    """The app's own grace period, then the sidecar's preStop pause, drain and flush: a
    native sidecar is stopped only after the app containers have exited."""
    app = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    app = DEFAULT_GRACE_SECONDS if app is None else int(app)
    return app + template.pre_stop_sleep_seconds + math.ceil(template.drain_timeout_seconds) + 10


def build_patch(pod: dict[str, Any], namespace: str, options: podopts.PodOptions,
                template: Template) -> list[dict[str, Any]]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    ops: list[dict[str, Any]] = []

    def add_map_entry(parent: str, existing: Any, key: str, value: str) -> None:
        if existing is None:
            ops.append({"op": "add", "path": parent, "value": {key: value}})
        else:
            ops.append({"op": "add", "path": f"{parent}/{_escape(key)}", "value": value})

    def add_items(path: str, existing: Any, items: list[dict[str, Any]], *,
                  front: bool) -> None:
        if not items:
            return
        if not existing:
            ops.append({"op": "add", "path": path, "value": items})
        elif front:
            for item in reversed(items):
                ops.append({"op": "add", "path": f"{path}/0", "value": item})
        else:
            for item in items:
                ops.append({"op": "add", "path": f"{path}/-", "value": item})

    add_map_entry("/metadata/labels", meta.get("labels"), SIDECAR_LABEL, "true")
    add_map_entry("/metadata/annotations", meta.get("annotations"), STATUS_ANNOTATION,
                  "injected")
    sidecar = sidecar_for(pod, namespace, options, template)
    init: list[dict[str, Any]] = []
    if options.intercept == "iptables":
        init.append(intercept_container(options, template))
    if template.native:
        init.append(sidecar)
    # First, so the rules are in place and the proxy is up before the app's own init
    # containers run and before the app starts.
    add_items("/spec/initContainers", spec.get("initContainers"), init, front=True)
    if not template.native:
        add_items("/spec/containers", spec.get("containers"), [sidecar], front=False)
    taken = {v.get("name") for v in spec.get("volumes") or []}
    add_items("/spec/volumes", spec.get("volumes"),
              [dict(v) for v in template.volumes if v.get("name") not in taken], front=False)
    ops.append({"op": "add", "path": "/spec/terminationGracePeriodSeconds",
                "value": grace_period(pod, template)})
    return ops
