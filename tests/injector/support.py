"""AdmissionReview factories and the chart's injection template, for the injector tests."""

from __future__ import annotations

import copy
import functools
import json
import uuid
from typing import Any

import yaml

from injector.template import Template
from tests.chart.chartlib import CHART, helm

INJECTOR_NAMESPACE = "redrive"


@functools.cache
def chart_docs(kube_version: str = "1.33.0", *sets: str) -> tuple[dict[str, Any], ...]:
    args = ["template", "redrive", str(CHART), "--namespace", INJECTOR_NAMESPACE,
            "--kube-version", kube_version, "--set", "injector.enabled=true"]
    for item in sets:
        args += ["--set", item]
    return tuple(d for d in yaml.safe_load_all(helm(*args)) if d)


def chart_template_text(kube_version: str = "1.33.0", *sets: str) -> str:
    [config] = [d for d in chart_docs(kube_version, *sets)
                if d["kind"] == "ConfigMap"
                and d["metadata"]["name"] == "redrive-injector-template"]
    return str(config["data"]["template.json"])


def chart_template(kube_version: str = "1.33.0", *sets: str) -> Template:
    return Template.parse(chart_template_text(kube_version, *sets))


def deployment_pod(name: str = "web", *, image: str = "nginx:1.27", port: int | None = 80,
                   labels: dict[str, str] | None = None,
                   annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The pod a plain third-party Deployment's ReplicaSet creates (no name yet)."""
    container: dict[str, Any] = {"name": name, "image": image}
    if port is not None:
        container["ports"] = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": port}}
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": f"{name}-7d4b9c8f6d-",
                     "labels": {"app": name, "pod-template-hash": "7d4b9c8f6d",
                                "redrive.io/inject": "enabled", **(labels or {})}},
        "spec": {"containers": [container]},
    }
    if annotations:
        pod["metadata"]["annotations"] = dict(annotations)
    return pod


def admission_request(pod: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE", "object": copy.deepcopy(pod),
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "dryRun": False}


def admission_review(pod: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": admission_request(pod, namespace)}


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
