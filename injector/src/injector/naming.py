"""Per-service Kafka names, so two services on one Kafka never see each other's records.

A service is named by its pod's ``app.kubernetes.io/name`` (or ``app``) label, else by the
workload that made the pod (a Deployment's ReplicaSet name without its hash), else the
pod's own name. Its topic is ``redrive.<namespace>.<service>``, the name the chart gives
a release called like the service in the service's namespace (``redrive.kafka.topic`` in
``_helpers.tpl``), whose retry worker then consumes exactly this service's captures.
"""

from __future__ import annotations

import re
from typing import Any

_INVALID = re.compile(r"[^a-zA-Z0-9._-]+")
TOPIC_PREFIX = "redrive"


def service_name(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    for key in ("app.kubernetes.io/name", "app", "k8s-app"):
        if labels.get(key):
            return str(labels[key])
    generate = str(meta.get("generateName") or "").rstrip("-")
    if generate:
        if labels.get("pod-template-hash"):
            generate = generate.removesuffix(f"-{labels['pod-template-hash']}")
        return generate
    return str(meta.get("name") or "app")


def topic_for(namespace: str, service: str) -> str:
    """``redrive.<namespace>.<service>``, cleaned to Kafka's alphabet and 249 characters."""
    name = _INVALID.sub("-", f"{TOPIC_PREFIX}.{namespace}.{service}")
    # The services add ".retry", ".status", ".dlq" and the retry tiers ".retry.<delay>"
    # (e.g. ".retry.3600s"): leave room for a long tier.
    return name[: 249 - len(".retry.86400000ms")]


def release_fullname(service: str) -> str:
    """The chart's fullname for a release named like the service (``redrive.fullname``)."""
    name = service if "redrive" in service else f"{service}-redrive"
    return name[:63].rstrip("-")
