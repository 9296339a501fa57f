"""The sidecar templates work from a user's own chart, with redrive as a dependency."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chartlib import (
    CHART,
    SIDECAR_NAME,
    container,
    env_value,
    helm,
    validate_any,
)

PARENT_CHART = """\
apiVersion: v2
name: shop
version: 1.0.0
appVersion: "9.9.9"
dependencies:
  - name: redrive
    version: 0.1.0
    repository: file://../redrive
"""

PARENT_VALUES = """\
redrive:
  backend:
    enabled: false
  retryWorker:
    targetUrl: http://shop.shop.svc:80
  kafka:
    strimzi:
      enabled: true
  sidecar:
    upstreamUrl: http://127.0.0.1:8000
"""

# The snippet from charts/redrive/README.md, "Adding the sidecar to your own Deployment".
PARENT_DEPLOYMENT = """\
{{- $redrive := dict "root" $ "values" .Values.redrive }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  labels: {app: shop}
spec:
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      terminationGracePeriodSeconds: {{
        include "redrive.sidecar.terminationGracePeriodSeconds" $redrive }}
      securityContext:
        fsGroup: 10001
      {{- if include "redrive.sidecar.native" $redrive }}
      initContainers:
        {{- include "redrive.sidecar.container" $redrive | nindent 8 }}
      {{- end }}
      containers:
        - name: app
          image: shop:1.0
          ports:
            - containerPort: 8000
        {{- if not (include "redrive.sidecar.native" $redrive) }}
        {{- include "redrive.sidecar.container" $redrive | nindent 8 }}
        {{- end }}
      volumes:
        {{- include "redrive.sidecar.volumes" $redrive | nindent 8 }}
"""


@pytest.fixture(scope="module")
def parent_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("charts")
    shop = root / "shop"
    (shop / "templates").mkdir(parents=True)
    (shop / "Chart.yaml").write_text(PARENT_CHART)
    (shop / "values.yaml").write_text(PARENT_VALUES)
    (shop / "templates" / "deployment.yaml").write_text(PARENT_DEPLOYMENT)
    shutil.copytree(CHART, shop / "charts" / "redrive")
    return shop


def render_parent(chart: Path, kube_version: str) -> list[dict[str, Any]]:
    out = helm("template", "shop", str(chart), "--namespace", "shop",
               "--kube-version", kube_version, "--api-versions", "kafka.strimzi.io/v1")
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize(("kube_version", "native"), [("1.33.0", True), ("1.28.0", False)])
def test_a_users_deployment_gets_the_sidecar(parent_chart: Path, kube_version: str,
                                             native: bool) -> None:
    docs = render_parent(parent_chart, kube_version)
    for doc in docs:
        validate_any(doc, kube_version)
    [shop] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "shop"]
    pod = shop["spec"]["template"]["spec"]
    sidecar = container(pod, SIDECAR_NAME)
    assert (sidecar in pod.get("initContainers", [])) == native
    assert env_value(sidecar, "REDRIVE_UPSTREAM_URL") == "http://127.0.0.1:8000"
    # The image tag is redrive's appVersion, not the parent chart's.
    assert sidecar["image"] == "ghcr.io/redrive/sidecar:0.1.0"
    # Names come from the subchart: the bootstrap is the Kafka the subchart renders.
    [kafka] = [d for d in docs if d["kind"] == "Kafka"]
    assert kafka["metadata"]["name"] == "shop-redrive"
    assert env_value(sidecar, "REDRIVE_KAFKA_BOOTSTRAP_SERVERS") == \
        "shop-redrive-kafka-bootstrap.shop.svc:9092"
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in sidecar["volumeMounts"]} <= volumes
    assert "redrive-spool" in volumes
    worker = next(d for d in docs if d["metadata"]["name"] == "shop-redrive-retry-worker"
                  and d["kind"] == "Deployment")
    assert env_value(worker["spec"]["template"]["spec"]["containers"][0],
                     "REDRIVE_TARGET_URL") == "http://shop.shop.svc:80"


STATEFULSET = """\
{{- $redrive := dict "root" $ "values" .Values.redrive "spoolVolume" false }}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ledger
spec:
  serviceName: ledger
  selector:
    matchLabels: {app: ledger}
  template:
    metadata:
      labels: {app: ledger}
    spec:
      containers:
        - name: app
          image: ledger:1.0
        {{- include "redrive.sidecar.container" $redrive | nindent 8 }}
      volumes:
        {{- include "redrive.sidecar.volumes" $redrive | nindent 8 }}
  volumeClaimTemplates:
    - metadata:
        name: redrive-spool
      spec:
        accessModes: [ReadWriteOnce]
        resources:
          requests:
            storage: 1Gi
"""


def test_a_statefulset_brings_its_own_spool_claim_per_pod(parent_chart: Path) -> None:
    (parent_chart / "templates" / "statefulset.yaml").write_text(STATEFULSET)
    try:
        docs = render_parent(parent_chart, "1.28.0")
    finally:
        (parent_chart / "templates" / "statefulset.yaml").unlink()
    [ledger] = [d for d in docs if d["kind"] == "StatefulSet"]
    validate_any(ledger, "1.28.0")
    pod = ledger["spec"]["template"]["spec"]
    assert "redrive-spool" not in {v["name"] for v in pod["volumes"]}
    mounts = {m["name"] for m in container(pod, SIDECAR_NAME)["volumeMounts"]}
    assert "redrive-spool" in mounts
