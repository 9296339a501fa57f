"""The Grafana dashboard: shipped as a labelled ConfigMap, every query parses (promtool)
and names only metrics the sidecar and the worker actually register."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from retry_worker.metrics import Metrics
from sidecar.metrics import SidecarMetrics
from tests.chart.chartlib import CHART, NAMESPACE, RELEASE, helm

DASHBOARD = CHART / "files" / "dashboard.json"
# Grafana's own variables, replaced by values PromQL accepts before promtool sees them.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "$namespace": ".*"}
METRIC = re.compile(r"\b(redrive_[a-z0-9_]+)")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


def registered_names() -> set[str]:
    registry = CollectorRegistry()
    SidecarMetrics(registry)
    Metrics(registry, ("failed-requests", "failed-requests.retry"))
    return {s.name for m in registry.collect() for s in m.samples}


def test_the_configmap_is_gated_and_labelled() -> None:
    base = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    assert "grafana_dashboard" not in helm(*base)
    out = helm(*base, "--set", "monitoring.grafanaDashboard.enabled=true",
               "--show-only", "templates/dashboard-configmap.yaml")
    (cm,) = [d for d in yaml.safe_load_all(out) if d]
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["redrive.json"]) == dashboard()


def test_the_dashboard_covers_the_issue() -> None:
    text = " ".join(e for _, e in exprs())
    for needle in ("upstream_failures_total", 'captures_total', "spool_bytes",
                   "spool_oldest_record_age_seconds", "replays_total",
                   "dead_letters_total", "histogram_quantile"):
        assert needle in text, needle
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_names_only_registered_metrics() -> None:
    names = registered_names()
    for title, expr in exprs():
        for name in METRIC.findall(expr):
            assert name in names, f"{title}: {name} is not a metric the code defines"


def test_every_query_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make tools` "
                    "(scripts/install-tools.sh installs Debian's prometheus package)")
    rules = []
    for i, (_, raw) in enumerate(exprs()):
        expr = raw
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
